"""The live-swap part of the demo: a running runtime picks up a re-signed plan with no restart.

In a scratch copy of the project: compile the prod target, sign it (a demo
key, serial 1), start `oneiric run --manifest` on it with the shop's app loop
(`shopdemo.app:count_visits`, which calls the cache component through its
handle), show what runs, which instance answers and why; change the cache
selection in the copied stacks, rebuild, re-sign (serial 2) over the same
manifest file, and show the running process swapping live (the app's calls,
status and explanation before and after), then stop it cleanly (SIGTERM).
Nothing needs a server: the prod stack's "redis" and "memcached" caches are
in-memory stand-ins.  `main()` returns an exit status; demo/run.py may call it.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


def _cli(program: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", program, *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{program} {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _status(state: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state / "status.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data


def _wait(state: Path, ok: Any, what: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the runtime exited ({proc.returncode}) while waiting for {what}")
        status = _status(state)
        if status is not None and ok(status):
            return status
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """The stream's lines as they come (None at its end), read by a daemon thread."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _app_line(lines: queue.Queue[str | None], wanted: str) -> str:
    """The app's next output line containing `wanted` (earlier lines are skipped)."""
    deadline = time.monotonic() + 30
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            raise RuntimeError(f"the runtime's output ended before {wanted!r}")
        if wanted in line:
            return line
    raise RuntimeError(f"timed out waiting for the app to print {wanted!r}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="oneiric-live-") as scratch:
        work = Path(scratch)
        shutil.copy(ROOT / "oneiric.toml", work)
        shutil.copytree(ROOT / "stacks", work / "stacks")
        (work / "config" / "secrets" / "payments").mkdir(parents=True)
        (work / "config" / "secrets" / "payments" / "api-key").write_text("demo-not-a-secret\n")
        state, manifest = work / "state", work / "prod.dsse.json"
        key, trust = work / "demo.key", work / "trust.json"

        def build_and_sign(serial: int) -> None:
            _cli("oneiricc", "build", "--target", "prod", "--out", "prod.plan.json", cwd=work)
            _cli(
                "oneiricc",
                "sign",
                "prod.plan.json",
                "--key",
                str(key),
                "--serial",
                str(serial),
                "--expires",
                "1d",
                "--out",
                "prod.dsse.new",
                cwd=work,
            )
            os.replace(work / "prod.dsse.new", manifest)  # one atomic rename: no torn manifest

        _cli("oneiricc", "keygen", "--out", str(key), cwd=work)
        _cli(
            "oneiricc",
            "trust",
            "init",
            "--key",
            f"{key}.pub",
            "--threshold",
            "1",
            "--out",
            str(trust),
            cwd=work,
        )
        build_and_sign(1)
        print("== signed prod plan, serial 1; starting `oneiric run --manifest prod.dsse.json`")
        env = {
            "ONEIRIC_CONFIG": str(work / "config"),
            "SHOP_DB": str(work / "shop.db"),
            "ONEIRIC_PROFILE": "default",
            "LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oneiric",
                "run",
                "--manifest",
                str(manifest),
                "--trust",
                str(trust),
                "--target",
                "prod",
                "--state",
                str(state),
                "--app",
                "shopdemo.app:count_visits",
            ],
            cwd=work,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=(work / "runtime.log").open("wb"),
            text=True,
        )
        assert proc.stdout is not None
        app = _lines(proc.stdout)
        try:
            before = _wait(
                state,
                lambda s: s["state"] == "running" and s["watching"],
                "the runtime to be ready",
                proc,
            )
            show = ["--state", str(state)]
            print(
                f"   running serial {before['plan']['serial']}: adapter:cache → "
                f"{before['components']['adapter:cache']['provider']}"
            )
            print("   " + _app_line(app, "answered by provider 'redis'"))
            print(
                '   (the prod stack\'s "redis" and "memcached" caches are in-memory stand-ins, '
                "shopdemo.cache.MemoryCache,\n    so the demo needs no server; "
                "oneiric.adapters.redis and .memcached are the real clients)"
            )
            print(_cli("oneiric", "explain", "adapter:cache", *show, cwd=work))
            prod = work / "stacks" / "prod.oneiric"
            prod.write_text(
                prod.read_text().replace(
                    'select adapter cache = "redis"', 'select adapter cache = "memcached"'
                )
            )
            print('== stacks/prod.oneiric: select adapter cache = "memcached"; rebuild, re-sign')
            started = time.monotonic()
            build_and_sign(2)
            after = _wait(state, lambda s: s["plan"]["serial"] == 2, "the live swap", proc)
            swap = after["last_swap"]
            print(
                f"   swapped live in {time.monotonic() - started:.2f} s (build and sign "
                f"included): changed {', '.join(swap['changed'])}; same pid {after['pid']}"
            )
            print("   " + _app_line(app, "answered by provider 'memcached'"))
            print("   (a new instance answers: its cache starts empty; the app never restarted)")
            print(_cli("oneiric", "explain", "adapter:cache", *show, cwd=work))
            print(_cli("oneiric", "health", *show, cwd=work))
        except Exception:
            proc.kill()
            proc.wait(30)
            sys.stderr.write((work / "runtime.log").read_text())
            raise
        proc.send_signal(signal.SIGTERM)
        print("   " + _app_line(app, "app: stopped after"))
        code = proc.wait(30)
        print(f"== SIGTERM: drained, cleaned up in reverse activation order, exit {code}")
        return code


if __name__ == "__main__":
    sys.exit(main())
