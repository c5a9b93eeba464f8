"""``gateway.upgrade``'s pure pieces: the client's address as the HTTP side hands it over."""

from __future__ import annotations

import pytest

from gateway.api import Address
from gateway.upgrade import _address, remote_text


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7:51234", Address("203.0.113.7", 51234)),
        ("[2001:db8::7]:51234", Address("2001:db8::7", 51234)),
        ("203.0.113.7", Address("203.0.113.7")),  # a forwarded client: no port
        ("2001:db8::7", Address("2001:db8::7")),
        ("-", None),  # a stream without an address
        ("", None),
    ],
)
def test_the_http_sides_text_becomes_an_address(text: str, address: Address | None) -> None:
    assert _address(text) == address
    assert remote_text(address) == (text or "-")
