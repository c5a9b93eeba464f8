"""The HTTP/1.1 side: h11 shell, static files, fixed responses."""
