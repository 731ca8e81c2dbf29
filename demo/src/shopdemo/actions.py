"""Actions of the demo shop: `action(payload, **config)` returning JSON data."""

from __future__ import annotations

import base64
import gzip
from typing import Any


def compress(payload: dict[str, Any], level: int = 6) -> dict[str, Any]:
    """Gzip the text `payload["data"]`; the result is base64 with both sizes."""
    raw = str(payload["data"]).encode()
    out = gzip.compress(raw, compresslevel=level, mtime=0)
    return {"data": base64.b64encode(out).decode(), "size_in": len(raw), "size_out": len(out)}
