"""The hot path's own Redis connection (`adapters.redis_wire`): against a real Redis, and against small TCP
servers that stay silent, hang up, or record what they were sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import uuid4

import hiredis
import pytest
import redis

from adapters.redis_wire import RedisWire
from tests.backends import REDIS_URL, redis_problem, require

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, int, list[int]]:
    """A TCP server on a free port calling `handler(reader, writer, n)` for its n-th connection (from 1)."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        await handler(reader, writer, len(connections))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def _commands(reader: asyncio.StreamReader, count: int) -> list[list[bytes]]:
    parser, commands = hiredis.Reader(), []
    while len(commands) < count:
        data = await reader.read(65536)
        if not data:
            break
        parser.feed(data)
        while (command := parser.gets()) is not False:
            commands.append(command)
    return commands


def test_commands_sent_together_are_answered_in_order_in_the_database_the_url_names():
    require("Redis", redis_problem())
    key = f"wire-{uuid4()}"

    async def run() -> list[object]:
        wire = RedisWire(REDIS_URL)
        try:
            return list(await asyncio.gather(*(wire.call("INCR", key) for _ in range(50))))
        finally:
            wire.close()

    assert asyncio.run(run()) == list(range(1, 51))
    assert redis.Redis.from_url(REDIS_URL).get(key) == b"50"  # the same database as redis-py's client of the URL


def test_error_replies_are_redis_py_errors_and_leave_the_connection_usable():
    require("Redis", redis_problem())

    async def run() -> tuple[BaseException | object, BaseException | object, object]:
        wire = RedisWire(REDIS_URL)
        try:
            answers = await asyncio.gather(
                wire.call("EVALSHA", "0" * 40, 0),
                wire.call("INCRBY", f"wire-{uuid4()}", "not a number"),
                wire.call("PING"),
                return_exceptions=True,
            )
            return answers[0], answers[1], answers[2]
        finally:
            wire.close()

    no_script, refused, pong = asyncio.run(run())

    assert isinstance(no_script, redis.exceptions.NoScriptError)
    assert isinstance(refused, redis.ResponseError) and not isinstance(refused, redis.exceptions.NoScriptError)
    assert pong == b"PONG"


def test_a_silent_server_times_out_every_call_in_flight_and_the_next_call_connects_again():
    async def silent_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await reader.read()  # never answers
        else:
            await _commands(reader, 1)
            writer.write(b"+OK\r\n")
            await writer.drain()
        writer.close()

    async def run() -> tuple[list[BaseException | object], object, float, list[int]]:
        server, port, connections = await _serve(silent_then_ok)
        wire = RedisWire(f"redis://127.0.0.1:{port}", timeout=0.2)
        started = asyncio.get_running_loop().time()
        failed = await asyncio.gather(wire.call("PING"), wire.call("PING"), return_exceptions=True)
        waited = asyncio.get_running_loop().time() - started
        again = await wire.call("PING")
        wire.close()
        server.close()
        return failed, again, waited, connections

    failed, again, waited, connections = asyncio.run(run())

    assert all(isinstance(error, redis.TimeoutError) for error in failed)
    assert waited < 1.0
    assert again == b"OK"
    assert connections == [1, 2]


def test_a_connection_the_server_drops_fails_its_calls_and_is_opened_again():
    async def hang_up_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _commands(reader, 1)
        if n > 1:
            writer.write(b":7\r\n")
            await writer.drain()
        writer.close()

    async def run() -> tuple[BaseException | object, object]:
        server, port, _ = await _serve(hang_up_then_ok)
        wire = RedisWire(f"redis://127.0.0.1:{port}")
        (lost,) = await asyncio.gather(wire.call("GET", "x"), return_exceptions=True)
        again = await wire.call("GET", "x")
        wire.close()
        server.close()
        return lost, again

    lost, again = asyncio.run(run())

    assert isinstance(lost, redis.ConnectionError)
    assert again == 7


def test_credentials_and_database_from_the_url_go_first():
    received: list[list[bytes]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                received.append(command)
                writer.write(b"+OK\r\n")
            await writer.drain()
        writer.close()

    async def run() -> object:
        server, port, _ = await _serve(record)
        wire = RedisWire(f"redis://app:s3cret@127.0.0.1:{port}/3")
        answer = await wire.call("EVALSHA", "abc", 1, "k", 5)
        wire.close()
        server.close()
        return answer

    assert asyncio.run(run()) == b"OK"
    assert received == [[b"AUTH", b"app", b"s3cret"], [b"SELECT", b"3"], [b"EVALSHA", b"abc", b"1", b"k", b"5"]]


def test_a_refused_password_fails_the_call_that_connected():
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _commands(reader, 1)
        writer.write(b"-WRONGPASS invalid username-password pair\r\n")
        await writer.drain()
        await reader.read()

    async def run() -> BaseException | object:
        server, port, _ = await _serve(refuse)
        wire = RedisWire(f"redis://:nope@127.0.0.1:{port}")
        (answer,) = await asyncio.gather(wire.call("PING"), return_exceptions=True)
        wire.close()
        server.close()
        return answer

    answer = asyncio.run(run())

    assert isinstance(answer, redis.ResponseError)
    assert "WRONGPASS" in str(answer)


@pytest.mark.parametrize(
    ("url", "supported"),
    [
        ("redis://127.0.0.1:6379/15", True),
        ("redis://user:pw@cache.internal", True),
        ("rediss://cache.internal:6380/1", True),
        ("unix:///run/redis.sock?db=2", True),
        ("rediss://cache.internal?ssl_cert_reqs=none", False),  # TLS options: redis-py's client
        ("redis://127.0.0.1?socket_keepalive=true", False),
        ("http://127.0.0.1", False),
    ],
)
def test_urls_with_options_it_does_not_know_are_left_to_redis_py(url: str, supported: bool):
    assert RedisWire.supports(url) is supported
