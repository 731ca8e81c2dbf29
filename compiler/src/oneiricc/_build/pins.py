"""Pins: what exactly an implementation will import, found without importing it.

A module is located the way the import system would find it (`PathFinder`,
package by package, over `--module-path` and then `sys.path`) but no code is
executed: not even the parent packages' `__init__`.  The pin records the
module file's sha256 and, when the file belongs to an installed distribution,
that distribution's name and version.  Entry points are resolved through
installed metadata to `module:attr` and pinned the same way.  A pin is plain
plan data (`oneiric._plan.document.Pin`), shared by every component that names the
module: callers must not mutate it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import cached_property
from importlib.machinery import BuiltinImporter, ModuleSpec
from pathlib import Path
from typing import TYPE_CHECKING

from oneiric._lifecycle.attest import file_sha256, find_spec_quietly
from oneiric._plan.document import Pin

from oneiricc._language.diagnostics import did_you_mean

if TYPE_CHECKING:
    from collections.abc import Iterable
    from importlib import metadata

_STANDARD_LIBRARY = os.path.dirname(os.path.normpath(os.__file__))


class PinError(Exception):
    """The implementation cannot be located; `help` says what to do."""

    def __init__(self, message: str, help: str | None = None) -> None:
        super().__init__(message)
        self.help = help


@dataclass(frozen=True, slots=True)
class Resolved:
    module: str
    attr: str
    pin: Pin


class Pinner:
    """Locates and hashes implementations; caches per module, file and distribution."""

    def __init__(self, module_path: list[Path]) -> None:
        self.search_path = [str(p) for p in module_path] + [p for p in sys.path if p]
        self._pins: dict[str, Pin | PinError] = {}
        self._sources: dict[str, str] = {}  # module → the file it was pinned from
        self._files_by_root: dict[str, dict[str, metadata.Distribution]] = {}
        self._editable_by_root: dict[str, metadata.Distribution | None] = {}

    def pin_module(self, module: str) -> Pin:
        cached = self._pins.get(module)
        if cached is None:
            try:
                cached = self._pin(module)
            except PinError as exc:
                cached = exc
            self._pins[module] = cached
        if isinstance(cached, PinError):
            raise cached
        return cached

    def source_of(self, module: str) -> str | None:
        """The file a module pinned without error was found at (None for a built-in one)."""
        return self._sources.get(module)

    def resolve_entry_point(self, group: str, name: str) -> Resolved:
        matches = sorted(
            (ep for ep in self._entry_points if ep.group == group and ep.name == name),
            key=lambda ep: (ep.dist.name if ep.dist else "", ep.value),
        )
        if not matches:
            known = sorted({ep.name for ep in self._entry_points if ep.group == group})
            raise PinError(
                f'entry point "{name}" not found in group "{group}"',
                (did_you_mean(name, known) or f"known in {group}: {', '.join(known)}")
                if known
                else "install the distribution that declares it, then build again",
            )
        ep = matches[0]
        module, _, attr = ep.value.partition(":")
        pin = self.pin_module(module.strip())
        if ep.dist is not None:
            pin = {**pin, "distribution": ep.dist.name, "version": ep.dist.version}
        return Resolved(module.strip(), attr.strip(), pin)

    def group(self, group: str) -> list[tuple[str, str, str, str]]:
        """(name, distribution, version, value) of every entry point of `group`, sorted."""
        return sorted(
            (
                ep.name,
                ep.dist.name if ep.dist else "?",
                ep.dist.version if ep.dist else "?",
                ep.value,
            )
            for ep in self._entry_points
            if ep.group == group
        )

    def group_names(self) -> list[str]:
        """Every entry point group of the installed distributions, sorted."""
        return sorted({ep.group for ep in self._entry_points})

    @cached_property
    def _entry_points(self) -> list[metadata.EntryPoint]:
        found: list[metadata.EntryPoint] = []
        for dist in _distributions(self.search_path):
            for ep in dist.entry_points:
                found.append(ep)
        return found

    # -- locating ------------------------------------------------------------
    def _pin(self, module: str) -> Pin:
        spec, root = self._find(module)
        if spec is None:
            raise PinError(
                f'implementation module "{module}" not found',
                "install it where oneiricc runs, or pass --module-path DIR; "
                "pins are taken from the environment the compiler runs in",
            )
        origin = spec.origin
        if origin is None or origin in ("built-in", "frozen"):
            return Pin(module=module, file=None, sha256=None, distribution=None, version=None)
        if not os.path.isfile(origin):
            raise PinError(f'module "{module}" is a namespace package, not a module file')
        relative = os.path.relpath(origin, root).replace(os.sep, "/") if root else None
        self._sources[module] = origin
        dist = self._owner(origin, root)
        return Pin(
            module=module,
            file=relative,
            sha256=file_sha256(origin),
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )

    def _find(self, module: str) -> tuple[ModuleSpec | None, str | None]:
        """The module's spec and the import root it was found under, importing nothing."""
        top = module.partition(".")[0]
        if top in sys.builtin_module_names:
            return BuiltinImporter.find_spec(top), None
        found = find_spec_quietly(module, self.search_path)
        return found if found is not None else (None, None)

    def _owner(self, origin: str, root: str | None) -> metadata.Distribution | None:
        """The installed distribution that ships `origin`, if any.

        Only the distributions installed in the module's own import root are
        read (none for the standard library: nothing is installed there), then
        editable installs, whose .pth files put a source directory on sys.path.
        """
        if root is None or os.path.normpath(root) == _STANDARD_LIBRARY:
            return None
        relative = os.path.relpath(origin, root).replace(os.sep, "/")
        owner = self._installed_files(root).get(relative)
        if owner is not None:
            return owner
        return self._editable_owner(root)

    def _installed_files(self, root: str) -> dict[str, metadata.Distribution]:
        if root in self._files_by_root:
            return self._files_by_root[root]
        files: dict[str, metadata.Distribution] = {}
        for dist in sorted(_distributions([root]), key=_dist_sort):
            for file in dist.files or ():
                if file.suffix in (".py", ".so", ".pyd"):
                    files.setdefault(file.as_posix(), dist)
        self._files_by_root[root] = files
        return files

    def _editable_owner(self, root: str) -> metadata.Distribution | None:
        if root not in self._editable_by_root:
            self._editable_by_root[root] = self._find_editable_owner(root)
        return self._editable_by_root[root]

    def _find_editable_owner(self, root: str) -> metadata.Distribution | None:
        for site in self.search_path:
            for pth in sorted(Path(site).glob("*.pth")) if os.path.isdir(site) else ():
                try:
                    lines = pth.read_text(encoding="utf-8").splitlines()
                except (OSError, UnicodeDecodeError):
                    continue
                if not any(
                    os.path.normpath(line.strip()) == root for line in lines if line.strip()
                ):
                    continue
                for dist in sorted(_distributions([site]), key=_dist_sort):
                    if any(f.as_posix() == pth.name for f in dist.files or ()):
                        return dist
        return None


def _distributions(path: list[str]) -> Iterable[metadata.Distribution]:
    from importlib import metadata  # imported here: ~10 ms that most builds never need

    return metadata.distributions(path=path)


def _dist_sort(dist: metadata.Distribution) -> tuple[str, str]:
    return (dist.name or "", dist.version or "")
