"""docs/quickstart.md, run verbatim: a fresh virtualenv, both tools installed from this
checkout, `oneiricc init`, build, test, a workflow, an event and an action."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from support import ROOT


def quickstart_commands() -> str:
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart -->\n```sh\n(.*?)```", text, re.S)
    assert match is not None, "docs/quickstart.md lost its <!-- quickstart --> block"
    return match.group(1)


def test_the_readme_points_at_the_quickstart() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Use it in your project" in readme
    section = readme.split("## Use it in your project", 1)[1]
    commands = [
        line for line in quickstart_commands().splitlines() if line and not line.startswith("#")
    ]
    for line in commands:
        assert f"\n{line}\n" in section, line
    assert "docs/quickstart.md" in section


@pytest.mark.slow
def test_the_quickstart_runs_verbatim(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "LOG_LEVEL"}
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quickstart_commands()],
        cwd=tmp_path,
        env={**env, "ONEIRIC": str(ROOT), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "created my-app: package my_app" in out
    assert "dev: 6 components, 1 workflow, 1 route" in out
    assert "2 passed" in out
    assert "workflow onboarding  SUCCEEDED" in out
    assert '→ {"audited": "user.signed_up", "user": "ada"}' in out
    assert '"HELLO"' in out
    assert 'service greeter → "default"' in out
    assert "Traceback" not in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert (tmp_path / ".venv" / "bin" / "oneiricc").is_file()
