"""Test plugins for the cluster tests: per-user delivery, and an authenticator that names the
user from the query string (``?user=alice``; tests only: anyone can claim any name)."""

from __future__ import annotations

from gateway.api import Plugin, Session, UpgradeRequest, WebSocketConnection


def user_from_query(request: UpgradeRequest) -> str | None:
    users = request.query_params.get("user")
    return users[0] if users else None


class Users(Plugin[object]):
    """Sends ``ready`` once this process hears the user's channel; then ``TO:TEXT`` sends
    ``TEXT`` to every session of user ``TO``, wherever it is connected."""

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        await self.mount.cluster_count()  # returns once every subscription is in place
        await ws.send_message("ready")
        while True:
            message = await ws.get_message()
            assert isinstance(message, str)
            to, _, text = message.partition(":")
            self.mount.send_to_user(to, f"{session.principal}: {text}")
