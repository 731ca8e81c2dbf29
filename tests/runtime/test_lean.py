"""The runtime stays lean: no compiler dependencies, a fast CLI, lazy heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest_paths import ROOT

PROBE = """
import json, sys
import oneiric, oneiric._lifecycle.runtime, oneiric._lifecycle.supervisor
import oneiric._delivery.sources, oneiric._cli.runtime
import oneiric.adapters.memory, oneiric.adapters.sqlite, oneiric.adapters.localfs
print(json.dumps(sorted(sys.modules)))
"""


def test_runtime_never_imports_compiler_dependencies() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    modules = set(json.loads(out))
    assert not {"lark", "jinja2", "networkx", "oneiricc"} & {m.split(".")[0] for m in modules}


# The optional extras' drivers: never imported by `import oneiric` or `oneiric --help`.
DRIVERS = {
    "redis",
    "pymemcache",
    "psycopg",
    "psycopg_pool",
    "pymysql",
    "duckdb",
    "boto3",
    "botocore",
    "nats",
    "msgpack",
    "jsonschema",
}


def test_import_and_help_pull_in_no_optional_driver() -> None:
    probe = (
        "import sys, json, oneiric, oneiric.adapters, oneiric.actions, oneiric.adapters.pool\n"
        "sys.argv=['oneiric','--help']\n"
        "from oneiric._cli.main import main\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    modules = {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}
    assert not DRIVERS & modules


def test_status_command_imports_nothing_heavy() -> None:
    probe = (
        "import sys, json; sys.argv=['oneiric','status','--state','/nonexistent'];"
        "from oneiric._cli.main import main\n"
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
import resource, subprocess, sys
cpu = float("inf")
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *sys.argv[1:]], capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = min(cpu, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
print(cpu, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def measure(env: dict[str, str], *argv: str) -> tuple[float, int]:
    """Best CPU time (user + system) of 3 runs and the peak RSS (KiB), from a fresh parent."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    ).stdout.split()
    return float(out[0]), int(out[1])


def test_help_and_status_start_fast_and_small(tmp_path: Path) -> None:
    # CPU time, not wall time: on this shared, loaded machine wall time mostly measures the
    # other processes.  With a bytecode cache, as an installed package has (the development
    # environment sets PYTHONDONTWRITEBYTECODE and the venv holds no .pyc files).
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for args in (["--help"], ["status", "--state", "/nonexistent"], ["list", "--state", "/x"]):
        subprocess.run([sys.executable, "-m", "oneiric", *args], env=env, capture_output=True)
        seconds, peak_kib = measure(env, "-m", "oneiric", *args)
        assert seconds < 0.2, f"oneiric {' '.join(args)} used {seconds:.3f}s of CPU"
        assert peak_kib < 50 * 1024, f"oneiric {' '.join(args)} peaked at {peak_kib} KiB"


def test_drivers_are_imported_only_when_used() -> None:
    """redis-py and psycopg are optional extras: the flow modules and CLI load without them."""
    probe = (
        "import sys, json\n"
        "import oneiric._flows.events, oneiric._flows.workflows, oneiric._flows.store\n"
        "import oneiric._flows.streams, oneiric._flows.redis_events, oneiric._cli.flows\n"
        "sys.argv = ['oneiric', 'event', '--help']\n"
        "from oneiric._cli.main import main\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    modules = {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}
    assert not {"redis", "psycopg", "psycopg_pool"} & modules
