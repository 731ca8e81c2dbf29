"""Where a project's root is: the nearest directory, upwards, holding `oneiric.toml`.

With `os.path` alone: `launcher` runs this before every command, so it imports
nothing heavier.
"""

from __future__ import annotations

import os

CONFIG_FILE = "oneiric.toml"


def find_root(start: str) -> str:
    """The nearest directory from `start` upwards with `oneiric.toml`; else `start`."""
    start = os.path.realpath(start)
    directory = start
    while not os.path.isfile(os.path.join(directory, CONFIG_FILE)):
        parent = os.path.dirname(directory)
        if parent == directory:
            return start
        directory = parent
    return directory
