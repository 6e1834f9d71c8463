"""pycapnp against a pid0 that narrows what it exports: testbed `rpc-membrane`.

pid0 exports, through a membrane of its own (ww::rpc::export_for), a Counter (`counter`)
and copies of it narrowed by the node's Attenuator: `reader` (get only), `limited`
(5 calls a second), `expiring` (for EXPIRES_MS), `revocable` with its `revoker`, and to
socket callers only its own executor (`admin`). The node enforces each policy; a refused
call's exception type says why (capnp/membrane.capnp): UNIMPLEMENTED not allowed,
OVERLOADED rate limited, DISCONNECTED revoked, expired or stale epoch. Advancing the epoch
(SIGHUP) revokes what sessions got, including what the client passed in (a Watcher).
"""

import asyncio
import os
import pathlib
import signal
import subprocess
import tempfile
import threading
import time

import capnp
import pytest

from conftest import ROOT, SCHEMAS, image, ww_binary
from test_membrane import connect, echo, run

# How long `expiring` lasts: long enough for a slow machine to graft and call it first.
EXPIRES_MS = 4000


class MembraneNode:
    """`ww run --rpc-socket SOCK testbed rpc-membrane EXPIRES_MS`, its stdout collected."""

    def __init__(self, socket: pathlib.Path, process: subprocess.Popen):
        self.socket = socket
        self.process = process
        self.lines: list[str] = []
        self.serving_at: float | None = None
        self.ended = False
        self._seen = threading.Condition()
        self.addr: str | None = None
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stderr(self):
        # Drained so that ww never blocks on it; the first listen address is kept.
        for line in self.process.stderr:
            if line.startswith("ww: listening on ") and self.addr is None:
                with self._seen:
                    self.addr = line.removeprefix("ww: listening on ").strip()
                    self._seen.notify_all()

    def listen_addr(self) -> str:
        with self._seen:
            self._seen.wait_for(lambda: self.addr is not None, timeout=60)
        assert self.addr, "ww printed no listen address"
        return self.addr

    def _read(self):
        for line in self.process.stdout:
            with self._seen:
                if line.strip() == "membrane: serving" and self.serving_at is None:
                    self.serving_at = time.monotonic()
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()
        with self._seen:
            self.ended = True
            self._seen.notify_all()

    def wait_for(self, line: str, timeout: float = 60) -> None:
        with self._seen:
            self._seen.wait_for(lambda: line in self.lines or self.ended, timeout=timeout)
            if line not in self.lines:
                pytest.fail(f"testbed never printed {line!r}; it printed {self.lines}")

    def sighup(self):
        os.kill(self.process.pid, signal.SIGHUP)


@pytest.fixture
def membrane_node():
    with tempfile.TemporaryDirectory() as tmp:
        socket = pathlib.Path(tmp) / "ww.sock"
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.pop("WW_ENV", None)
        env.setdefault("WW_CACHE_DIR", str(ROOT / "target" / "test-cache"))
        process = subprocess.Popen(
            [
                str(ww_binary()),
                "run",
                "--rpc-socket",
                str(socket),
                str(image("testbed")),
                "rpc-membrane",
                str(EXPIRES_MS),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            node = MembraneNode(socket, process)
            node.wait_for("membrane: serving")
            assert socket.exists()
            yield node
        finally:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def counter_schema():
    return capnp.load(str(SCHEMAS / "counter.capnp"), imports=[str(SCHEMAS)])


class Grafted:
    """A new connection's session and its exports by name (untyped), holding the
    connection: dropping its client would end the connection and every capability on it."""

    def __init__(self, client, session):
        self.client = client
        self.session = session
        self.exports = {e.name: e.cap for e in session.exports}


async def graft(node, membrane_schema) -> Grafted:
    client, membrane = await connect(node, membrane_schema)
    return Grafted(client, (await membrane.graft()).session)


def refused(error: capnp.KjException, kind: str, word: str):
    assert error.type == kind, error
    assert word in error.description, error.description


async def wait_epoch_change(session):
    changed = await session.status.changed(since={"seq": session.epoch.seq})
    assert changed.epoch.seq == session.epoch.seq + 1


def test_socket_session_holds_admin_and_no_host(membrane_node, schemas, child_echo):
    host_schema, membrane_schema = schemas

    async def main():
        grafted = await graft(membrane_node, membrane_schema)
        session, exports = grafted.session, grafted.exports
        assert not session._has("host"), "pid0's membrane gives no host"
        assert not session._has("executor"), "pid0's membrane gives no executor"
        assert sorted(exports) == sorted(
            ["counter", "reader", "limited", "expiring", "revocable", "revoker", "admin"]
        )
        admin = exports["admin"].as_interface(host_schema.Executor)
        await echo(admin, child_echo, b"through pid0's executor\n")

    run(main())
    # Printed (flushed) before pid0 answered the graft; the reader thread may lag a little.
    membrane_node.wait_for("graft: socket", timeout=10)


def test_reader_may_get_but_not_increment(membrane_node, schemas, counter_schema):
    _, membrane_schema = schemas

    async def main():
        grafted = await graft(membrane_node, membrane_schema)
        exports = grafted.exports
        counter = exports["counter"].as_interface(counter_schema.Counter)
        reader = exports["reader"].as_interface(counter_schema.Counter)
        assert (await counter.increment(by=3)).value == 3
        assert (await reader.get()).value == 3
        with pytest.raises(capnp.KjException) as e:
            await reader.increment(by=1)
        refused(e.value, "UNIMPLEMENTED", "not allowed")
        assert (await counter.get()).value == 3, "the refused increment did nothing"

    run(main())


def test_limited_allows_five_a_second(membrane_node, schemas, counter_schema):
    _, membrane_schema = schemas

    async def main():
        grafted = await graft(membrane_node, membrane_schema)
        exports = grafted.exports
        limited = exports["limited"].as_interface(counter_schema.Counter)
        for _ in range(5):
            await limited.get()
        burst = await asyncio.gather(
            *(limited.get() for _ in range(5)), return_exceptions=True
        )
        errors = [r for r in burst if isinstance(r, Exception)]
        assert errors, "a burst past the bucket is refused"
        for error in errors:
            refused(error, "OVERLOADED", "rate limited")
        await asyncio.sleep(1.0)
        await limited.get()

    run(main())


def test_expiring_expires_and_counter_does_not(membrane_node, schemas, counter_schema):
    _, membrane_schema = schemas

    async def main():
        grafted = await graft(membrane_node, membrane_schema)
        exports = grafted.exports
        counter = exports["counter"].as_interface(counter_schema.Counter)
        expiring = exports["expiring"].as_interface(counter_schema.Counter)
        assert time.monotonic() < membrane_node.serving_at + EXPIRES_MS / 1000, (
            "too slow to call `expiring` before it expires"
        )
        await expiring.get()
        # The clock started when pid0 attenuated, just before it printed `membrane: serving`.
        left = membrane_node.serving_at + EXPIRES_MS / 1000 - time.monotonic()
        await asyncio.sleep(max(left, 0) + 0.5)
        with pytest.raises(capnp.KjException) as e:
            await expiring.get()
        refused(e.value, "DISCONNECTED", "expired")
        await counter.get()

    run(main())


def test_revoker_revokes_revocable_for_everyone(membrane_node, schemas, counter_schema):
    _, membrane_schema = schemas

    async def main():
        grafted = await graft(membrane_node, membrane_schema)
        exports = grafted.exports
        counter = exports["counter"].as_interface(counter_schema.Counter)
        revocable = exports["revocable"].as_interface(counter_schema.Counter)
        revoker = exports["revoker"].as_interface(membrane_schema.Revoker)
        await revocable.increment(by=1)
        await revoker.revoke()
        with pytest.raises(capnp.KjException) as e:
            await revocable.get()
        refused(e.value, "DISCONNECTED", "revoked")
        assert (await counter.get()).value == 1

        regrafted = await graft(membrane_node, membrane_schema)
        again = regrafted.exports
        with pytest.raises(capnp.KjException) as e:
            await again["revocable"].as_interface(counter_schema.Counter).get()
        refused(e.value, "DISCONNECTED", "revoked")
        await again["counter"].as_interface(counter_schema.Counter).get()

    run(main())


def test_fork_and_pipelined_caps_go_stale_with_the_epoch(
    membrane_node, schemas, counter_schema
):
    _, membrane_schema = schemas

    async def main():
        grafted = await graft(membrane_node, membrane_schema)
        session, exports = grafted.session, grafted.exports
        counter = exports["counter"].as_interface(counter_schema.Counter)
        assert (await counter.increment(by=2)).value == 2
        forked = (await counter.fork()).counter
        assert (await forked.increment(by=5)).value == 7
        assert (await counter.get()).value == 2, "a fork is independent"
        # Pipelined: the fork's get goes out before the fork's answer comes back.
        fork_call = counter.fork()
        pipelined = fork_call.counter
        assert (await pipelined.get()).value == 2
        assert (await counter.fork().counter.get()).value == 2

        membrane_node.sighup()
        await wait_epoch_change(session)
        for cap in (forked, counter, pipelined):
            with pytest.raises(capnp.KjException) as e:
                await cap.get()
            refused(e.value, "DISCONNECTED", "stale epoch")

        regrafted = await graft(membrane_node, membrane_schema)
        fresh = regrafted.exports
        assert (await fresh["counter"].as_interface(counter_schema.Counter).get()).value == 2

    run(main())


def test_watcher_is_told_until_the_epoch_revokes_it(membrane_node, schemas, counter_schema):
    _, membrane_schema = schemas
    told: list[int] = []

    class Watcher(counter_schema.Watcher.Server):
        async def changed(self, value, **kwargs):
            told.append(value)

    async def told_of(value):
        deadline = time.monotonic() + 10
        while value not in told:
            assert time.monotonic() < deadline, f"the watcher was not told {value}: {told}"
            await asyncio.sleep(0.02)

    async def main():
        grafted = await graft(membrane_node, membrane_schema)
        session, exports = grafted.session, grafted.exports
        counter = exports["counter"].as_interface(counter_schema.Counter)
        await counter.watch(watcher=Watcher())
        assert (await counter.increment(by=1)).value == 1
        await told_of(1)
        assert (await counter.increment(by=1)).value == 2
        await told_of(2)

        membrane_node.sighup()
        await wait_epoch_change(session)
        regrafted = await graft(membrane_node, membrane_schema)
        fresh = regrafted.exports
        counter = fresh["counter"].as_interface(counter_schema.Counter)
        assert (await counter.increment(by=1)).value == 3
        # Give a call to the old watcher time to arrive, were it still reachable.
        await asyncio.sleep(1.0)
        assert told == [1, 2], "the epoch revoked the watcher passed in before it"

    run(main())


def test_pid0_is_told_who_grafts_and_a_client_cannot_say_otherwise(
    node, membrane_node, schemas, counter_schema
):
    """pid0 hears the caller from the node: a socket client that claims to be a peer is the
    socket still; a network peer is named by the peer id its connection authenticated, and
    gets what pid0 gives peers (no `admin`)."""
    _, membrane_schema = schemas

    async def main():
        client, membrane = await connect(membrane_node, membrane_schema)
        liar = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
        claimed = (await membrane.graft(caller={"peer": liar})).session
        assert "admin" in [e.name for e in claimed.exports]
        membrane_node.wait_for("graft: socket", timeout=10)
        assert f"graft: peer {liar}" not in membrane_node.lines

        # Node A (`node`, a socket client's node) dials B (membrane_node) as a peer.
        _, a_membrane = await connect(node, membrane_schema)
        a = (await a_membrane.graft()).session
        a_id = (await a.host.id()).peerId
        addr, b_id = membrane_node.listen_addr().split("/p2p/")
        remote = (await a.host.connect(peerId=b_id, addrs=[addr])).membrane
        theirs = (await remote.graft()).session
        names = [e.name for e in theirs.exports]
        assert "admin" not in names and "counter" in names, names
        membrane_node.wait_for(f"graft: peer {a_id}", timeout=10)
        counter = [e.cap for e in theirs.exports if e.name == "reader"][0]
        counter = counter.as_interface(counter_schema.Counter)
        assert (await counter.get()).value >= 0

    run(main())
