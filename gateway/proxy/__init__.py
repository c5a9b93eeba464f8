"""The legacy-site reverse proxy: pure header rules and the trio forwarding shell."""
