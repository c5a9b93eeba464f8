"""``gateway.api``: the public surface a plugin imports, pinned; the two request types agree."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import trio_websocket

import gateway.api as api
from gateway import errors, mount
from gateway.ws import connection, frames, stream

ROOT = Path(__file__).resolve().parent.parent

# Adding a name is a deliberate act (it becomes a promise to plugin authors): change it here,
# in the README ("Write a plugin") and in the CHANGELOG together.
EXPORTS = {
    "Accept",
    "Address",
    "CloseCode",
    "CloseReason",
    "CloseSession",
    "ConfigError",
    "ConnectionClosed",
    "Group",
    "Handler",
    "Mount",
    "NoOptions",
    "Plugin",
    "Reject",
    "Session",
    "UpgradeRequest",
    "Verdict",
    "WebSocketConnection",
    "WebSocketStream",
    "is_sendable_close_code",
    "safe",
}


def test_the_exports_are_pinned() -> None:
    assert set(api.__all__) == EXPORTS
    assert len(api.__all__) == len(EXPORTS)  # no name twice
    for name in api.__all__:
        assert getattr(api, name) is not None


def test_the_exports_are_the_real_objects_not_copies() -> None:
    # A plugin catching api.ConnectionClosed catches what the engine raises, and so on.
    assert api.ConnectionClosed is trio_websocket.ConnectionClosed
    assert api.CloseReason is trio_websocket.CloseReason
    assert api.WebSocketConnection is connection.WebSocketConnection
    assert api.WebSocketStream is stream.WebSocketStream
    assert api.CloseCode is frames.CloseCode
    assert (api.Mount, api.Group) == (mount.Mount, mount.Group)
    assert api.CloseSession is errors.CloseSession
    assert api.ConfigError is errors.ConfigError


def test_close_codes_are_an_int_enum() -> None:
    assert int(api.CloseCode.TRY_AGAIN_LATER) == 1013
    assert api.CloseSession(api.CloseCode.POLICY_VIOLATION, "no").code == 1008


def _gateway_imports(path: Path) -> set[str]:
    """The ``gateway`` modules a source file imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "gateway")
    return found


PLUGIN_SOURCES = sorted(
    [*ROOT.glob("plugins/*.py"), *ROOT.glob("examples/hello/*.py")], key=lambda p: p.name
)


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_first_party_plugins_import_only_the_public_modules(path: Path) -> None:
    assert _gateway_imports(path) <= {"gateway.api", "gateway.testing"}


def test_upgrade_request_and_session_name_the_same_things_the_same_way() -> None:
    def members(cls: type) -> set[str]:
        fields = {f.name for f in dataclasses.fields(cls)}
        return fields | {n for n in dir(cls) if not n.startswith("_")}

    shared = {
        "id",
        "mount",
        "path",
        "params",
        "query",
        "query_params",
        "headers",
        "header",
        "origin",
        "remote",
        "subprotocols",
        "subprotocol",
        "principal",
        "log",
    }
    assert shared <= members(api.UpgradeRequest)
    assert shared <= members(api.Session)
    hints_request = api.UpgradeRequest.__annotations__
    hints_session = api.Session.__annotations__
    for name in ("mount", "remote", "subprotocols", "subprotocol", "origin"):
        assert hints_request[name] == hints_session[name], name


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (api.Address("203.0.113.7", 51234), "203.0.113.7:51234"),
        (api.Address("2001:db8::7", 51234), "[2001:db8::7]:51234"),
        (api.Address("203.0.113.7"), "203.0.113.7"),  # forwarded: no port
        (api.Address("2001:db8::7"), "2001:db8::7"),
    ],
)
def test_an_address_prints_as_logs_and_headers_expect(address: api.Address, text: str) -> None:
    assert str(address) == text
    assert str(address.ip) == address.host


def test_accept_keeps_the_gateways_subprotocol_unless_it_names_one() -> None:
    assert not api.Accept().chooses_subprotocol
    assert api.Accept(subprotocol=None).chooses_subprotocol  # "none", said explicitly
    assert api.Accept(subprotocol="v1").subprotocol == "v1"
