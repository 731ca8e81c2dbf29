"""Soak: 1,000 plan versions through a live supervisor under 100 callers, with faults.

A real `Supervisor` watches a real plan file (as `oneiric run --unsigned-plan`
does) while 100 threads call the component through its handle.  Each step
writes plan versions with one injected fault chosen at random (seeded):

* 5 % fail activation (the constructor raises),
* 2 % hang past their activation timeout (the worker is abandoned),
* 5 % fail their health check,
* 3 % are torn writes (half a plan, left in place),
* 3 % are bursts of 5 good plans written back to back,
* the rest are one good plan.

Afterwards: no call failed, no call was ever served by a faulty plan, every
faulty plan was aborted (never bound, its instance torn down), the final
plan is the newest good one, and status.json's counters equal the faults
injected.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
import rtcomponents
from oneiric._delivery.sources import UnsignedPlanFile
from oneiric._lifecycle import snapshots
from oneiric._lifecycle.supervisor import Settings, Supervisor
from oneiric._plan.model import Plan
from planbuild import component, plan
from rtprocess import write_plan

CACHE = "adapter:cache"
VERSIONS = 1000
CALLERS = 100
HANG_MS = 400  # past the 100 ms activation timeout
FAULTS = (
    ("fail_activation", 0.05),
    ("hang", 0.02),
    ("fail_health", 0.05),
    ("torn", 0.03),
    ("burst", 0.03),
)
BURST = 5


def version(index: int, fault: str | None = None) -> Plan:
    config: dict[str, Any] = {}
    timeout = None
    if fault == "fail_activation":
        config["fail_activate"] = True
    elif fault == "hang":
        config["activate_sleep_ms"] = HANG_MS
        timeout = 100
    elif fault == "fail_health":
        config["unhealthy"] = True
    return plan(
        component(
            CACHE, f"p{index}", config=config, activate_timeout_ms=timeout, drain_timeout_ms=5000
        )
    )


def wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_thousand_swaps_under_a_hundred_callers_with_faults(tmp_path: Path) -> None:
    rng = random.Random(20)
    plan_path = tmp_path / "plan.json"
    first = version(0)
    write_plan(plan_path, first)
    supervisor = Supervisor(
        Settings(state=tmp_path / "state", source=UnsignedPlanFile(plan_path), handle_signals=False)
    )
    failures: list[BaseException] = []
    served: Counter[str] = Counter()
    stop = threading.Event()
    lock = threading.Lock()

    def caller() -> None:
        handle = supervisor.handle(CACHE)
        seen: Counter[str] = Counter()
        while not stop.is_set():
            try:
                seen[handle.who()] += 1
            except Exception as exc:
                failures.append(exc)
            time.sleep(0.01)
        with lock:
            served.update(seen)

    def bound() -> str | None:
        running = supervisor.runtime.plan
        return running.digest if running else None

    injected: Counter[str] = Counter()
    faulty: set[str] = set()  # digests
    faulty_tags: dict[str, str] = {}  # component tag → fault
    newest_good = first
    with anyio.from_thread.start_blocking_portal() as portal:
        running = portal.start_task_soon(supervisor.run)
        wait(lambda: supervisor.state == "running", "the supervisor to run")
        threads = [threading.Thread(target=caller, daemon=True) for _ in range(CALLERS)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        try:
            written = 0
            while written < VERSIONS:
                roll, fault = rng.random(), None
                for name, share in FAULTS:
                    if roll < share:
                        fault = name
                        break
                    roll -= share
                counters = supervisor.counters
                if fault == "burst":
                    burst = [version(written + i + 1) for i in range(BURST)]
                    for item in burst:
                        write_plan(plan_path, item)
                        time.sleep(rng.uniform(0, 0.01))
                    written += BURST
                    newest_good = burst[-1]
                    injected["burst"] += 1
                    wait(lambda d=newest_good.digest: bound() == d, "the burst's last plan")
                    continue
                written += 1
                if fault == "torn":
                    rejected = counters.rejected
                    data = version(written).to_bytes()
                    plan_path.write_bytes(data[: rng.randrange(1, len(data) - 1)])
                    injected["torn"] += 1
                    wait(lambda: counters.rejected == rejected + 1, "a torn write rejected")  # noqa: B023
                    continue
                item = version(written, fault)
                if fault is None:
                    write_plan(plan_path, item)
                    newest_good = item
                    wait(lambda d=item.digest: bound() == d, "a swap")
                else:
                    aborted = counters.aborted
                    faulty.add(item.digest or "")
                    faulty_tags[f"cache-p{written}"] = fault
                    write_plan(plan_path, item)
                    injected[fault] += 1
                    wait(lambda: counters.aborted == aborted + 1, f"{fault} aborted")  # noqa: B023
            elapsed = time.monotonic() - started
            time.sleep(0.5)  # any late swap or problem would show now
        finally:  # a failure must not leave 100 callers running
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        portal.call(supervisor.request_stop)
        assert running.result(timeout=60) == []

    status = snapshots.read_json(tmp_path / "state" / snapshots.STATUS)
    calls = sum(served.values())
    print(
        f"\nsoak: {written} versions in {elapsed:.1f}s, {calls} calls, injected "
        f"{dict(injected)}, swaps {status['swaps']}, superseded {status['superseded']}"
    )
    assert failures == []
    assert calls > CALLERS * 10
    assert not set(served) & set(faulty_tags), "a faulty plan served calls"
    assert set(served) <= {f"cache-p{i}" for i in range(written + 1)}
    history = set(supervisor.counters.history)
    assert not history & faulty, "a faulty plan was bound"
    assert supervisor.counters.history[-1] == newest_good.digest
    assert status["state"] == "stopped"
    assert status["last_swap"]["digest"] == newest_good.digest
    last_good = snapshots.read_json(tmp_path / "state" / snapshots.LAST_GOOD)
    assert last_good["plan"]["digest"] == newest_good.digest
    assert (
        status["aborted"]
        == injected["fail_activation"] + injected["hang"] + injected["fail_health"]
    )
    assert status["rejected"] == injected["torn"]
    assert status["rolled_back"] == 0
    assert status["unreachable"] == 0
    singles = (
        written
        - BURST * injected["burst"]
        - sum(injected[f] for f in ("fail_activation", "hang", "fail_health", "torn"))
    )
    # Each good single write is one swap; a burst one or two (two when the writer
    # paused longer than the settle window mid-burst).
    assert singles + injected["burst"] <= status["swaps"] <= singles + 2 * injected["burst"]
    assert status["drain_overruns"] == {}
    # Every instance was torn down: faulty ones at their abort (a hung one once its
    # constructor returned), good ones when replaced or at stop.
    wait(lambda: not rtcomponents.LIVE, "every instance closed", timeout=HANG_MS / 1000 + 10)
    activated = Counter(e[1] for e in rtcomponents.EVENTS if e[0] == "activate")
    closed = Counter(e[1] for e in rtcomponents.EVENTS if e[0] == "close")
    # Only a constructor that raised made nothing to close.
    never_made = Counter(t for t, f in faulty_tags.items() if f == "fail_activation")
    assert activated - closed == never_made
    assert all(n == 1 for n in activated.values())
