"""gateway: a multi-endpoint WebSocket gateway on trio."""
