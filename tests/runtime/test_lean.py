"""The runtime stays lean: no compiler dependencies, a fast CLI, lazy heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest_paths import ROOT

PROBE = """
import json, sys
import oneiric.runtime, oneiric.supervisor, oneiric.sources, oneiric.commands.runtime
import oneiric.adapters.memory, oneiric.adapters.sqlite, oneiric.adapters.localfs
print(json.dumps(sorted(sys.modules)))
"""


def test_runtime_never_imports_compiler_dependencies() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    modules = set(json.loads(out))
    assert not {"lark", "jinja2", "networkx", "oneiricc"} & {m.split(".")[0] for m in modules}


def test_status_command_imports_nothing_heavy() -> None:
    probe = (
        "import sys, json; sys.argv=['oneiric','status','--state','/nonexistent'];"
        "from oneiric.cli import main\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT
    ).stdout
    modules = {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}
    assert not {"pydantic", "anyio", "httpx", "nacl", "structlog", "watchfiles"} & modules


MEASURE = """
import resource, subprocess, sys, time
best = float("inf")
for _ in range(3):
    started = time.perf_counter()
    subprocess.run([sys.executable, *sys.argv[1:]], capture_output=True)
    best = min(best, time.perf_counter() - started)
print(best, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measure(*argv: str) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    return float(out[0]), int(out[1])


def test_help_and_status_start_fast_and_small() -> None:
    # The goal is 0.2 s; on a loaded machine, allow what 5 bare interpreter starts take there.
    bare, _ = measure("-c", "pass")
    for args in (["--help"], ["status", "--state", "/nonexistent"]):
        # Measured from a fresh parent so that the peak RSS is this command's alone.
        seconds, peak_kib = measure("-m", "oneiric", *args)
        assert seconds < max(0.2, 5 * bare), f"oneiric {' '.join(args)} took {seconds:.3f}s"
        assert peak_kib < 50 * 1024, f"oneiric {' '.join(args)} peaked at {peak_kib} KiB"
