"""The WebSocket engine: wsproto frames under trio-websocket's connection interface."""
