"""First-party WebSocket handler plugins, mounted by ``config.toml``."""
