"""The pipeline, start to end: files → parse → check → resolve → plan.

    loader.load      paths          → Sources   (texts, imports, each file parsed and checked
                                                 alone: checker.check_file, or the cache)
    checker.check    Sources        → Program   (the files joined: declarations per layer)
    resolver.resolve Program+target → Resolution (one decision per key)
    planner.build_plan Resolution   → CompiledPlan (pins, orders, routes, digest, bytes)

`compile_project` runs them and gathers every diagnostic of every stage, in
source order, so one build reports all its errors at once.  None of this
imports pydantic: `Build.plans` validates the plan bytes into
`oneiric.plan.Plan` models only when a command asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from oneiric.gcpause import gc_paused

from .cache import CheckCache
from .checker import Program, check
from .diagnostics import Diagnostic, did_you_mean, has_errors, sorted_diagnostics
from .loader import Sources, discover, load
from .pins import Pinner
from .planner import CompiledPlan, build_plan
from .project import Project
from .resolver import Resolution, resolve

if TYPE_CHECKING:
    from oneiric.plan import Plan


class PlanModels(Mapping[str, "Plan"]):
    """Target → `oneiric.plan.Plan`, each validated from its bytes on first access.

    Validation (`load_plan`, the runtime's own reader) is the contract check and
    the only place a build imports pydantic, so commands that need only bytes
    (`oneiricc build`) never pay for it.
    """

    def __init__(self, outputs: Mapping[str, CompiledPlan]) -> None:
        self._outputs = outputs
        self._models: dict[str, Plan] = {}

    def __getitem__(self, target: str) -> Plan:
        model = self._models.get(target)
        if model is None:
            from oneiric.plan import load_plan

            model = self._models[target] = load_plan(self._outputs[target].data)
        return model

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


@dataclass(slots=True)
class Build:
    sources: Sources
    program: Program
    outputs: dict[str, CompiledPlan] = field(default_factory=dict)
    resolutions: dict[str, Resolution] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    plans: PlanModels = field(init=False)

    def __post_init__(self) -> None:
        self.plans = PlanModels(self.outputs)

    @property
    def failed(self) -> bool:
        return has_errors(self.diagnostics)


def compile_project(
    project: Project,
    paths: list[Path] | None = None,
    targets: list[str] | None = None,
    *,
    strict: bool | None = None,
    use_cache: bool = True,
    module_path: list[Path] | None = None,
    overlay: Mapping[str, str] | None = None,
    keep_trees: bool = False,
) -> Build:
    """Compile `targets` (all targets when None) from `paths` (the project's sources when None).

    `overlay` maps project-relative paths to text read instead of the file (unsaved buffers).
    `keep_trees` keeps every file's syntax tree in `Build.sources.modules` (no cache then).
    """
    with gc_paused():
        return _compile(
            project, paths, targets, strict, use_cache, module_path, overlay, keep_trees
        )


def _compile(
    project: Project,
    paths: list[Path] | None,
    targets: list[str] | None,
    strict: bool | None,
    use_cache: bool,
    module_path: list[Path] | None,
    overlay: Mapping[str, str] | None,
    keep_trees: bool,
) -> Build:
    strict = project.strict if strict is None else strict
    entries = discover(project, paths or [project.root / s for s in project.sources])
    cache = CheckCache(project.cache_dir) if use_cache and not keep_trees else None
    sources = load(project, entries, cache, overlay, keep_trees=keep_trees)
    program = check(sources)
    build = Build(sources, program)
    diagnostics = [*sources.diagnostics, *program.diagnostics]

    names = sorted(program.targets) if targets is None else targets
    for name in names:
        if name not in program.targets:
            diagnostics.append(
                Diagnostic(
                    "E0202",
                    f"unknown target {name}",
                    help=did_you_mean(name, program.targets)
                    or f"targets: {', '.join(sorted(program.targets)) or 'none declared'}",
                )
            )
    pinner = Pinner([project.root / p for p in (*project.module_path,)] + (module_path or []))
    for name in names:
        if name not in program.targets:
            continue
        target = program.targets[name]
        visible = sources.visible_from(target.place.file)
        if any(path not in sources.checked for path in visible):
            continue  # a file it depends on did not parse; its errors are already reported
        resolution = resolve(program, sources, name, strict=strict)
        build.resolutions[name] = resolution
        diagnostics.extend(resolution.diagnostics)
        if has_errors(resolution.diagnostics):
            continue
        plan, plan_diagnostics = build_plan(resolution, sources, pinner)
        diagnostics.extend(plan_diagnostics)
        if plan is not None:
            build.outputs[name] = plan
    build.diagnostics = sorted_diagnostics(diagnostics)
    if build.failed:
        build.outputs.clear()
    return build
