"""The typed embedding API: `Runtime` as `async with` and `with`, `Handle[T]`, waiting.

The examples of docs/components.md (examples/embedding) are run here as
programs, and type-checked with mypy --strict, good and bad.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from minikit import cli
from oneiric import ComponentPaused, Runtime
from oneiric._lifecycle.handle import Handle, Slot
from oneiric.protocols import Cache, Database
from support import ROOT

EXAMPLE = ROOT / "examples" / "embedding"
BAD_APP = (
    "from oneiric import Runtime\n"
    "from oneiric.protocols import Cache\n\n\n"
    "def main(runtime: Runtime) -> None:\n"
    '    cache = runtime.handle("adapter:cache", Cache)\n'
    '    cache.api.set("k", "not bytes")\n'
    '    cache.api.fetch("k")\n'
    "    size: int = cache.api.get('k')\n"
)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embedding") / "embedding"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("golden", ".oneiric-cache"))
    built = cli("oneiricc", "build", cwd=root)
    assert built.returncode == 0, built.stderr
    return root


@pytest.mark.parametrize("program", ["async_app.py", "sync_app.py"])
def test_the_examples_run(example: Path, program: str) -> None:
    result = subprocess.run(
        [sys.executable, program], cwd=example, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    if program == "async_app.py":
        assert "hello, ada / welcome back, ada" in result.stdout
        assert "cache memory gen 1: b'1'" in result.stdout
    else:
        assert "adapter:cache via memory: b'hello'" in result.stdout


def test_an_async_app_is_awaited_on_the_runtime_loop(example: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oneiric",
            "run",
            "--unsigned-plan",
            "golden/dev.plan.json",
            "--state",
            "state",
            "--app",
            "hello.app:serve",
        ],
        cwd=example,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "app: b'yes' from memory\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "app failed" not in err


def _mypy(directory: Path, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_mypy_understands_typed_handles(example: Path) -> None:
    good = _mypy(example, "async_app.py", "sync_app.py", "src/hello/app.py")
    assert good.returncode == 0, good.stdout
    (example / "bad_app.py").write_text(BAD_APP, encoding="utf-8")
    bad = _mypy(example, "bad_app.py")
    assert bad.returncode == 1
    assert 'Argument 2 to "set" of "CacheWriter" has incompatible type "str"' in bad.stdout
    assert '"Cache" has no attribute "fetch"' in bad.stdout
    assert 'has type "bytes | None", variable has type "int"' in bad.stdout


@pytest.mark.slow
def test_pyright_understands_typed_handles(example: Path) -> None:
    pyright = [str(Path(sys.executable).parent / "basedpyright"), "--pythonpath", sys.executable]
    files = ["async_app.py", "sync_app.py", "src/hello/app.py"]
    good = subprocess.run(
        [*pyright, *files], cwd=example, capture_output=True, text=True, timeout=300
    )
    assert good.returncode == 0, good.stdout
    (example / "bad_pyright.py").write_text(BAD_APP, encoding="utf-8")
    bad = subprocess.run(
        [*pyright, "bad_pyright.py"], cwd=example, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 1
    assert '"Literal[\'not bytes\']" cannot be assigned to parameter "value"' in bad.stdout
    assert 'Cannot access attribute "fetch" for class "Cache"' in bad.stdout
    assert 'Type "bytes | None" is not assignable to declared type "int"' in bad.stdout


class Shadowing:
    """A component whose method names are the handle's own attribute names."""

    def id(self) -> str:
        return "component id"

    def provider(self) -> str:
        return "component provider"

    def use(self) -> str:
        return "component use"

    def paused(self) -> bool:
        return False

    def generation(self) -> int:
        return 42


def _bound(instance: Any, cid: str = "service:x") -> Handle[Any]:
    handle: Handle[Any] = Handle(cid)
    handle.bind(Slot(instance, "p", 7))
    return handle


def test_the_api_reaches_every_method_the_handle_defines_too() -> None:
    handle = _bound(Shadowing())
    assert (handle.id, handle.provider, handle.generation, handle.paused) == (
        "service:x",
        "p",
        7,
        False,
    )
    api = handle.api
    assert [api.id(), api.provider(), api.use(), api.paused(), api.generation()] == [
        "component id",
        "component provider",
        "component use",
        False,
        42,
    ]
    assert handle.counts()[0] == 5


def test_wait_ready_waits_for_a_resume_and_raises_after_the_timeout() -> None:
    handle = _bound(Shadowing())
    handle.paused = True
    began = time.monotonic()
    with pytest.raises(ComponentPaused):
        handle.wait_ready(0.2)
    assert time.monotonic() - began >= 0.2
    threading.Timer(0.1, lambda: setattr(handle, "paused", False)).start()
    handle.wait_ready(5.0)
    assert handle.api.id() == "component id"

    async def main() -> None:
        handle.paused = True
        with pytest.raises(ComponentPaused):
            await handle.until_ready(0.05)
        threading.Timer(0.05, lambda: setattr(handle, "paused", False)).start()
        await handle.until_ready(5.0)

    anyio.run(main)


def test_a_kind_that_does_not_fit_is_refused(example: Path) -> None:
    async def main() -> None:
        async with Runtime(example / "golden" / "dev.plan.json") as runtime:
            assert isinstance(runtime.handle("adapter:cache", Cache).api.get("x"), type(None))
            with pytest.raises(TypeError, match="adapter:cache is MemoryCache"):
                runtime.handle("adapter:cache", Database)
        assert runtime.plan is None  # stopped at the block's end

    anyio.run(main)


def test_the_docs_show_the_examples_verbatim() -> None:
    docs = (ROOT / "docs" / "components.md").read_text(encoding="utf-8")
    for name in ("async_app.py", "sync_app.py", "src/hello/app.py"):
        assert (EXAMPLE / name).read_text(encoding="utf-8") in docs, name
