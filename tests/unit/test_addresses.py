"""Client addresses as usage records them (SPEC 8.2): canonical IP text, or nothing."""

from __future__ import annotations

import pytest

from domain.addresses import canonical_address, forwarded_client


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("testclient", None),
        ("203.0.113.7:8080", None),
        ("", None),
        (None, None),
    ],
)
def test_canonical_address(text: str | None, expected: str | None):
    assert canonical_address(text) == expected


def test_the_first_forwarded_address_wins_then_x_real_ip():
    assert forwarded_client("198.51.100.1, 10.0.0.1", "10.0.0.2") == "198.51.100.1"
    assert forwarded_client("unknown, 10.0.0.1", "10.0.0.2") == "10.0.0.2"
    assert forwarded_client(None, "10.0.0.2") == "10.0.0.2"
    assert forwarded_client(None, None) is None
