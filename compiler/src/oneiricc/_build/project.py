"""The project: its root directory and its `oneiric.toml` settings.

Every path a plan mentions is relative to the root, so a plan does not depend
on where the compiler was started.  The root is the nearest directory, from
the working directory upwards, that holds `oneiric.toml`; without one, the
working directory itself.
"""

from __future__ import annotations

import tomllib
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


def load_project(root: Path | None = None) -> Project:
    """Read `oneiric.toml` from `root` (found from the working directory when None)."""
    root = (root or find_root(Path.cwd())).resolve()
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
            f"{config_file}: unknown setting(s) {', '.join(unknown)}; "
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
