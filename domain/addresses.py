"""Client addresses as usage records them (SPEC 8.2): an IP address in its canonical text, or nothing."""

from __future__ import annotations

import functools
import ipaddress

MAX_ADDRESS_LENGTH = 45  # the longest IPv6 text (an IPv4-mapped address written out in full)


@functools.lru_cache(maxsize=4096)  # on the answer path: a busy deployment sees the same few addresses
def canonical_address(text: str | None) -> str | None:
    """The canonical text of an IPv4 or IPv6 address (`::ffff:a.b.c.d` as `a.b.c.d`), or None when `text` is none.

    A zone (`fe80::1%eth0`) is dropped: it names an interface of the sender's machine, not a client.
    """
    if not text:
        return None
    candidate = text.strip().split("%", 1)[0]
    if candidate.startswith("[") and "]" in candidate:  # `[v6]` or `[v6]:port`, as some proxies write it
        candidate = candidate[1 : candidate.index("]")]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def forwarded_client(forwarded_for: str | None, real_ip: str | None) -> str | None:
    """The client a gateway names: the first address of `X-Forwarded-For`, else `X-Real-IP` (SPEC 8.2)."""
    if forwarded_for:
        first = canonical_address(forwarded_for.split(",", 1)[0])
        if first is not None:
            return first
    return canonical_address(real_ip)
