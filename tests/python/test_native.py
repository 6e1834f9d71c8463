"""A native cell: a Python program that ww runs in its jail, speaking pycapnp on fd 3.

The cell grafts onto the membrane ww serves on fd 3, calls host.id(), spawns child-echo (by
its bytes) through the executor, writes to it and reads its echo, and prints what it got.
The image holds the program in bin/, the schemas and child-echo beside it: the jail lets the
cell read its own image, nothing else of the test's files."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from conftest import ROOT, SCHEMAS, image, ww_binary

CELL = """#!{python}
import asyncio, pathlib, socket, sys
import capnp

root = pathlib.Path(__file__).resolve().parent.parent
membrane_capnp = capnp.load(str(root / "capnp" / "membrane.capnp"), imports=[str(root / "capnp")])
echo = (root / "child-echo.wasm").read_bytes()

async def main():
    connection = await capnp.AsyncIoStream.create_connection(sock=socket.socket(fileno=3))
    membrane = capnp.TwoPartyClient(connection).bootstrap().cast_as(membrane_capnp.Membrane)
    session = (await membrane.graft()).session
    print("id", (await session.host.id()).peerId, flush=True)
    spawned = await session.executor.spawn(
        program={{"bytes": echo}},
        options={{"stdin": "pipe", "stdout": "pipe", "stderr": "null"}},
    )
    process = spawned.process
    stdin, stdout = (await process.stdin()).stream, (await process.stdout()).stream
    await stdin.write(b"hello from a native cell\\n")
    await stdin.close()
    chunks = []
    while True:
        data = (await stdout.read(65536)).data
        if not data:
            break
        chunks.append(data)
    print("echo", b"".join(chunks).decode().strip(), flush=True)
    print("child", (await process.wait()).status.exited, flush=True)

asyncio.run(capnp.run(main()))
sys.exit(3)
"""


def test_a_python_cell_grafts_over_fd_3_and_spawns_a_wasm_child():
    python = pathlib.Path(sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        img = pathlib.Path(tmp) / "pycell"
        (img / "bin").mkdir(parents=True)
        shutil.copytree(SCHEMAS, img / "capnp")
        shutil.copy(image("child-echo") / "bin" / "main.wasm", img / "child-echo.wasm")
        program = img / "bin" / "cell"
        program.write_text(CELL.format(python=python))
        program.chmod(0o755)
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.pop("WW_ENV", None)
        env.setdefault("WW_CACHE_DIR", str(ROOT / "target" / "test-cache"))
        out = subprocess.run(
            [str(ww_binary()), "-v", "run", str(img)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        protections = [l for l in out.stderr.splitlines() if "jail:" in l]
        print("\n".join(protections))
        assert out.returncode == 3, out
        lines = out.stdout.splitlines()
        assert any(l.startswith("id 12D3KooW") for l in lines), out
        assert "echo hello from a native cell" in lines, out
        assert "child 0" in lines, out
