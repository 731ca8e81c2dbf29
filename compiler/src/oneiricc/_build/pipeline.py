"""The pipeline, start to end: files → parse → check → resolve → plan.

    Loader.load        paths          → Sources   (texts, imports, each file parsed and
                                                   checked alone: checker.check_file)
    checker.check      Sources        → Program   (the files joined: declarations per layer)
    Resolver.resolve   Program+target → Resolution (one decision per key)
    Planner.build_plan Resolution     → CompiledPlan (pins, orders, routes, digest, bytes)

`Pipeline.compile` runs them and gathers every diagnostic of every stage, in
source order, so one build reports all its errors at once; `build` is the
whole pure build of a project.  Each stage is a method of `Pipeline` (and the
loader, resolver and planner are classes with seams of their own): the
incremental build (`_incremental.build`: the on-disk cache, the build memo,
the build server's warm state) is a subclass that overrides them from
outside, to reuse earlier work where equal inputs guarantee equal results.
Nothing here knows about it.  None of this imports pydantic: `Build.plans`
validates the plan bytes into `oneiric` plan models only when a command asks
for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from oneiric._plan.gcpause import gc_paused

from oneiricc._build import capabilities, plugins
from oneiricc._build.checker import Program, check
from oneiricc._build.loader import Loader, Sources, discover
from oneiricc._build.pins import Pinner
from oneiricc._build.planner import CompiledPlan, Planner, plan_errors
from oneiricc._build.project import Project
from oneiricc._build.resolver import Key, Resolution, Resolver
from oneiricc._language.diagnostics import Diagnostic, did_you_mean, has_errors, sorted_diagnostics
from oneiricc._language.recovery import Skipped

if TYPE_CHECKING:
    from oneiricc._build.implementations import Contract
    from oneiricc._build.modules import Reader
    from oneiric._plan.model import Plan


class PlanModels(Mapping[str, "Plan"]):
    """Target → `oneiric._plan.model.Plan`, each validated from its bytes on first access.

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
            from oneiric._plan.model import load_plan

            model = self._models[target] = load_plan(self._outputs[target].data)
        return model

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


@dataclass(slots=True)
class Build:
    sources: Sources
    # None when an incremental build reused the outputs of an earlier one (its memo)
    checked: Program | None
    outputs: dict[str, CompiledPlan] = field(default_factory=dict)
    resolutions: dict[str, Resolution] = field(default_factory=dict)  # empty when reused
    # target → component id → what its implementation check confirmed (empty when reused)
    contracts: dict[str, dict[str, Contract]] = field(default_factory=dict)
    # target → component id → capability → what its protocol check confirmed (the same)
    fits: dict[str, dict[str, dict[str, capabilities.Fit]]] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    plans: PlanModels = field(init=False)

    def __post_init__(self) -> None:
        self.plans = PlanModels(self.outputs)

    @property
    def reused(self) -> bool:
        """The outputs came from the build memo: nothing was resolved or planned."""
        return self.checked is None

    @property
    def program(self) -> Program:
        if self.checked is None:
            raise RuntimeError("a build reused from the memo has no program: compile it whole")
        return self.checked

    @property
    def failed(self) -> bool:
        return has_errors(self.diagnostics)


class Pipeline:
    """The build of one project: `run` (or `compile`, given the files) is the whole
    pipeline; `load`, `pinner`, `reader`, `resolve` and `plan` are its stages.

    `module_path`: directories to pin implementations from, besides the project's.
    `overlay`: text to read instead of a file's (unsaved buffers), by project path.
    `keep_trees` keeps every file's syntax tree in `Build.sources.modules`.
    """

    def __init__(
        self,
        project: Project,
        *,
        module_path: list[Path] | None = None,
        overlay: Mapping[str, str] | None = None,
        keep_trees: bool = False,
    ) -> None:
        self.project = project
        self.module_dirs = [project.root / p for p in project.module_path] + (module_path or [])
        # As the plan records them: relative to the project root.
        self.recorded_module_path = [
            Path(os.path.relpath(d.resolve(), project.root)).as_posix() for d in self.module_dirs
        ]
        self.overlay = overlay
        self.keep_trees = keep_trees

    def run(
        self,
        paths: list[Path] | None = None,
        targets: list[str] | None = None,
        strict: bool | None = None,
    ) -> Build:
        """Compile `targets` (all when None) from `paths` (the project's sources when None)."""
        project = self.project
        entries = discover(project, paths or [project.root / s for s in project.sources])
        return self.compile(entries, targets, project.strict if strict is None else strict)

    def compile(self, entries: list[str], targets: list[str] | None, strict: bool) -> Build:
        """parse → check → resolve → plan, from the files `entries` (and their imports)."""
        sources = self.load(entries)
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
        pinner = self.pinner()
        # `plugins "group"` lines: the installed entry points join their stacks.
        diagnostics.extend(plugins.expand(program, pinner))
        from oneiricc._build.implementations import check_target  # not on a memo's path

        reader = self.reader()
        protocols = capabilities.ProtocolReader(pinner, reader)
        for name in names:
            if name not in program.targets:
                continue
            target = program.targets[name]
            visible = sources.visible_from(target.place.file)
            if any(path not in sources.checked for path in visible):
                continue  # a file it depends on did not parse; its errors are already reported
            skipped = [sources.broken[path] for path in visible if path in sources.broken]
            if any(s.opaque or any(lay in s.layers for lay, _ in target.layers) for s in skipped):
                continue  # what a file skipped could be anything: the target is not resolved
            unknown = Skipped.union(skipped) if skipped else None
            resolution = self.resolve(program, sources, name, strict, unknown)
            build.resolutions[name] = resolution
            diagnostics.extend(resolution.diagnostics)
            bound, build.fits[name] = capabilities.check(program, resolution, protocols)
            diagnostics.extend(bound)
            # Implementations are checked even when resolution failed, and what planning
            # checks too: its errors do not hide theirs.
            settled = _settled(program, name, unknown)
            checked, build.contracts[name] = check_target(resolution, pinner, reader, settled)
            diagnostics.extend(checked)
            if skipped or has_errors(resolution.diagnostics):
                # No plan; what planning checks is checked on what was decided.
                diagnostics.extend(plan_errors(resolution, pinner, settled))
                continue
            plan, plan_diagnostics = self.plan(resolution, sources, pinner, strict)
            diagnostics.extend(plan_diagnostics)
            if plan is not None:
                build.outputs[name] = plan
        build.diagnostics = sorted_diagnostics(diagnostics)
        if build.failed:
            build.outputs.clear()
        return build

    # ------------------------------------------------------------------ stages --

    def load(self, entries: list[str]) -> Sources:
        """Read, parse and check each file, following imports."""
        return Loader(self.project, self.overlay, keep_trees=self.keep_trees).load(entries)

    def pinner(self) -> Pinner:
        """What pins the implementations of this build's plans."""
        return Pinner(self.module_dirs)

    def reader(self) -> Reader:
        """What reads Python modules' sources (`modules.ModuleFacts`), for the implementations
        and capabilities checks."""
        from oneiricc._build.modules import Reader

        return Reader()

    def resolve(
        self,
        program: Program,
        sources: Sources,
        target: str,
        strict: bool,
        unknown: Skipped | None,
    ) -> Resolution:
        """`unknown`: what the target's files skipped for syntax errors (None: nothing)."""
        return Resolver().resolve(program, sources, target, strict=strict, unknown=unknown)

    def plan(
        self, resolution: Resolution, sources: Sources, pinner: Pinner, strict: bool
    ) -> tuple[CompiledPlan | None, list[Diagnostic]]:
        return Planner().build_plan(resolution, sources, pinner, self.recorded_module_path)


def _settled(program: Program, target: str, unknown: Skipped | None) -> Callable[[Key], bool]:
    """Whether a key's winner in `target` has all its fields: not when a layer of the target
    is unknown (it could refine any), nor when a declaration of the key was skipped."""
    if any(layer not in program.layers for layer, _ in program.targets[target].layers):
        return lambda key: False
    if unknown is not None:
        return lambda key: key not in unknown.keys
    return lambda key: True


def build(
    project: Project,
    paths: list[Path] | None = None,
    targets: list[str] | None = None,
    *,
    strict: bool | None = None,
    module_path: list[Path] | None = None,
    overlay: Mapping[str, str] | None = None,
    keep_trees: bool = False,
) -> Build:
    """The pure build: `targets` (all when None) from `paths` (the project's sources
    when None), nothing read from or written to a cache (see `Pipeline`)."""
    with gc_paused():
        stages = Pipeline(project, module_path=module_path, overlay=overlay, keep_trees=keep_trees)
        return stages.run(paths, targets, strict)
