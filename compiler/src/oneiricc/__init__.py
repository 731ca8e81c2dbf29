"""oneiricc: compile `.oneiric` stacks into deterministic, hash-pinned, explained plans.

The public surface is what this module exports; underscore packages are private.
The folders, lowest layer first (each may import only those before it):

    _language/     grammar, lexer, parser, syntax nodes, diagnostics, formatter
    _build/        project settings, loader, checker, resolver, pins, planner: the pipeline
    _incremental/  what makes a build cheaper, never different: cache, memos, build server
    _authoring/    language server, plan diff, CI outputs, error docs
    _signing       keys, signed manifests, trust files
    _cli/          the `oneiricc` command line

Names are imported on first use (PEP 562): the console script's launcher starts
without importing lark or the pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oneiricc._build.pipeline import Build
    from oneiricc._build.planner import CompiledPlan
    from oneiricc._build.project import Project, ProjectError, load_project
    from oneiricc._incremental.build import compile_project
    from oneiricc._language.diagnostics import CompileError, Diagnostic, Severity

_EXPORTS: dict[str, str] = {
    "compile_project": "oneiricc._incremental.build",
    "Build": "oneiricc._build.pipeline",
    "CompiledPlan": "oneiricc._build.planner",
    "Project": "oneiricc._build.project",
    "ProjectError": "oneiricc._build.project",
    "load_project": "oneiricc._build.project",
    "Diagnostic": "oneiricc._language.diagnostics",
    "Severity": "oneiricc._language.diagnostics",
    "CompileError": "oneiricc._language.diagnostics",
}

__all__ = [
    "Build",
    "CompileError",
    "CompiledPlan",
    "Diagnostic",
    "Project",
    "ProjectError",
    "Severity",
    "compile_project",
    "load_project",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'oneiricc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
