"""pycapnp reaches a capability another ww node exports, over libp2p.

Node B runs the counter example (examples/images/counter), which exports a Counter through
its membrane. pycapnp talks only to node A's --rpc-socket: Host.connect dials B over
/ww/0.1.0, and the session grafted on B's membrane carries the export, which pycapnp casts
with the schema in capnp/counter.capnp, loaded unchanged.
"""

import os
import subprocess

import capnp
import pytest

from conftest import ROOT, SCHEMAS, image, ww_binary
from test_membrane import connect, run


@pytest.fixture
def counter_node():
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    env.setdefault("WW_CACHE_DIR", str(ROOT / "target" / "test-cache"))
    process = subprocess.Popen(
        [str(ww_binary()), "run", str(image("counter"))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        listening = process.stderr.readline()
        assert listening.startswith("ww: listening on "), listening
        addr = listening.removeprefix("ww: listening on ").strip()
        assert process.stdout.readline().strip() == "counter: serving"
        yield addr
    finally:
        process.kill()
        process.wait()


def test_pycapnp_calls_a_remote_export_through_host_connect(node, schemas, counter_node):
    _, membrane_schema = schemas
    counter_schema = capnp.load(str(SCHEMAS / "counter.capnp"), imports=[str(SCHEMAS)])
    addr, peer_id = counter_node.split("/p2p/")

    async def main():
        client, membrane = await connect(node, membrane_schema)
        session = (await membrane.graft()).session
        remote = (await session.host.connect(peerId=peer_id, addrs=[addr])).membrane
        theirs = (await remote.graft()).session
        assert (await theirs.host.id()).peerId == peer_id
        exports = {e.name: e.cap for e in theirs.exports}
        assert list(exports) == ["counter"]
        counter = exports["counter"].as_interface(counter_schema.Counter)
        assert (await counter.increment(by=5)).value == 5
        assert (await counter.get()).value == 5
        # The node's connected to B now.
        peers = [p.id for p in (await session.host.peers()).peers]
        assert peer_id in peers

    run(main())
