"""The layering of both packages (pyproject `[tool.importlinter]`), so `make test`
fails on an import that breaks it, as `make lint` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import ROOT

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=120,
    )


def test_every_layering_contract_is_kept() -> None:
    done = _lint_imports()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_broken_layer_is_reported(tmp_path: Path) -> None:
    """The same tool on a contract the code breaks (the command line does use the
    build): the check above can fail."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        "[tool.importlinter]\n"
        'root_packages = ["oneiricc"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "inverted on purpose"\n'
        'type = "layers"\n'
        'containers = ["oneiricc"]\n'
        'layers = ["_build", "_cli"]\n',
        encoding="utf-8",
    )
    done = _lint_imports(str(config))
    assert done.returncode == 1
    assert "oneiricc._build is not allowed to import oneiricc._cli" not in done.stdout
    assert "oneiricc._cli is not allowed to import oneiricc._build" in done.stdout
