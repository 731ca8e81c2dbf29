"""The installed distribution's version, read only when asked (importlib.metadata costs ~10 ms)."""

from __future__ import annotations


def installed_version() -> str | None:
    """The installed `oneiric-compiler` distribution's version; None from a source tree."""
    from importlib.metadata import PackageNotFoundError, version  # ~10 ms: not at start-up

    try:
        return version("oneiric-compiler")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return None
