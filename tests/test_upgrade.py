"""``gateway.upgrade``'s pure pieces: the client's address as the HTTP side hands it over."""

from __future__ import annotations

import pytest
from trio_websocket import Endpoint

from gateway.api import Address
from gateway.upgrade import _address, _session_id, remote_text


@pytest.mark.parametrize(
    ("endpoint", "address", "text"),
    [
        (Endpoint("203.0.113.7", 51234, False), Address("203.0.113.7", 51234), "203.0.113.7:51234"),
        (
            Endpoint("2001:db8::7", 51234, False),
            Address("2001:db8::7", 51234),
            "[2001:db8::7]:51234",
        ),
        (None, None, "-"),  # a stream without an address
    ],
)
def test_the_peers_endpoint_becomes_the_sessions_address(
    endpoint: Endpoint | None, address: Address | None, text: str
) -> None:
    assert _address(endpoint) == address
    assert remote_text(address) == text


def test_a_forwarded_client_has_no_port() -> None:
    assert remote_text(Address("203.0.113.7")) == "203.0.113.7"


def test_session_ids_are_twelve_hex_digits_and_do_not_repeat() -> None:
    ids = [_session_id() for _ in range(2000)]  # several refills of the pool
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
