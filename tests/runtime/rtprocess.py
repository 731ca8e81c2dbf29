"""Helpers for runtime tests that drive `oneiric` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_paths import ROOT, RUNTIME_TESTS
from oneiric._plan.model import Plan


def write_plan(path: Path, value: Plan | bytes) -> None:
    data = value if isinstance(value, bytes) else value.to_bytes()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def oneiric(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oneiric", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        cwd=ROOT,
    )


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class Running:
    def __init__(
        self, tmp: Path, source: list[str], *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.state = tmp / "state"
        self.events = tmp / "events.jsonl"
        self.events.touch()
        self.stderr = tmp / "stderr.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oneiric",
                "run",
                *source,
                "--state",
                str(self.state),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr.open("wb"),
            cwd=ROOT,
            env={
                **os.environ,
                "LOG_LEVEL": "info",  # the tests wait for its lifecycle log lines
                "PYTHONPATH": str(RUNTIME_TESTS),
                "RT_EVENTS": str(self.events),
                **(env or {}),
            },
        )

    def status(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.state / "status.json").read_bytes())
            return data
        except (FileNotFoundError, ValueError):
            return None

    def wait_running(self, digest: str | None = None, watching: bool = True) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            assert self.proc.poll() is None, self.stderr.read_text()
            status = self.status()
            if (
                status
                and status["state"] == "running"
                and (digest is None or status["plan"]["digest"] == digest)
                and (status["watching"] or not watching)
            ):
                return status
            return None

        return wait_for(ok, what=f"running on {digest}")  # type: ignore[no-any-return]

    def events_of(self, what: str) -> list[list[Any]]:
        lines = self.events.read_text().splitlines()
        return [e for e in map(json.loads, lines) if e[0] == what]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def logs(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.stderr.read_text().splitlines()
            if line.startswith("{")
        ]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(source: Path | list[str], *extra: str, env: dict[str, str] | None = None) -> Running:
        args = source if isinstance(source, list) else ["--unsigned-plan", str(source)]
        run = Running(tmp_path, args, *extra, env=env)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)
