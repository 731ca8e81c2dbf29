"""Pin attestation: prove that the code about to be imported is the code that was compiled.

Before an implementation is imported, its module file is located the way the
import system would find it (`PathFinder`, package by package, over
`sys.path`) without executing anything, not even parent packages'
`__init__`.  The file's sha256 must equal the pin's, and the installed
distribution's version must equal the pinned version.  Only then is the
module imported, and the imported module's `__file__` must be the file that
was hashed (a module already imported from elsewhere is refused too).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import time
from dataclasses import dataclass
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the compiler imports this module for its locating and hashing, without pydantic
    from collections.abc import Sequence

    from oneiric._plan.model import Component, Pin


class PinMismatch(Exception):
    """What would be imported differs from what was compiled."""

    def __init__(self, component: str, what: str, expected: str, found: str) -> None:
        super().__init__(f"pin mismatch for {component}: {what} expected {expected}, found {found}")
        self.component = component
        self.what = what
        self.expected = expected
        self.found = found


class ImplementationError(Exception):
    """The implementation cannot be loaded (missing module or attribute, import failure)."""


class NotImportable(ImplementationError):
    """The pinned module is not importable at all here: no file to compare, not a mismatch."""

    def __init__(self, component: str, pin: Pin, module_path: Sequence[str]) -> None:
        file = pin.file or pin.module.replace(".", "/") + ".py"
        if len(module_path) == 1:
            origin = f"{module_path[0].rstrip('/')}/{file}"
        elif module_path:
            origin = f"{file} under {' or '.join(module_path)}"
        else:
            origin = file + (f" of {pin.distribution} {pin.version}" if pin.distribution else "")
        super().__init__(
            f"{component}: module {pin.module} is not importable here (compiled from "
            f"{origin}): install the package, run from the project root or pass --module-path"
        )
        self.component = component
        self.module = pin.module


@dataclass(frozen=True, slots=True)
class _Stat:
    size: int
    mtime_ns: int
    inode: int


# File hashes keyed by path, valid while size, mtime and inode are unchanged.
_hashes: dict[str, tuple[_Stat, str]] = {}
RACY_S = 2  # longer than any file system's timestamp granularity
# sha256 of the file each module was imported from, to notice when a new pin needs a reload.
_imported: dict[str, str] = {}


def find_spec_quietly(
    module: str, search_path: list[str] | None = None
) -> tuple[ModuleSpec, str | None] | None:
    """The spec `import module` would use and the import root it lies under, running no code.

    `importlib.util.find_spec` imports parent packages; this walks
    `PathFinder` package by package instead.  The import root is the
    `search_path` (default `sys.path`) entry the top-level package was found in.
    """
    parts = module.split(".")
    path = search_path
    spec = None
    root = None
    for index in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: index + 1]), path)
        if spec is None:
            return None
        if index == 0:
            root = _import_root(spec)
        if index < len(parts) - 1:
            if spec.submodule_search_locations is None:
                return None
            path = list(spec.submodule_search_locations)
    return (spec, root) if spec is not None else None


def _import_root(spec: ModuleSpec) -> str | None:
    if spec.origin and os.path.isfile(spec.origin):
        directory = os.path.dirname(spec.origin)
        return os.path.dirname(directory) if spec.submodule_search_locations else directory
    locations = list(spec.submodule_search_locations or [])
    return os.path.dirname(locations[0]) if locations else None


def locate(module: str) -> str | None:
    """The file `import module` would load, found without executing any code."""
    found = find_spec_quietly(module)
    if found is None:
        return None
    origin = found[0].origin
    if origin is None or not os.path.isfile(origin):
        return None
    return os.path.realpath(origin)


def file_sha256(path: str) -> str:
    """The file's sha256, remembered while its size, mtime and inode stay the same.

    A file modified within `RACY_S` of being hashed is not remembered ("racily
    clean", as git calls it): the file system's clock is coarse, so another
    write of the same size in the same tick would leave the same mtime.
    """
    st = os.stat(path)
    stat = _Stat(st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _hashes.get(path)
    if cached is not None and cached[0] == stat:
        return cached[1]
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if time.time_ns() - st.st_mtime_ns > RACY_S * 1_000_000_000:
        _hashes[path] = (stat, digest)
    return digest


class Loader:
    """Checks pins and loads implementations, each distinct check done once per loader.

    One loader serves one plan: a plan of 1,000 components implemented by one
    module looks the module up, hashes its file and reads its distribution's
    version once (file hashes are also cached across loaders while the
    file's size, mtime and inode are unchanged).
    """

    def __init__(self, module_path: Sequence[str] = ()) -> None:
        self.module_path = list(module_path)  # the plan's, for messages
        self._versions: dict[str, str] = {}
        self._origins: dict[str, str | None] = {}
        self._modules: dict[str, ModuleType] = {}
        self._digests: dict[str, str] = {}

    def check_pin(self, component: str, pin: Pin) -> str | None:
        """Verify `pin` against the environment; return the located file (None for built-ins)."""
        if pin.distribution is not None and pin.version is not None:
            found = self._version(pin.distribution)
            if found != pin.version:
                raise PinMismatch(
                    component, f"distribution {pin.distribution} version", pin.version, found
                )
        if pin.sha256 is None:
            if pin.module.split(".")[0] not in sys.builtin_module_names:
                raise PinMismatch(component, f"module {pin.module}", "a built-in module", "a file")
            return None
        if pin.module in self._origins:
            origin = self._origins[pin.module]
        else:
            origin = self._origins[pin.module] = locate(pin.module)
        if origin is None:
            raise NotImportable(component, pin, self.module_path)
        found_sha = self._digests.get(origin)
        if found_sha is None:
            found_sha = self._digests[origin] = file_sha256(origin)
        if found_sha != pin.sha256:
            raise PinMismatch(component, f"sha256 of {origin}", pin.sha256, found_sha)
        return origin

    def load(self, component: Component) -> Any:
        """Check the component's pin, then import its implementation and return the attribute."""
        impl = component.implementation
        if impl is None:
            raise ImplementationError(f"{component.id} has no implementation to load")
        if component.pin is None:
            raise ImplementationError(f"{component.id} has no pin; refusing an unattested import")
        origin = self.check_pin(component.id, component.pin)
        module = self._modules.get(impl.module)
        if module is None:
            module = _import(component.id, impl.module, origin, component.pin.sha256)
            self._modules[impl.module] = module
        try:
            return getattr(module, impl.attr)
        except AttributeError:
            raise ImplementationError(
                f'{component.id}: module "{impl.module}" has no attribute "{impl.attr}"'
            ) from None

    def _version(self, distribution: str) -> str:
        found = self._versions.get(distribution)
        if found is None:
            from importlib import metadata  # imported here: most processes never need it

            try:
                found = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                found = "not installed"
            self._versions[distribution] = found
        return found


def _import(component: str, name: str, origin: str | None, sha256: str | None) -> ModuleType:
    module = sys.modules.get(name)
    try:
        if module is None:
            module = importlib.import_module(name)
        elif sha256 is not None and _imported.get(name, sha256) != sha256:
            # Imported by this runtime for another pin: load the new code.  A module
            # the application imported itself (from the file just hashed) is kept, so
            # its classes stay the ones the application holds.
            module = importlib.reload(module)
    except Exception as exc:
        raise ImplementationError(f'{component}: importing "{name}" failed: {exc!r}') from exc
    file = getattr(module, "__file__", None)
    if origin is not None:
        if file is None or os.path.realpath(file) != origin:
            raise PinMismatch(component, f"module {name} imported from", origin, str(file))
        assert sha256 is not None
        _imported[name] = sha256
    return module
