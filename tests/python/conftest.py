"""Fixtures for the pycapnp interop tests: a running `ww run --rpc-socket` and the schemas.

The tests load capnp/host.capnp and capnp/membrane.capnp unchanged, as any Python client
would. `ww` is the binary in $WW_BIN, else target/debug/ww (built by `cargo build -p ww`).
"""

import os
import pathlib
import signal
import subprocess
import tempfile
import time

import capnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "capnp"


def ww_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("WW_BIN", ROOT / "target" / "debug" / "ww"))
    if not path.is_file():
        pytest.exit(f"no ww binary at {path}: run `cargo build -p ww` or set WW_BIN", 2)
    return path


def image(name: str) -> pathlib.Path:
    path = ROOT / "examples" / "images" / name
    if not (path / "bin" / "main.wasm").is_file():
        pytest.exit(f"{path}/bin/main.wasm is missing: run `cargo xtask images`", 2)
    return path


@pytest.fixture(scope="session")
def schemas():
    """The two schemas, loaded from capnp/ as they are."""
    membrane = capnp.load(str(SCHEMAS / "membrane.capnp"), imports=[str(SCHEMAS)])
    host = capnp.load(str(SCHEMAS / "host.capnp"), imports=[str(SCHEMAS)])
    return host, membrane


@pytest.fixture(scope="session")
def child_echo() -> bytes:
    return (image("child-echo") / "bin" / "main.wasm").read_bytes()


class Node:
    """A `ww run --rpc-socket` whose pid0 (testbed `block`) runs until its stdin closes."""

    def __init__(self, socket: pathlib.Path, process: subprocess.Popen):
        self.socket = socket
        self.process = process

    def sighup(self):
        os.kill(self.process.pid, signal.SIGHUP)

    def stop(self) -> int:
        self.process.stdin.close()
        return self.process.wait(timeout=30)


@pytest.fixture
def node():
    with tempfile.TemporaryDirectory() as tmp:
        socket = pathlib.Path(tmp) / "ww.sock"
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.pop("WW_ENV", None)
        env.setdefault("WW_CACHE_DIR", str(ROOT / "target" / "test-cache"))
        process = subprocess.Popen(
            [str(ww_binary()), "run", "--rpc-socket", str(socket), str(image("testbed")), "block"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while not socket.exists():
                if process.poll() is not None:
                    pytest.fail(f"ww exited with {process.returncode} before creating its socket")
                if time.monotonic() > deadline:
                    pytest.fail("ww created no socket within a minute")
                time.sleep(0.01)
            node = Node(socket, process)
            yield node
            assert node.stop() == 0
            assert not socket.exists(), "the socket outlived ww"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
