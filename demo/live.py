"""The live-swap part of the demo: a running runtime picks up a re-signed plan with no restart.

In a scratch copy of the project: compile the prod target, sign it (a demo
key, serial 1), start `oneiric run --manifest` on it, show what runs and why,
change the cache selection in the copied stacks, rebuild, re-sign (serial 2)
over the same manifest file, and show the running process swapping live
(status and explanation before and after), then stop it cleanly (SIGTERM).
Nothing needs a server.  `main()` returns an exit status; demo/run.py may call it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _wait(state: Path, ok: Any, what: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the runtime exited ({proc.returncode}) while waiting for {what}")
        status = _status(state)
        if status is not None and ok(status):
            return status
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


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
                "--state",
                str(state),
            ],
            cwd=work,
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
        )
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
            print(_cli("oneiric", "explain", "adapter:cache", *show, cwd=work))
            print(_cli("oneiric", "health", *show, cwd=work))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        print(f"== SIGTERM: drained, cleaned up in reverse activation order, exit {code}")
        return code


if __name__ == "__main__":
    sys.exit(main())
