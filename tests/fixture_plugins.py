"""Test-only plugins and authenticators, mounted by dotted path ``tests.fixture_plugins:NAME``.

Each one exercises one clause of the handler contract (:mod:`gateway.api`) or one admission
step (authenticator, :meth:`Plugin.check`).  Class plugins record what happened on the
instance, which a test reaches through ``gw.plugin(NAME)``.  The small helpers at the
end are shared by the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel
from trio_websocket import CloseReason, ConnectionClosed

from gateway.api import (
    Accept,
    CloseSession,
    NoOptions,
    Plugin,
    Reject,
    Session,
    UpgradeRequest,
    WebSocketConnection,
)

if TYPE_CHECKING:
    from gateway.mount import Mount

# -- plain handler functions -------------------------------------------------------------------


async def returns(ws: WebSocketConnection, session: Session) -> None:
    """Ends at once: the contract says the client sees 1000."""


async def close_4001(ws: WebSocketConnection, session: Session) -> None:
    raise CloseSession(4001, "nope")


async def close_in_nursery(ws: WebSocketConnection, session: Session) -> None:
    """Raises :class:`CloseSession` from a child task while a sibling is still running, so it
    reaches the gateway wrapped in an ``ExceptionGroup``."""

    async def refuse() -> None:
        await trio.lowlevel.checkpoint()  # let the sibling start first
        raise CloseSession(4001, "nope")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        nursery.start_soon(refuse)


async def flaky(ws: WebSocketConnection, session: Session) -> None:
    """Sends its session id, then echoes; the message ``"boom"`` makes it raise ValueError."""
    await ws.send_message(session.id)
    while True:
        message = await ws.get_message()
        if message == "boom":
            raise ValueError("boom")
        await ws.send_message(message)


def _principal(principal: Any) -> Any:
    if principal is None or isinstance(principal, str):
        return principal
    user = getattr(principal, "user", None)
    return {"user": user} if user is not None else repr(principal)


async def session_info(ws: WebSocketConnection, session: Session) -> None:
    """Sends the session's fields as one JSON object, then waits for the peer to close."""
    await ws.send_message(
        json.dumps(
            {
                "id": session.id,
                "mount": session.mount.name,
                "path": session.path,
                "params": session.params,
                "query": session.query,
                "query_params": session.query_params,
                "principal": _principal(session.principal),
                "remote": str(session.remote),
                "remote_host": None if session.remote is None else session.remote.host,
                "remote_port": None if session.remote is None else session.remote.port,
                "subprotocol": session.subprotocol,
                "subprotocols": session.subprotocols,
                "ws_subprotocol": ws.subprotocol,
                "origin": session.origin,
                "headers": session.headers,
                "raw_headers_as_ws": session.raw_headers == ws.handshake_headers,
            }
        )
    )
    while True:
        await ws.get_message()


# -- class plugins that record what happened --------------------------------------------------


class Recorder(Plugin[NoOptions]):
    """Echoes; records how each session's handler ended (the :class:`ConnectionClosed` it saw)."""

    def __init__(self, options: NoOptions, mount: Mount) -> None:
        super().__init__(options, mount)
        self.endings: list[CloseReason | None] = []
        self.ended = trio.Event()

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed as exc:
            self.endings.append(exc.reason)
            raise
        finally:
            self.ended.set()


@dataclass(frozen=True)
class GateOptions:
    reject_status: int = 0  # non-zero: check() refuses with this status
    set_cookie: str = ""  # non-empty: check() accepts and adds this Set-Cookie header


class Gatekeeper(Plugin[GateOptions]):
    """``check()`` rejects or accepts with headers, per its options; counts handler runs and
    remembers the requests it was asked about."""

    options_type = GateOptions

    def __init__(self, options: GateOptions, mount: Mount) -> None:
        super().__init__(options, mount)
        self.checked: list[UpgradeRequest] = []
        self.handled = 0

    def check(self, request: UpgradeRequest) -> Reject | Accept | None:
        self.checked.append(request)
        if self.options.reject_status:
            return Reject(self.options.reject_status, "go away")
        if self.options.set_cookie:
            return Accept(headers=(("Set-Cookie", self.options.set_cookie),))
        return None

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        self.handled += 1
        await ws.send_message("welcome")
        while True:
            await ws.get_message()


@dataclass(frozen=True)
class AsyncGateOptions:
    # "accept", "reject", "raise", "choose:<subprotocol>" (or "choose:" for none), "bogus"
    verdict: str = "accept"


class AsyncGatekeeper(Plugin[AsyncGateOptions]):
    """An ``async def check()`` (it awaits, as asking another service would); the handler
    sends the session's id and subprotocol as JSON, so a test can compare them with the
    request the check saw."""

    options_type = AsyncGateOptions

    def __init__(self, options: AsyncGateOptions, mount: Mount) -> None:
        super().__init__(options, mount)
        self.checked: list[UpgradeRequest] = []

    async def check(self, request: UpgradeRequest) -> Reject | Accept | None:
        await trio.sleep(0.001)
        self.checked.append(request)
        verdict = self.options.verdict
        if verdict == "reject":
            return Reject(403, "not after all")
        if verdict == "raise":
            raise RuntimeError("the check broke")
        if verdict == "bogus":
            return "yes"  # type: ignore[return-value]  # a plugin bug, on purpose
        if verdict.startswith("choose:"):
            return Accept(subprotocol=verdict.removeprefix("choose:") or None)
        return None

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        info = {"id": session.id, "subprotocol": session.subprotocol}
        await ws.send_message(json.dumps(info))
        while True:
            await ws.get_message()


class NeedsRoom(Plugin[NoOptions]):
    """Declares the ``{room}`` it reads."""

    path_params = ("room",)

    async def handle(self, ws: WebSocketConnection, session: Session) -> None:
        await ws.send_message(session.params["room"])


async def needs_topic(ws: WebSocketConnection, session: Session) -> None:
    """A function plugin declaring its path parameter as an attribute."""
    await ws.send_message(session.params["topic"])


needs_topic.path_params = ("topic",)  # type: ignore[attr-defined]


# -- authenticators ----------------------------------------------------------------------------

TOKEN_USERS = {"good": "token-user"}


def _token(request: UpgradeRequest) -> str | None:
    values = request.query_params.get("token")
    return values[0] if values else None


def token_auth(request: UpgradeRequest) -> str | Reject | None:
    """``?token=good`` -> ``"token-user"``; ``?token=banned`` -> 403; anything else: nobody."""
    token = _token(request)
    if token == "banned":
        return Reject(403, "banned")
    return TOKEN_USERS.get(token or "")


async def async_token_auth(request: UpgradeRequest) -> str | None:
    """The same check as :func:`token_auth`, but it awaits (as asking another service would)."""
    await trio.sleep(0.001)
    token = _token(request)
    return f"async-{TOKEN_USERS[token]}" if token in TOKEN_USERS else None
