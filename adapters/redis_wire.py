"""The hot path's Redis connection: RESP written and read over an asyncio protocol, for the one call the event
loop makes many times a second (`adapters.quotas`: EVALSHA of the quota script, a batch of decisions each).

redis-py's asyncio client is kept for everything else; for this call it spent about 200 us of CPU a round trip
on these machines (stream reader and writer, retry wrapper, a readiness poll of the socket before each command,
a lock) against about 60 us here: a reply resolves its future straight from `data_received`
(DEVELOPERS.md, "Benchmarks"). Replies are parsed by hiredis, as redis-py does when it is installed.

Errors are redis-py's classes, so callers handle one family: an error reply is a `redis.ResponseError` (a
`NoScriptError` for NOSCRIPT), a lost or silent connection a `redis.ConnectionError` / `redis.TimeoutError`
failing every call in flight (replies can no longer be matched to calls), and the next call connects again.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import hiredis
import redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url

# What a URL may say for this connection; anything else (TLS options, other connection classes) is left to
# redis-py: `RedisWire.supports` says no, and the caller keeps redis-py's client.
_UNDERSTOOD = {"host", "port", "db", "username", "password", "path", "connection_class"}


def _pack(args: tuple[Any, ...]) -> bytes:
    """A command as RESP: an array of bulk strings (ints and strs as their text)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _error(reply: redis.ResponseError) -> redis.ResponseError:
    message = str(reply)
    return redis.exceptions.NoScriptError(message) if message.startswith("NOSCRIPT") else reply


class _Protocol(asyncio.Protocol):
    def __init__(self, wire: RedisWire) -> None:
        self.wire = wire
        self.reader = hiredis.Reader(replyError=redis.ResponseError, protocolError=redis.InvalidResponse)
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.wire._waiting
        while True:
            try:
                reply = self.reader.gets()
            except redis.InvalidResponse as error:  # the stream is not RESP: nothing after it can be trusted
                self.wire._fail(error, self.transport)
                return
            if reply is False:
                return
            if not waiting:  # a reply no call waits for: out of step
                self.wire._fail(redis.InvalidResponse("Redis sent a reply no call waited for"), self.transport)
                return
            future, timer = waiting.popleft()
            timer.cancel()
            if not future.done():
                if isinstance(reply, redis.ResponseError):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = redis.ConnectionError(f"Redis closed the connection ({exc or 'end of stream'})")
        self.wire._fail(error, self.transport)


class RedisWire:
    """One connection, opened on first use in the running loop, commands pipelined in order of sending."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.options = parse_url(url)
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._waiting: deque[tuple[asyncio.Future[Any], asyncio.TimerHandle]] = deque()

    @staticmethod
    def supports(url: str) -> bool:
        try:
            options = parse_url(url)
        except ValueError:
            return False
        kind = options.get("connection_class")
        return set(options) <= _UNDERSTOOD and kind in (None, SSLConnection, UnixDomainSocketConnection)

    async def call(self, *args: Any) -> Any:
        """Send one command and wait for its reply (raises as the module docstring says)."""
        if self._transport is None:
            await self._connect()
        return await self._send(args)

    def send(self, *args: Any) -> asyncio.Future[Any] | None:
        """Write one command now on the open connection and return its reply's future; None when no connection
        is open (`call` opens one)."""
        return self._send(args) if self._transport is not None else None

    def _send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._transport is None:
            future.set_exception(redis.ConnectionError("Redis connection lost"))
            return future
        timer = loop.call_later(self.timeout, self._expire, future)
        self._waiting.append((future, timer))
        self._transport.write(_pack(args))
        return future

    def _expire(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            self._fail(redis.TimeoutError(f"Redis did not answer within {self.timeout} s"))

    def _fail(self, error: Exception, transport: asyncio.BaseTransport | None = None) -> None:
        """Fail every call in flight and drop the connection: the next call opens a new one. A protocol names
        its own `transport`: one dropped already (a new connection may be open since) fails nothing."""
        if transport is not None and transport is not self._transport:
            return
        transport, self._transport = self._transport, None
        waiting, self._waiting = self._waiting, deque()
        for future, timer in waiting:
            timer.cancel()
            if not future.done():
                future.set_exception(error)
        if transport is not None:
            transport.abort()

    async def _connect(self) -> None:
        if self._connecting is None:  # the first caller connects, the others wait for it
            self._connecting = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._open(), self.timeout)
            except Exception as error:
                self._fail(error)
                failure = error if isinstance(error, redis.RedisError) else redis.ConnectionError(repr(error))
                self._connecting.set_exception(failure)
                self._connecting.exception()  # retrieved: the waiters, if any, get it themselves
                self._connecting = None
                raise failure from error
            self._connecting.set_result(None)
            self._connecting = None
            return
        await asyncio.shield(self._connecting)

    async def _open(self) -> None:
        loop, options = asyncio.get_running_loop(), self.options
        kind = options.get("connection_class")
        if kind is UnixDomainSocketConnection:
            transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), options["path"])
        else:
            host = options.get("host", "localhost")
            context = ssl.create_default_context() if kind is SSLConnection else None
            transport, _ = await loop.create_connection(
                lambda: _Protocol(self), host, options.get("port", 6379), ssl=context
            )
        self._transport = transport
        greeting = []
        if options.get("password") is not None:
            user = options.get("username")
            auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            greeting.append(self._send(auth))
        if options.get("db"):
            greeting.append(self._send(("SELECT", options["db"])))
        await asyncio.gather(*greeting)  # the first error raised, the others' retrieved

    def close(self) -> None:
        self._fail(redis.ConnectionError("closed"))
