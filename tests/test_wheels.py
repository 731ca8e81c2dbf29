"""The built wheels work outside the repository, and the runtime stays lean (DESIGN §1).

Wheels of the runtime and the compiler are built with uv, installed into fresh
virtual environments made from the machine's python3 (dependencies come from
the package index or uv's cache), and used on a copy of the demo stacks in a
temporary directory, with implementations pointing at the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support import ROOT, compile_at

HEAVY = ("lark", "jinja2", "networkx")
ENV = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
for _name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
    ENV.pop(_name, None)


def lean_check(package: str) -> str:
    """A program importing every module of `package` (but __main__), printing the heavy
    modules it loaded.  A module needing an optional extra that is not installed (a driver,
    the HTTP server) is skipped; one needing a heavy module that is not installed counts as
    loading it; one needing a missing module of this project is a broken wheel."""
    return f"""
import importlib, pkgutil, sys
import {package}
heavy = {HEAVY!r}
missing = []
for info in pkgutil.walk_packages({package}.__path__, "{package}."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in heavy:
            missing.append(exc.name)
        elif (exc.name or "oneiric").split(".")[0] in ("oneiric", "oneiricc"):
            raise
print(sorted(set(missing) | {{m for m in sys.modules if m.split(".")[0] in heavy}}))
"""


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def test_runtime_never_imports_compiler_dependencies() -> None:
    """Importing `oneiric` and every module in it loads no lark, jinja2 or networkx."""
    assert run(sys.executable, "-c", lean_check("oneiric"), cwd=ROOT, timeout=120) == "[]\n"
    # The same check does see them in the compiler, so it can fail.
    assert "lark" in run(sys.executable, "-c", lean_check("oneiricc"), cwd=ROOT, timeout=120)


# ----------------------------------------------------------------- wheels --


@pytest.fixture(scope="module")
def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv is not on PATH; `make setup` installs it")
    return found


@pytest.fixture(scope="module")
def wheels(uv: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for package in ("oneiric-runtime", "oneiric-compiler"):
        run(uv, "build", "--wheel", "--package", package, "--out-dir", out, cwd=ROOT)
    return {
        "runtime": next(out.glob("oneiric_runtime-*.whl")),
        "compiler": next(out.glob("oneiric_compiler-*.whl")),
    }


def make_venv(uv: str, where: Path, *wheel_files: Path) -> Path:
    """A fresh venv from the machine's python3 with `wheel_files` installed; its python."""
    run(uv, "venv", "--python", "python3", "--quiet", where)
    python = where / "bin" / "python"
    run(uv, "pip", "install", "--quiet", "--python", python, *wheel_files)
    return python


def installed(uv: str, python: Path) -> set[str]:
    listing = run(uv, "pip", "list", "--format", "json", "--python", python)
    return {item["name"].lower() for item in json.loads(listing)}


@pytest.mark.slow
def test_compiler_wheel_ships_the_real_grammar(wheels: dict[str, Path]) -> None:
    grammar = (ROOT / "grammar" / "oneiric.lark").read_bytes()
    with zipfile.ZipFile(wheels["compiler"]) as wheel:
        info = wheel.getinfo("oneiricc/_language/oneiric.lark")
        mode = info.external_attr >> 16
        assert not stat.S_ISLNK(mode)
        assert wheel.read(info) == grammar
        names = wheel.namelist()
    # One plan model: the compiler wheel carries no copy of the runtime package.
    assert not [name for name in names if name.startswith("oneiric/")]
    with zipfile.ZipFile(wheels["runtime"]) as wheel:
        assert not [name for name in wheel.namelist() if name.startswith("oneiricc/")]


@pytest.mark.slow
def test_runtime_wheel_installs_and_imports_without_compiler_dependencies(
    uv: str, wheels: dict[str, Path], tmp_path: Path
) -> None:
    python = make_venv(uv, tmp_path / "venv", wheels["runtime"])
    packages = installed(uv, python)
    assert "oneiric-runtime" in packages
    assert not packages & set(HEAVY)
    assert run(python, "-c", lean_check("oneiric"), cwd=tmp_path) == "[]\n"
    assert "Usage" in run(tmp_path / "venv" / "bin" / "oneiric", "--help", cwd=tmp_path)


def _stdlib_stacks(project: Path) -> None:
    """The demo stacks with every implementation in the standard library, one entry point,
    and no capability bound to a protocol (the stand-ins keep none).  The stand-in is
    `argparse:Namespace`, whose `__init__(**kwargs)` takes any config."""
    shutil.copytree(ROOT / "stacks", project / "stacks")
    shutil.copy(ROOT / "oneiric.toml", project / "oneiric.toml")
    for path in (project / "stacks").glob("*.oneiric"):
        text = re.sub(r'impl "shopdemo[^"]*"', 'impl "argparse:Namespace"', path.read_text())
        text = re.sub(r"^ *capability .*\n", "", text, flags=re.MULTILINE)
        if path.name == "base.oneiric":
            text = text.replace(
                'action compress "gzip" {\n    impl "argparse:Namespace"\n    config { level = 6 }',
                'action compress "gzip" {\n    impl entrypoint "console_scripts" "oneiricc"',
            )
            assert "entrypoint" in text
        path.write_text(text)


def _without_hashes(plan: bytes) -> object:
    """A plan without what depends on the interpreter's files: digest and pin hashes."""
    data = json.loads(plan)
    data.pop("digest")
    for component in data["components"]:
        if component["pin"]:
            component["pin"].pop("sha256")
    return data


@pytest.mark.slow
def test_installed_compiler_builds_a_stack_outside_the_repository(
    uv: str, wheels: dict[str, Path], tmp_path: Path
) -> None:
    python = make_venv(uv, tmp_path / "venv", wheels["runtime"], wheels["compiler"])
    oneiricc = tmp_path / "venv" / "bin" / "oneiricc"
    project = tmp_path / "project"
    _stdlib_stacks(project)

    summary = run(oneiricc, "build", cwd=project)
    assert "prod:" in summary
    assert "dev:" in summary
    run(oneiricc, "build", "--check", cwd=project)
    run(oneiricc, "check", cwd=project)
    # The installed build server serves the installed command line.
    run(oneiricc, "server", "start", cwd=project)
    try:
        run(oneiricc, "build", "--check", cwd=project)
        assert "1 build served" in run(oneiricc, "server", "status", cwd=project)
    finally:
        run(oneiricc, "server", "stop", cwd=project)
    assert '"redis"' in run(oneiricc, "explain", "adapter:cache", "--target", "prod", cwd=project)

    # The installed runtime accepts the plans (digest, version, schema of the model).
    plans = {p.name: p.read_bytes() for p in sorted((project / "golden").glob("*.plan.json"))}
    assert sorted(plans) == ["dev.plan.json", "prod.plan.json"]
    loaded = run(
        python,
        "-c",
        "import sys; from oneiric import load_plan\n"
        "for p in sys.argv[1:]: print(load_plan(open(p, 'rb').read()).target)",
        *sorted((project / "golden").glob("*.plan.json")),
        cwd=tmp_path,
    )
    assert loaded.split() == ["dev", "prod"]

    # Pins name the venv's own files and the installed compiler distribution.
    files = json.loads(
        run(
            python,
            "-c",
            "import json, importlib.util as u; print(json.dumps("
            "[u.find_spec('argparse').origin, u.find_spec('oneiricc._cli.launcher').origin]))",
            cwd=tmp_path,
        )
    )
    prod = json.loads(plans["prod.plan.json"])
    pins = {c["id"]: c["pin"] for c in prod["components"] if c["pin"]}
    stdlib, compiler_entry = (hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files)
    assert pins["adapter:cache"]["sha256"] == stdlib
    action = pins["action:compress"]
    assert (action["distribution"], action["file"]) == (
        "oneiric-compiler",
        "oneiricc/_cli/launcher.py",
    )
    assert action["sha256"] == compiler_entry

    # The workspace compiler decides exactly the same.
    workspace = compile_at(project)
    assert not workspace.failed
    for name, plan in workspace.plans.items():
        assert _without_hashes(plan.to_bytes()) == _without_hashes(plans[f"{name}.plan.json"])
