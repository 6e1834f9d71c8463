"""Times Host.id() calls from pycapnp over a Unix socket, for `cargo xtask bench`.

usage: rpc_client.py SOCKET CALLS

Grafts onto the membrane the socket serves, then makes CALLS sequential `host.id()` calls
(round trips) and CALLS more all in flight at once (pipelined), and prints one line:
`py-rpc rtt_p50_us=X rtt_p99_us=X pipelined_per_sec=X`.
"""

import asyncio
import pathlib
import sys
import time

import capnp

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "capnp"


async def main(socket: str, calls: int) -> None:
    membrane_capnp = capnp.load(str(SCHEMAS / "membrane.capnp"), imports=[str(SCHEMAS)])
    connection = await capnp.AsyncIoStream.create_unix_connection(socket)
    membrane = capnp.TwoPartyClient(connection).bootstrap().cast_as(membrane_capnp.Membrane)
    host = (await membrane.graft()).session.host
    for _ in range(100):
        await host.id()
    rtts = []
    for _ in range(calls):
        started = time.perf_counter()
        await host.id()
        rtts.append((time.perf_counter() - started) * 1e6)
    rtts.sort()
    started = time.perf_counter()
    await asyncio.gather(*(host.id() for _ in range(calls)))
    rate = calls / (time.perf_counter() - started)
    p50 = rtts[len(rtts) // 2]
    p99 = rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)]
    print(f"py-rpc rtt_p50_us={p50:.1f} rtt_p99_us={p99:.1f} pipelined_per_sec={rate:.1f}")


if __name__ == "__main__":
    asyncio.run(capnp.run(main(sys.argv[1], int(sys.argv[2]))))
