"""Commands packed by hiredis on the asyncio clients: the same bytes and errors as redis-py's own
packer, on standalone and Cluster clients (redis/packing.py)."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.packing import HiredisPacking, pack_in_c

ARGUMENTS = [
    ("SET", "k", "v"),
    ("EVALSHA", "a" * 40, 2, "cv:{q}:meta", "cv:{q}:ready", "p", "noop", b'{"i":1}'),
    ("SET", "k", "é ✓ 𝄞"),
    ("ZADD", "z", 1.5, "m", -0.0, "n", 1 / 3, "o", float("inf"), "p"),
    ("SET", "k", 2**70),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", b"x" * 100_000),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", "name"),
]


@pytest.mark.parametrize("args", ARGUMENTS, ids=range(len(ARGUMENTS)))
def test_the_bytes_on_the_wire_are_redis_pys(args: tuple[object, ...]) -> None:
    python = b"".join(bytes(chunk) for chunk in Connection().pack_command(*args))
    assert b"".join(HiredisPacking().pack_command(*args)) == python


@pytest.mark.parametrize("value", [None, True, bytearray(b"x"), object()], ids=["none", "bool", "bytearray", "object"])
def test_values_redis_cannot_take_raise_data_error(value: object) -> None:
    with pytest.raises(DataError):
        HiredisPacking().pack_command("SET", "k", value)


async def test_clients_pack_in_c_and_stay_usable_after_a_refused_value(client: RedisClient, qname: str) -> None:
    key = f"{{{qname}}}:k"
    if hasattr(client, "nodes_manager"):
        await client.ping()
        nodes = client.get_nodes()  # type: ignore[union-attr]
        assert nodes and all(issubclass(n.connection_class, HiredisPacking) for n in nodes)
    else:
        assert issubclass(client.connection_pool.connection_class, HiredisPacking)
    with pytest.raises(DataError):
        await client.set(key, None)  # type: ignore[arg-type]
    await client.set(key, "é ✓")
    assert await client.get(key) == "é ✓"
    async with client.pipeline(transaction=False) as pipe:
        pipe.incrbyfloat(key + "f", 1.25)
        pipe.zadd(key + "z", {"m": 2.5})
        pipe.zscore(key + "z", "m")
        assert await pipe.execute() == [1.25, 1, 2.5]
    await client.delete(key, key + "f", key + "z")


async def test_a_client_with_another_encoding_keeps_redis_pys_packer(redis_url: str) -> None:
    other = connect(redis_url, encoding="latin-1")
    try:
        assert not issubclass(other.connection_pool.connection_class, HiredisPacking)
        pack_in_c(other)  # idempotent and still refuses
        assert not issubclass(other.connection_pool.connection_class, HiredisPacking)
        await other.set("packing-latin-1", "é")
        assert await other.execute_command("STRLEN", "packing-latin-1") == 1  # one latin-1 byte
        await other.delete("packing-latin-1")
    finally:
        await other.aclose()
