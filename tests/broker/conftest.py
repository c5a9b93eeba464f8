"""The broker's tests run against a real redis-server (tests/support/redis_server.py)."""

from __future__ import annotations

from tests.support.redis_server import redis_server  # noqa: F401  (a fixture)
