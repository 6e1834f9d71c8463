"""pycapnp against `ww run --rpc-socket`: graft, Host.id, spawn child-echo through the
executor, talk to it over its pipes, wait for its exit code, and see the stale-epoch
error (DISCONNECTED) after SIGHUP advances the membrane's epoch, then graft again."""

import asyncio

import capnp
import pytest


def run(coroutine):
    """Runs a client coroutine on pycapnp's event loop, with a time limit."""

    async def limited():
        return await asyncio.wait_for(coroutine, timeout=60)

    return asyncio.run(capnp.run(limited()))


async def connect(node, membrane_schema):
    connection = await capnp.AsyncIoStream.create_unix_connection(str(node.socket))
    client = capnp.TwoPartyClient(connection)
    return client, client.bootstrap().cast_as(membrane_schema.Membrane)


async def spawn_echo(executor, program: bytes):
    spawned = await executor.spawn(
        program={"bytes": program},
        options={"stdin": "pipe", "stdout": "pipe", "stderr": "null"},
    )
    return spawned.process


async def read_to_end(stream) -> bytes:
    chunks = []
    while True:
        data = (await stream.read(65536)).data
        if not data:
            return b"".join(chunks)
        chunks.append(data)


async def echo(executor, program: bytes, text: bytes):
    process = await spawn_echo(executor, program)
    stdin = (await process.stdin()).stream
    stdout = (await process.stdout()).stream

    async def send():
        await stdin.write(text)
        await stdin.close()

    _, echoed = await asyncio.gather(send(), read_to_end(stdout))
    assert echoed == text
    status = (await process.wait()).status
    assert status.which() == "exited" and status.exited == 0, status


def assert_stale(error: capnp.KjException):
    assert error.type == "DISCONNECTED", error
    assert "stale epoch" in error.description, error.description


def test_graft_host_id_and_spawn_child_echo(node, schemas, child_echo):
    _, membrane_schema = schemas

    async def main():
        client, membrane = await connect(node, membrane_schema)
        session = (await membrane.graft()).session
        assert session.epoch.seq == 0
        peer_id = (await session.host.id()).peerId
        assert peer_id.startswith("12D3KooW"), peer_id
        addrs = list((await session.host.addrs()).addrs)
        assert len(addrs) == 1 and addrs[0].endswith("/p2p/" + peer_id), addrs
        with pytest.raises(capnp.KjException) as refused:
            await session.host.connect(peerId="x", addrs=[])
        assert refused.value.type == "FAILED"
        assert "is not a peer id" in refused.value.description

        await echo(session.executor, child_echo, b"hello from pycapnp\n")
        executor = (await session.host.executor()).executor
        await echo(executor, child_echo, bytes(range(256)) * 1000)

    run(main())


def test_stale_epoch_after_sighup_then_graft_again(node, schemas, child_echo):
    _, membrane_schema = schemas

    async def main():
        client, membrane = await connect(node, membrane_schema)
        old = (await membrane.graft()).session
        await old.host.id()
        process = await spawn_echo(old.executor, child_echo)

        node.sighup()
        changed = await old.status.changed(since={"seq": old.epoch.seq})
        assert changed.epoch.seq == old.epoch.seq + 1

        with pytest.raises(capnp.KjException) as stale:
            await old.host.id()
        assert_stale(stale.value)
        with pytest.raises(capnp.KjException) as stale:
            await spawn_echo(old.executor, child_echo)
        assert_stale(stale.value)
        with pytest.raises(capnp.KjException) as stale:
            await process.wait()
        assert_stale(stale.value)

        new = (await membrane.graft()).session
        assert new.epoch.seq == old.epoch.seq + 1
        assert (await new.host.id()).peerId.startswith("12D3KooW")
        await echo(new.executor, child_echo, b"after the advance\n")

    run(main())
