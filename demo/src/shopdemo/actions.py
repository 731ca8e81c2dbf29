"""Actions of the demo shop."""

from __future__ import annotations

import gzip


def compress(data: bytes, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level)
