"""Where a webhook may point, and sending to it without being turned against the server's own network (SSRF).

A target must be https and every address its name resolves to public (not private, loopback, link-local,
metadata, multicast, reserved...), unless private targets are allowed (development and tests), which also
allows http. The check is repeated at every delivery and the connection goes to an address just checked
(the name is not looked up again by the HTTP client), so a name re-pointed after the check gains nothing.
Redirects are not followed; a delivery waits at most 10 s and reads at most 64 KiB of the answer.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from domain.errors import InvalidWebhookTarget

TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_PORTS = {"https": 443, "http": 80}

Resolver = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # a name, or an address without brackets
    port: int
    path: str  # with the query

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def parse_target(url: str, allow_private: bool) -> Target:
    """The URL's parts, or InvalidWebhookTarget; no I/O."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidWebhookTarget("url is not a valid URL") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise InvalidWebhookTarget("url must be an https:// URL")
    if not parts.hostname:
        raise InvalidWebhookTarget("url must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookTarget("url must not carry credentials (user:password@)")
    if parts.fragment:
        raise InvalidWebhookTarget("url must not have a fragment")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme], path)


def check_address(address: str, allow_private: bool) -> None:
    if allow_private:
        return
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a scoped IPv6 address is link-local anyway
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    for candidate in (ip, mapped):
        # `is_global` is false for private, loopback, link-local (169.254.169.254: cloud metadata),
        # shared (100.64/10), reserved and unspecified ranges; multicast is not a target either.
        if candidate is not None and (not candidate.is_global or candidate.is_multicast):
            raise InvalidWebhookTarget(
                "url must not name or resolve to a private, loopback, link-local or reserved address"
            )


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve(target: Target, allow_private: bool, resolver: Resolver = system_resolver) -> list[str]:
    """Every address the target's host resolves to, all checked; InvalidWebhookTarget if one fails."""
    try:
        addresses = [str(ipaddress.ip_address(target.host))]
    except ValueError:
        try:
            addresses = list(resolver(target.host, target.port))
        except (OSError, UnicodeError):
            raise InvalidWebhookTarget(f"url's host {target.host!r} does not resolve") from None
    if not addresses:
        raise InvalidWebhookTarget(f"url's host {target.host!r} does not resolve")
    for address in addresses:
        check_address(address, allow_private)
    return addresses


def check_target(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """Refuse (InvalidWebhookTarget, answered 422) a URL the server must not call."""
    target = parse_target(url, allow_private)
    resolve(target, allow_private, resolver)
    return target


@dataclass(frozen=True)
class Outcome:
    status_code: int | None  # None: no answer (refused target, connection failure, timeout)
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def send(
    url: str,
    body: bytes,
    headers: dict[str, str],
    allow_private: bool,
    resolver: Resolver = system_resolver,
    timeout: float = TIMEOUT_SECONDS,
) -> Outcome:
    """POST `body` to the webhook's URL through an address checked now; never raises for the target's faults."""
    deadline = time.monotonic() + timeout
    try:
        target = parse_target(url, allow_private)
        addresses = resolve(target, allow_private, resolver)
    except InvalidWebhookTarget as refused:
        return Outcome(None, str(refused))
    error = "no address"
    for address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            return Outcome(None, "timeout")
        host = f"[{address}]" if ":" in address else address
        extensions: dict[str, Any] = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            # trust_env=False: no proxy from the environment may stand between us and the checked address.
            with (
                httpx.Client(timeout=left, follow_redirects=False, trust_env=False) as client,
                client.stream(
                    "POST",
                    f"{target.scheme}://{host}:{target.port}{target.path}",
                    content=body,
                    headers={**headers, "Host": target.host_header},
                    extensions=extensions,
                ) as response,
            ):
                _drain(response, deadline)
                return Outcome(response.status_code)
        except (httpx.ConnectError, httpx.ConnectTimeout) as failure:
            error = type(failure).__name__  # try the next address
        except httpx.HTTPError as failure:
            return Outcome(None, type(failure).__name__)
    return Outcome(None, error)


def _drain(response: httpx.Response, deadline: float) -> None:
    """Read at most MAX_RESPONSE_BYTES of the answer, and not past the deadline; the rest is dropped."""
    read = 0
    for chunk in response.iter_raw(8192):
        read += len(chunk)
        if read >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
            return
