"""Where the runtime imports a project's own code from: the plan's module path.

The compiler records, in the plan, the directories it found implementation
modules in (`module-path` of oneiric.toml, `--module-path`), relative to the
project root.  The runtime puts the same directories, relative to the project
root it runs in, at the front of `sys.path` before checking pins, so the code
it hashes and imports is found where the compiler found it: `oneiric run
--unsigned-plan golden/dev.plan.json` works in a `src/` layout without
PYTHONPATH.  `--module-path DIR` or `ONEIRIC_MODULE_PATH` (os.pathsep-separated)
replace the plan's directories (relative to the working directory).

The project root is the nearest directory holding `oneiric.toml` upwards from
the plan file (an unsigned plan, the state directory's last-good.json), else
from the working directory, else the working directory itself.  Standard
library only: the compiler's project discovery uses `nearest_project` too.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # `typing` and `dataclasses` would cost the compiler's launcher ~10 ms
if TYPE_CHECKING:
    from collections.abc import Sequence

CONFIG_FILE = "oneiric.toml"
MODULE_PATH_ENV = "ONEIRIC_MODULE_PATH"


def nearest_project(start: str) -> str | None:
    """The nearest directory from `start` (a directory) upwards holding `oneiric.toml`."""
    directory = start
    while not os.path.isfile(os.path.join(directory, CONFIG_FILE)):
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
    return directory


class Imports:
    """The project root a plan's module path is relative to, or directories replacing it."""

    __slots__ = ("override", "root")

    def __init__(self, root: str, override: Sequence[str] = ()) -> None:
        self.root = root
        self.override = tuple(override)

    @classmethod
    def find(cls, near: str | None = None, override: Sequence[str] = ()) -> Imports:
        """From the plan file or directory `near` (else the working directory); `override`
        (else the environment's) replacing the plan's module path."""
        cwd = os.getcwd()
        near = os.path.abspath(near) if near else None
        starts = [near if os.path.isdir(near) else os.path.dirname(near)] if near else []
        root = next((found for start in [*starts, cwd] if (found := nearest_project(start))), cwd)
        dirs = list(override)
        if not dirs:
            dirs = [d for d in os.environ.get(MODULE_PATH_ENV, "").split(os.pathsep) if d]
        return cls(os.path.realpath(root), tuple(os.path.abspath(d) for d in dirs))

    def directories(self, module_path: Sequence[str]) -> list[str]:
        """The directories to import from for a plan recording `module_path`."""
        if self.override:
            return list(self.override)
        return [os.path.normpath(os.path.join(self.root, entry)) for entry in module_path]

    def install(self, module_path: Sequence[str]) -> None:
        """Put the directories at the front of `sys.path`, in order (once each)."""
        for directory in reversed(self.directories(module_path)):
            if directory in sys.path:
                sys.path.remove(directory)
            sys.path.insert(0, directory)
