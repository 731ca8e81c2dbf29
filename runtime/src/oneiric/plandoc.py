"""The plan's vocabulary without pydantic: format version, domains and rules.

`oneiric.plan` (the pydantic models) and the compiler both import these; the
compiler's hot path never needs pydantic for them.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

FORMAT_VERSION = "1.0"
KNOWN_MAJOR_VERSIONS = (1,)

DOMAINS = ("adapter", "service", "task", "event", "workflow", "action")
Domain: TypeAlias = Literal["adapter", "service", "task", "event", "workflow", "action"]
Rule: TypeAlias = Literal["only", "selection", "capability", "priority", "layer", "declaration"]
