"""Plugin discovery: `plugins "group"` takes every entry point of a group as candidates,
resolved and pinned at build time.  Real distributions (pyproject + hatchling), built and
installed by uv into a temporary directory that builds find through module-path."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import compile_at, run_cli, write_project

pytestmark = pytest.mark.slow


def distribution(root: Path, name: str, version: str, package: str, eps: dict[str, str]) -> Path:
    """A small real project: pyproject.toml (hatchling) and one package."""
    project = root / name
    (project / package).mkdir(parents=True)
    (project / package / "__init__.py").write_text("")
    (project / package / "parts.py").write_text(
        "class Component:\n    def __init__(self) -> None:\n        self.ok = True\n\n"
        "def act(payload, **config):\n    return {'from': __name__}\n"
    )
    entries = "\n".join(f'"{k}" = "{v}"' for k, v in eps.items())
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\n\n'
        f'[project.entry-points."oneiric.components"]\n{entries}\n\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[tool.hatch.build.targets.wheel]\npackages = ["{package}"]\n'
    )
    return project


def install(site: Path, *projects: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH; `make setup` installs it")
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--target", str(site), *map(str, projects)],
        check=True,
        capture_output=True,
        timeout=300,
    )


STACK = 'oneiric 1\n\nstack app {\n  plugins "oneiric.components"\n}\n\ntarget dev { layers app }\n'


@pytest.fixture(scope="module")
def plugin_projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugin-sources")
    return {
        "a": distribution(
            root,
            "shop-plugins-a",
            "1.0",
            "shop_plugins_a",
            {
                "adapter.cache.fast": "shop_plugins_a.parts:Component",
                "action.greet.a": "shop_plugins_a.parts:act",
            },
        ),
        "b": distribution(
            root,
            "shop-plugins-b",
            "2.1",
            "shop_plugins_b",
            {"adapter.queue.b": "shop_plugins_b.parts:Component"},
        ),
        "fork": distribution(
            root,
            "shop-plugins-fork",
            "0.3",
            "shop_plugins_fork",
            {"adapter.cache.fast": "shop_plugins_fork.parts:Component"},
        ),
    }


def test_a_group_becomes_pinned_candidates(
    plugin_projects: dict[str, Path], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    install(site, plugin_projects["a"], plugin_projects["b"])
    root = write_project(
        tmp_path / "project",
        {"stacks/app.oneiric": STACK},
        settings=f'module-path = ["{site}"]\n',
    )
    build = compile_at(root, use_cache=True, reuse_outputs=True)
    assert build.diagnostics == []
    assert compile_at(root, use_cache=True, reuse_outputs=True).reused  # the memo serves
    plan = build.plans["dev"]
    found = {c.id: c for c in plan.components}
    assert sorted(found) == ["action:greet", "adapter:cache", "adapter:queue"]
    cache = found["adapter:cache"]
    assert cache.provider == "fast"
    assert cache.implementation.kind == "entrypoint"
    assert cache.implementation.group == "oneiric.components"
    assert cache.implementation.name == "adapter.cache.fast"
    assert (cache.implementation.module, cache.implementation.attr) == (
        "shop_plugins_a.parts",
        "Component",
    )
    module_file = site / "shop_plugins_a" / "parts.py"
    assert cache.pin.sha256 == hashlib.sha256(module_file.read_bytes()).hexdigest()
    assert (cache.pin.distribution, cache.pin.version) == ("shop-plugins-a", "1.0")
    assert found["adapter:queue"].pin.version == "2.1"

    listed = run_cli("oneiricc", "plugins", "--module-path", str(site), "--format", "json")
    groups = json.loads(listed.stdout)["groups"]
    entries = {e["name"]: e for e in groups["oneiric.components"]}
    assert entries["adapter.cache.fast"]["distribution"] == "shop-plugins-a"
    assert entries["adapter.cache.fast"]["version"] == "1.0"
    assert entries["adapter.queue.b"]["component"] == 'adapter queue "b"'
    human = run_cli("oneiricc", "plugins", "oneiric.components", "--module-path", str(site))
    assert "adapter.queue.b  shop-plugins-b 2.1  shop_plugins_b.parts:Component" in human.stdout

    # A third distribution claiming adapter.cache.fast: an error naming both, even though
    # the cache remembered a good build of the same files (the group changed).
    install(site, plugin_projects["fork"])
    clash = compile_at(root, use_cache=True, reuse_outputs=True)
    [error] = clash.diagnostics
    assert error.code == "E1001"
    assert "shop-plugins-a 1.0 and shop-plugins-fork 0.3" in error.message
    assert not clash.plans

    # The stack's own declaration wins over both plugins.
    (root / "stacks" / "app.oneiric").write_text(
        STACK.replace(
            '  plugins "oneiric.components"\n',
            '  plugins "oneiric.components"\n'
            '  adapter cache "fast" { impl "shop_plugins_fork.parts:Component" }\n',
        )
    )
    chosen = compile_at(root, use_cache=True)
    assert chosen.diagnostics == []
    pinned = next(c for c in chosen.plans["dev"].components if c.id == "adapter:cache")
    assert pinned.implementation.module == "shop_plugins_fork.parts"
