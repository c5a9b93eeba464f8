"""An :class:`UpgradeRequest` as a plugin's ``check()`` or an authenticator receives it, built
without a socket."""

from __future__ import annotations

from gateway.api import Address, UpgradeRequest
from gateway.config.load import parse
from gateway.mount import Mount

MOUNT = Mount(
    parse({"plugins": {"live": {"path": "/live", "use": "plugins.echo:echo"}}}).plugins[0]
)


CLIENT = Address("10.0.0.7", 5555)


def upgrade_request(*headers: tuple[str, str], remote: Address | None = CLIENT) -> UpgradeRequest:
    return UpgradeRequest(
        id="0123456789ab",
        mount=MOUNT,
        path="/live",
        params={},
        query="",
        headers=(("host", "gateway.test"), *headers),
        origin=None,
        remote=remote,
        subprotocols=(),
    )
