"""The project: its root directory and its `oneiric.toml` settings.

Every path a plan mentions is relative to the root, so a plan does not depend
on where the compiler was started.  The root is the nearest directory, from
each path a command is given upwards, that holds `oneiric.toml` (the working
directory is the default path); see `projectroot.root_of`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from oneiricc._build import projectroot
from oneiricc._build.projectroot import CONFIG_FILE


class ProjectError(Exception):
    """A usage or configuration problem (exit code 2), not a diagnostic in a source."""


@dataclass(frozen=True, slots=True)
class Project:
    root: Path
    sources: tuple[str, ...] = ("stacks",)
    golden: str = "golden"
    cache: str = ".oneiric-cache"
    module_path: tuple[str, ...] = ()
    strict: bool = False

    @property
    def golden_dir(self) -> Path:
        return self.root / self.golden

    @property
    def cache_dir(self) -> Path:
        return self.root / self.cache

    def golden_file(self, target: str) -> Path:
        return self.golden_dir / f"{target}.plan.json"

    def relative(self, path: Path) -> str:
        """`path` relative to the root with `/` separators; refuses paths outside it."""
        resolved = path.resolve()
        try:
            return resolved.relative_to(self.root).as_posix()
        except ValueError:
            raise ProjectError(f"{path} is outside the project root {self.root}") from None


def find_root(start: Path) -> Path:
    return Path(projectroot.find_root(str(start)))


def load_project(root: Path | None = None, paths: Sequence[Path] = ()) -> Project:
    """Read `oneiric.toml` from `root` (when None: found from `paths`, else the working dir)."""
    if root is None:
        try:
            root = Path(projectroot.root_of([str(p) for p in paths], os.getcwd()))
        except projectroot.MixedProjects as exc:
            raise ProjectError(str(exc)) from None
    root = root.resolve()
    config_file = root / CONFIG_FILE
    if not config_file.is_file():
        return Project(root=root)
    try:
        settings = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProjectError(f"{config_file}: {exc}") from None
    known = {"sources", "golden", "cache", "module-path", "strict"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ProjectError(
            f"{config_file}: unknown {'setting' if len(unknown) == 1 else 'settings'} {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    try:
        return Project(
            root=root,
            sources=tuple(_strings(settings, "sources", ["stacks"])),
            golden=str(settings.get("golden", "golden")),
            cache=str(settings.get("cache", ".oneiric-cache")),
            module_path=tuple(_strings(settings, "module-path", [])),
            strict=bool(settings.get("strict", False)),
        )
    except TypeError as exc:
        raise ProjectError(f"{config_file}: {exc}") from None


def _strings(settings: dict[str, object], name: str, default: list[str]) -> list[str]:
    value = settings.get(name, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of strings")
    return value
