"""`oneiricc graph`: workflow DAGs and component graphs as Mermaid and DOT, via the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wfkit import HERE, ROOT

STACK = """oneiric 1

stack t {
  adapter db "sqlite" { impl "argparse:Namespace" }
  service orders "x" {
    impl "argparse:Namespace"
    requires adapter db
  }
  task a "x" { impl "wftasks:not_json" }
  task b "x" { impl "wftasks:not_json" }
  task c "x" { impl "wftasks:not_json" }
  workflow flow "x" {
    node pay {
      task b
      retry 3 backoff 1s
      timeout 250ms
    }
    a -> pay -> c
    a -> c
  }
}

target t { layers t }
"""


def graph(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True)
    (root / "oneiric.toml").write_text('sources = ["stacks"]\n')
    (root / "stacks" / "t.oneiric").write_text(STACK)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "oneiricc",
            "--root",
            str(root),
            "graph",
            "--target",
            "t",
            "--module-path",
            str(HERE),
            "--no-cache",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_workflow_as_mermaid_and_dot(tmp_path: Path) -> None:
    mermaid = graph(tmp_path, "--workflow", "flow")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout == (
        "flowchart TD\n"
        '  n0["a"]\n'
        '  n1["pay<br/>task b<br/>retry 3 backoff 1s<br/>timeout 250ms"]\n'
        '  n2["c"]\n'
        "  n0 --> n2\n"
        "  n0 --> n1\n"
        "  n1 --> n2\n"
    )
    dot = graph(tmp_path / "2", "--workflow", "flow", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith('digraph "workflow flow" {\n')
    assert '  "pay" [label="pay\\ntask b\\nretry 3 backoff 1s\\ntimeout 250ms"];\n' in dot.stdout
    assert '  "a" -> "pay";\n' in dot.stdout
    assert dot.stdout.endswith("}\n")


def test_component_graph(tmp_path: Path) -> None:
    out = graph(tmp_path, "--components", "--format", "dot")
    assert out.returncode == 0, out.stderr
    assert '"service:orders" -> "adapter:db";' in out.stdout
    assert '"workflow:flow" -> "task:b" [label="runs"];' in out.stdout


def test_bad_requests(tmp_path: Path) -> None:
    unknown = graph(tmp_path, "--workflow", "flwo")
    assert unknown.returncode == 1
    assert "error[E0206]: no workflow flwo in target t" in unknown.stderr
    assert 'did you mean "flow"?' in unknown.stderr
    neither = graph(tmp_path / "2")
    assert neither.returncode == 2
    assert "exactly one of --workflow NAME or --components" in neither.stderr
