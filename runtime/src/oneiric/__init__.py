"""oneiric: run verified, hash-pinned resolution plans and swap components live.

The public surface, like httpx's, is what this module exports; everything in an
underscore package is private and may change.  The folders, lowest layer first:

    _plan/       the plan: model, canonical JSON, schema, config values
    _delivery/   signed delivery: DSSE, keys, trust, manifests, fetching, the state store
    _lifecycle/  the runtime: activation, health, binding, draining, supervision
    _flows/      workflows, their store, events
    protocols    what a cache, a database, a storage provide (typing.Protocol)
    _cli/        the `oneiric` command line
    adapters/, actions/   the built-in components (public: stacks name them in `impl`)

Names are imported on first use (PEP 562), so `import oneiric` costs nothing and
`oneiric --help` starts without pydantic, anyio or nacl.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oneiric._delivery.checks import (
        Check,
        Rejected,
        SecurityError,
        TransferError,
        TrustError,
    )
    from oneiric._delivery.manifest import Manifest, Verified, verify_manifest
    from oneiric._delivery.trust import Trust, load_trust
    from oneiric._flows.events import Event, EventError
    from oneiric._flows.workflows import WorkflowError
    from oneiric._lifecycle.attest import ImplementationError, PinMismatch
    from oneiric._lifecycle.handle import ComponentPaused, ComponentUnavailable, Handle
    from oneiric._lifecycle.runtime import Deps, PlanRejected, RolledBack, Runtime, SwapAborted
    from oneiric._lifecycle.supervisor import Settings, StartError, Supervisor
    from oneiric._plan.model import Component, Plan, UnsupportedPlanVersion, load_plan
    from oneiric._plan.values import Secret
    from oneiric.protocols import (
        Cache,
        CacheReader,
        CacheWriter,
        Closable,
        Database,
        Healthy,
        Storage,
    )

_EXPORTS: dict[str, str] = {
    # the plan
    "Plan": "oneiric._plan.model",
    "Component": "oneiric._plan.model",
    "load_plan": "oneiric._plan.model",
    "UnsupportedPlanVersion": "oneiric._plan.model",
    "Secret": "oneiric._plan.values",
    # verification
    "Trust": "oneiric._delivery.trust",
    "load_trust": "oneiric._delivery.trust",
    "Manifest": "oneiric._delivery.manifest",
    "Verified": "oneiric._delivery.manifest",
    "verify_manifest": "oneiric._delivery.manifest",
    "Check": "oneiric._delivery.checks",
    "SecurityError": "oneiric._delivery.checks",
    "Rejected": "oneiric._delivery.checks",
    "TransferError": "oneiric._delivery.checks",
    "TrustError": "oneiric._delivery.checks",
    # the runtime and its components
    "Runtime": "oneiric._lifecycle.runtime",
    "Deps": "oneiric._lifecycle.runtime",
    "PlanRejected": "oneiric._lifecycle.runtime",
    "SwapAborted": "oneiric._lifecycle.runtime",
    "RolledBack": "oneiric._lifecycle.runtime",
    "Supervisor": "oneiric._lifecycle.supervisor",
    "Settings": "oneiric._lifecycle.supervisor",
    "StartError": "oneiric._lifecycle.supervisor",
    "Handle": "oneiric._lifecycle.handle",
    "ComponentUnavailable": "oneiric._lifecycle.handle",
    "ComponentPaused": "oneiric._lifecycle.handle",
    "PinMismatch": "oneiric._lifecycle.attest",
    "ImplementationError": "oneiric._lifecycle.attest",
    # flows
    "Event": "oneiric._flows.events",
    "EventError": "oneiric._flows.events",
    "WorkflowError": "oneiric._flows.workflows",
    # protocols of the built-in kinds
    "Cache": "oneiric.protocols",
    "CacheReader": "oneiric.protocols",
    "CacheWriter": "oneiric.protocols",
    "Closable": "oneiric.protocols",
    "Database": "oneiric.protocols",
    "Healthy": "oneiric.protocols",
    "Storage": "oneiric.protocols",
}

__all__ = [
    "Cache",
    "CacheReader",
    "CacheWriter",
    "Check",
    "Closable",
    "Component",
    "ComponentPaused",
    "ComponentUnavailable",
    "Database",
    "Deps",
    "Event",
    "EventError",
    "Handle",
    "Healthy",
    "ImplementationError",
    "Manifest",
    "PinMismatch",
    "Plan",
    "PlanRejected",
    "Rejected",
    "RolledBack",
    "Runtime",
    "Secret",
    "SecurityError",
    "Settings",
    "StartError",
    "Storage",
    "Supervisor",
    "SwapAborted",
    "TransferError",
    "Trust",
    "TrustError",
    "UnsupportedPlanVersion",
    "Verified",
    "WorkflowError",
    "load_plan",
    "load_trust",
    "verify_manifest",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'oneiric' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
