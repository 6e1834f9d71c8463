"""pycapnp reaches a capability another ww node exports, over libp2p.

Node B runs the counter example (examples/images/counter), which exports a Counter through
its membrane. pycapnp talks only to node A's --rpc-socket: Host.connect dials B over
/ww/0.1.0, and the session grafted on B's membrane carries the export, which pycapnp casts
with the schema in capnp/counter.capnp, loaded unchanged. B gives exactly what its pid0
exports: no Host, no Executor. What Host.connect returned is revoked with A's session.

Nodes whose pid0 exports nothing give a network peer what `--peer-session` says (a Host
answering only id, addrs and peers by default), and `--allow-peer` keeps everyone else out.
"""

import contextlib
import os
import signal
import subprocess

import capnp
import pytest

from conftest import ROOT, SCHEMAS, image, ww_binary
from test_membrane import assert_stale, connect, echo, run


@contextlib.contextmanager
def listening_node(name, *args, flags=()):
    """`ww run FLAGS IMAGE ARGS` listening on loopback; yields (its multiaddr, the process)."""
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    env.setdefault("WW_CACHE_DIR", str(ROOT / "target" / "test-cache"))
    process = subprocess.Popen(
        [str(ww_binary()), "run", *flags, str(image(name)), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        listening = process.stderr.readline()
        assert listening.startswith("ww: listening on "), listening
        yield listening.removeprefix("ww: listening on ").strip(), process
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def counter_node():
    with listening_node("counter") as (addr, process):
        assert process.stdout.readline().strip() == "counter: serving"
        yield addr


async def graft_remote(session, multiaddr):
    """The session `multiaddr`'s node gives a peer, through Host.connect."""
    addr, peer_id = multiaddr.split("/p2p/")
    remote = (await session.host.connect(peerId=peer_id, addrs=[addr])).membrane
    return remote, (await remote.graft()).session


def test_pycapnp_calls_a_remote_export_through_host_connect(node, schemas, counter_node):
    _, membrane_schema = schemas
    counter_schema = capnp.load(str(SCHEMAS / "counter.capnp"), imports=[str(SCHEMAS)])
    addr, peer_id = counter_node.split("/p2p/")

    async def main():
        client, membrane = await connect(node, membrane_schema)
        session = (await membrane.graft()).session
        remote = (await session.host.connect(peerId=peer_id, addrs=[addr])).membrane
        theirs = (await remote.graft()).session
        # Exactly what B's pid0 exports: no Host, no Executor.
        assert not theirs._has("host") and not theirs._has("executor")
        exports = {e.name: e.cap for e in theirs.exports}
        assert list(exports) == ["counter"]
        counter = exports["counter"].as_interface(counter_schema.Counter)
        assert (await counter.increment(by=5)).value == 5
        assert (await counter.get()).value == 5
        # The node's connected to B now.
        peers = [p.id for p in (await session.host.peers()).peers]
        assert peer_id in peers

    run(main())


def test_what_host_connect_returned_is_revoked_with_the_local_session(node, schemas, counter_node):
    _, membrane_schema = schemas
    counter_schema = capnp.load(str(SCHEMAS / "counter.capnp"), imports=[str(SCHEMAS)])

    async def main():
        _, membrane = await connect(node, membrane_schema)
        session = (await membrane.graft()).session
        remote, theirs = await graft_remote(session, counter_node)
        counter = theirs.exports[0].cap.as_interface(counter_schema.Counter)
        assert (await counter.get()).value == 0
        node.sighup()
        await session.status.changed(since={"seq": session.epoch.seq})
        # A's epoch moved: the remote membrane A dialed for the old session, and what was
        # reached through it, are gone with that session (B's epoch did not move).
        for call in (remote.graft(), counter.get()):
            with pytest.raises(capnp.KjException) as e:
                await call
            assert_stale(e.value)
        fresh = (await membrane.graft()).session
        _, theirs = await graft_remote(fresh, counter_node)
        counter = theirs.exports[0].cap.as_interface(counter_schema.Counter)
        assert (await counter.get()).value == 0

    run(main())


def test_a_peer_gets_no_executor_and_only_host_info_by_default(node, schemas):
    _, membrane_schema = schemas
    with listening_node("testbed", "block") as (addr, _):

        async def main():
            _, membrane = await connect(node, membrane_schema)
            session = (await membrane.graft()).session
            _, theirs = await graft_remote(session, addr)
            assert not theirs._has("executor")
            assert (await theirs.host.id()).peerId == addr.split("/p2p/")[1]
            assert len((await theirs.host.addrs()).addrs) >= 1
            for call in (theirs.host.executor(), theirs.host.connect(peerId="x", addrs=[])):
                with pytest.raises(capnp.KjException) as e:
                    await call
                assert e.value.type == "UNIMPLEMENTED", e.value
                assert "not allowed" in e.value.description

        run(main())


def test_peer_session_nothing_and_full(node, schemas, child_echo):
    _, membrane_schema = schemas
    with listening_node("testbed", "block", flags=["--peer-session", "nothing"]) as (none, _), \
            listening_node("testbed", "block", flags=["--peer-session", "full"]) as (full, _):

        async def main():
            _, membrane = await connect(node, membrane_schema)
            session = (await membrane.graft()).session
            _, theirs = await graft_remote(session, none)
            assert not theirs._has("host") and not theirs._has("executor")
            assert theirs.epoch.seq == 0
            _, theirs = await graft_remote(session, full)
            await echo(theirs.executor, child_echo, b"peer\n")

        run(main())


def test_a_peer_not_allowed_is_refused_before_the_membrane(node, schemas):
    _, membrane_schema = schemas
    other = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
    with listening_node("testbed", "block", flags=["--allow-peer", other]) as (addr, _):

        async def main():
            _, membrane = await connect(node, membrane_schema)
            session = (await membrane.graft()).session
            with pytest.raises(capnp.KjException):
                await graft_remote(session, addr)
            # The node itself is fine, and our own socket still serves.
            assert (await session.host.id()).peerId

        run(main())


def test_what_an_export_returns_is_revoked_with_the_session(schemas, tmp_path):
    """The finding of issue 14: a capability returned by an exported capability's method
    (awaited or pipelined) outlived an epoch advance, because the node copied answers
    without wrapping what was inside them. Now it crosses the session's membrane too."""
    _, membrane_schema = schemas
    counter_schema = capnp.load(str(SCHEMAS / "counter.capnp"), imports=[str(SCHEMAS)])
    socket = tmp_path / "ww.sock"
    with listening_node("counter", flags=["--rpc-socket", str(socket)]) as (_, process):
        assert process.stdout.readline().strip() == "counter: serving"

        class Socket:
            pass

        node = Socket()
        node.socket = socket

        async def main():
            _, membrane = await connect(node, membrane_schema)
            session = (await membrane.graft()).session
            counter = session.exports[0].cap.as_interface(counter_schema.Counter)
            forked = (await counter.fork()).counter
            pipelined = counter.fork().counter
            assert (await forked.get()).value == 0 and (await pipelined.get()).value == 0
            os.kill(process.pid, signal.SIGHUP)
            await session.status.changed(since={"seq": session.epoch.seq})
            for cap in (counter, forked, pipelined, counter.fork().counter):
                with pytest.raises(capnp.KjException) as e:
                    await cap.get()
                assert_stale(e.value)

        run(main())
