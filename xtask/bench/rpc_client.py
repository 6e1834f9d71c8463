"""Times Cap'n Proto calls from pycapnp over a Unix socket, for `cargo xtask bench`.

usage: rpc_client.py SOCKET CALLS [--counter [--via PEER_ID ADDR]]

Grafts onto the membrane the socket serves, then makes CALLS sequential calls (round trips)
and CALLS more all in flight at once (pipelined), and prints one line:
`py-rpc rtt_p50_us=X rtt_p99_us=X pipelined_per_sec=X`.

The call is `host.id()`; with `--counter`, `get()` on the session's `counter` export (the
counter example). With `--via`, the node at SOCKET dials PEER_ID at ADDR over libp2p
(Host.connect) and the session is grafted on that peer's membrane: every call crosses the
socket to the node, then /ww/0.1.0 to the peer.
"""

import asyncio
import pathlib
import sys
import time

import capnp

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "capnp"


async def main(socket: str, calls: int, counter: bool, via) -> None:
    membrane_capnp = capnp.load(str(SCHEMAS / "membrane.capnp"), imports=[str(SCHEMAS)])
    connection = await capnp.AsyncIoStream.create_unix_connection(socket)
    # The client owns the connection: it must outlive every capability reached through it.
    client = capnp.TwoPartyClient(connection)
    membrane = client.bootstrap().cast_as(membrane_capnp.Membrane)
    session = (await membrane.graft()).session
    if via is not None:
        peer_id, addr = via
        remote = (await session.host.connect(peerId=peer_id, addrs=[addr])).membrane
        session = (await remote.graft()).session
    if counter:
        counter_capnp = capnp.load(str(SCHEMAS / "counter.capnp"), imports=[str(SCHEMAS)])
        export = next(e for e in session.exports if e.name == "counter")
        target = export.cap.as_interface(counter_capnp.Counter)

        def call():
            return target.get()

    else:

        def call():
            return session.host.id()

    for _ in range(100):
        await call()
    rtts = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        rtts.append((time.perf_counter() - started) * 1e6)
    rtts.sort()
    started = time.perf_counter()
    await asyncio.gather(*(call() for _ in range(calls)))
    rate = calls / (time.perf_counter() - started)
    p50 = rtts[len(rtts) // 2]
    p99 = rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)]
    print(f"py-rpc rtt_p50_us={p50:.1f} rtt_p99_us={p99:.1f} pipelined_per_sec={rate:.1f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    via = None
    if "--via" in args:
        at = args.index("--via")
        via = (args[at + 1], args[at + 2])
        del args[at : at + 3]
    counter = "--counter" in args
    if counter:
        args.remove("--counter")
    asyncio.run(capnp.run(main(args[0], int(args[1]), counter, via)))
