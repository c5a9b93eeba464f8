"""Configuration: TOML -> frozen dataclasses, every error naming its key path."""
