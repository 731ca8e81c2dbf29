"""The main job, end to end on embedded defaults (files and SQLite, no server).

Run with `make demo`:

1. compile every target in stacks/ and summarise each plan (`oneiricc`);
2. sign the prod plan, run it with `oneiric run`, call a component, change a
   selection, rebuild and re-sign, and watch the running process swap live
   (demo/live.py);
3. run the fulfilment workflow and emit events through the plan's routes
   (demo/flows.py).

Every step drives the real command lines, so what it shows is what a user gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def oneiricc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oneiricc", *args], cwd=ROOT, text=True, capture_output=True
    )


def main() -> int:
    check = oneiricc("check", "--format", "json")
    report = json.loads(check.stdout)
    for diag in report["diagnostics"]:
        print(
            f"{diag['severity']}[{diag['code']}] {diag['file']}:{diag['line']}: {diag['message']}"
        )
    if check.returncode != 0:
        print(check.stderr, file=sys.stderr)
        return check.returncode
    with tempfile.TemporaryDirectory() as scratch:
        for target in report["targets"]:
            out = Path(scratch) / f"{target}.plan.json"
            built = oneiricc("build", "--target", target, "--out", str(out))
            if built.returncode != 0:
                print(built.stderr, file=sys.stderr)
                return built.returncode
            plan = json.loads(out.read_bytes())
            print(f"\n== target {target} (profile {plan['profile']}) {plan['digest']}")
            for component in plan["components"]:
                exp = component["explanation"]
                print(
                    f"  {component['id']:<22} → {component['provider']:<12} "
                    f"[{exp['rule']}] {exp['summary']}"
                )
            for workflow in plan["workflows"]:
                levels = " | ".join(", ".join(level) for level in workflow["generations"])
                print(f"  workflow {workflow['key']}: {levels}")
            for route in plan["routes"]:
                print(
                    f"  route {route['topic']} ({route['fanout']}) → {', '.join(route['handlers'])}"
                )
    return 0


def run_all() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import flows
    import live

    for title, step in (
        ("compile", main),
        ("live swap", live.main),
        ("workflow and events", flows.main),
    ):
        print(f"\n######## {title}", flush=True)
        status = step()
        if status != 0:
            print(f"demo step {title!r} failed with status {status}", file=sys.stderr)
            return status
    print("\ndemo finished: every step succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(run_all())
