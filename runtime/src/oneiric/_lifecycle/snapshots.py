"""Snapshot files a probe or the CLI reads without talking to the running process.

The runtime writes each file whole to a temporary name in the same directory,
fsyncs it, then renames it over the old one: a reader sees the old snapshot
or the new one, never a torn file.  Standard library only (the CLI reads
these and must start fast).

    status.json  the running plan (digest, serial, target, profile), each
                 component's provider, generation, in-flight and call counts,
                 pause state, the last swap and the last rejected plan; pid,
                 pid_start (the process's start time, so a reused pid is not
                 taken for the runtime) and updated_at, a heartbeat rewritten
                 every second from start to exit.
    health.json  {"healthy", "pid", "checked_at", "expires_at", "components"}
    last-good.json  {"serial", "source", "applied_at", "plan"}: the running
                 plan once it passed probation; a restart starts from it and
                 `oneiric explain` reads it.
    remote-sync.json  {"pid", "source", "written_at", "counts"}: the polls of
                 `oneiric remote-sync --watch` by outcome, rewritten after each.
    consumers/NAME.json, workers/NAME.json, runtimes/OWNER.json,
    schedulers/OWNER.json  the processes beside the runtime (`oneiric event
                 consume`, `worker`, `workflow serve`, `task serve`): pid,
                 pid_start, state, written_at (a heartbeat, every
                 second), counters and their connections (`broker`, `store`,
                 `tasks`); read back by `fleet`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from oneiric._delivery.store import atomic_write

STATUS = "status.json"
HEALTH = "health.json"
LAST_GOOD = "last-good.json"
REMOTE_SYNC = "remote-sync.json"
STATE_ENV = "ONEIRIC_STATE"
# Directories of the status files of the processes beside the runtime.
FLEET = ("consumers", "workers", "runtimes", "schedulers")
CONNECTIONS = ("broker", "store", "tasks")  # keys of their connections
# A snapshot not rewritten for this long is from a dead or wedged runtime (it is
# rewritten every second; the margin covers a loaded machine).
STALE_AFTER_S = 8.0
DEFAULT_STATE_DIR = ".oneiric"


def state_dir(option: str | None) -> Path:
    """`--state DIR`, else $ONEIRIC_STATE, else ./.oneiric."""
    return Path(option or os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def write_json(path: Path, value: Any) -> None:
    """Write `value` as compact JSON with `state.atomic_write` (temp file, fsync, rename).

    Compact (no indent) so that the C encoder runs: a status of 1,000 components
    is written in milliseconds.
    """
    atomic_write(path, _encode(value) + b"\n")


def write_last_good(path: Path, meta: dict[str, Any], plan: bytes) -> None:
    """last-good.json: `meta` plus "plan", the plan's own (valid JSON) bytes, not re-encoded."""
    assert meta
    assert "plan" not in meta
    atomic_write(path, _encode(meta)[:-1] + b',"plan":' + plan + b"}\n")


def _encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def read_json(path: Path) -> Any:
    """The snapshot's content; None when it does not exist yet."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat); None if unknown.

    Together with the pid this names one process: a pid reused by another
    process has another start time.
    """
    fields = _stat(pid)
    return fields[19].decode() if len(fields) > 19 else None


def _stat(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after "pid (comm) " (state first); [] if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    return data[data.rindex(b")") + 2 :].split()


def runtime_alive(snapshot: dict[str, Any]) -> bool:
    """The process that wrote `snapshot` still runs: its pid is alive (not a zombie left
    unreaped by its parent) and not reused."""
    pid = int(snapshot["pid"])
    if not pid_alive(pid):
        return False
    fields = _stat(pid)
    if fields[:1] == [b"Z"]:
        return False
    recorded = snapshot.get("pid_start")
    return recorded is None or len(fields) <= 19 or fields[19].decode() == recorded


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(snapshot: dict[str, Any], heartbeat: str) -> bool:
    """The process that wrote `snapshot` is alive: not stopped, its pid neither gone nor
    reused, and its `heartbeat` (a time rewritten every second) fresh."""
    return (
        snapshot.get("state") != "stopped"
        and runtime_alive(snapshot)
        and time.time() - float(snapshot.get(heartbeat, 0)) <= STALE_AFTER_S
    )


def fleet(state: Path) -> dict[str, list[dict[str, Any]]]:
    """The status files of the processes beside the runtime, by directory (`FLEET`).

    Each gets `name`, `alive` (`running`, by `written_at`) and `heartbeat_age_s`.
    A dead process's last words are not the truth: its `state` becomes
    "not running" (the last one kept as `last_state`) and its connections'
    state "unknown".  Unreadable or foreign files are skipped.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    now = time.time()
    for kind in FLEET:
        found[kind] = processes = []
        directory = state / kind
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.json")):
            try:
                data = read_json(path)
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
                continue
            data["name"] = str(data.get("consumer") or data.get("owner") or path.stem)
            data["alive"] = alive = running(data, "written_at")
            data["heartbeat_age_s"] = round(now - float(data.get("written_at", 0)), 1)
            if not alive:
                data["last_state"], data["state"] = data.get("state"), "not running"
                for role in CONNECTIONS:
                    if isinstance(data.get(role), dict):
                        data[role]["last_state"] = data[role].get("state")
                        data[role].update(state="unknown", connected=False)
            processes.append(data)
    return found
