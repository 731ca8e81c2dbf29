"""The pipeline, start to end: files → parse → check → resolve → plan.

    loader.load      paths          → Sources   (texts, imports, each file parsed and checked
                                                 alone: checker.check_file, or the cache)
    checker.check    Sources        → Program   (the files joined: declarations per layer)
    resolver.resolve Program+target → Resolution (one decision per key)
    planner.build_plan Resolution   → CompiledPlan (pins, orders, routes, digest, bytes)

`compile_project` runs them and gathers every diagnostic of every stage, in
source order, so one build reports all its errors at once.

Early cutoff (the build memo, `cache.BuildMemo`): a successful build with the
cache on is remembered under a key of what it was asked (targets, strictness,
module path, the files found) with every file's entry checksum and every pin
it took.  A later build asked the same, whose files all have the same checked
form (a comment edit included) and whose pins are all the same, reuses its
plans: only `sources` (the files' digests) and so the plan digest and bytes
are made again.  Nothing is loaded, joined, resolved or planned then, so such
a build has no `program` or `resolutions`: only callers that need the outputs
and diagnostics alone ask for it (`reuse_outputs`).  None of this
imports pydantic: `Build.plans` validates the plan bytes into
`oneiric.plan.Plan` models only when a command asks for them.

A long-running process (the build server) also passes a `WarmState`: what
its earlier builds made, kept in memory and reused only where equal inputs
guarantee equal results (checked files by content, candidates by
declaration, components by their decision's inputs and pin).
"""

from __future__ import annotations

import os
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from oneiric._plan.gcpause import gc_paused
from oneiric._plan.document import Pin

from oneiricc._build import capabilities, graphs
from oneiricc._build import loader
from oneiricc._build import pins
from oneiricc._build import planner
from oneiricc._build import resolver
from oneiricc._incremental.cache import (
    BuildMemo,
    CheckCache,
    KeptFiles,
    LatestBuild,
    dump_entry,
    load_entry,
    read_entry,
    write_entry,
)
from oneiricc._build.checker import Program, check
from oneiricc._language.diagnostics import Diagnostic, did_you_mean, has_errors, sorted_diagnostics
from oneiricc._build.loader import Sources, discover, load, read_checksums
from oneiricc._build.pins import PinError, Pinner, Resolved
from oneiricc._build.planner import CompiledPlan, PlanMemo, build_plan, pin_errors, seal
from oneiricc._build.project import Project
from oneiricc._language.recovery import Skipped
from oneiricc._build.resolver import CandidateMemo, DecisionMemo, Resolution, resolve

if TYPE_CHECKING:
    from oneiric._plan.model import Plan


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
    checked: Program | None  # None when the outputs were reused from the build memo
    outputs: dict[str, CompiledPlan] = field(default_factory=dict)
    resolutions: dict[str, Resolution] = field(default_factory=dict)  # empty when reused
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


# The code that turns checked files into plans: part of the memo's key, with what
# shapes the entries themselves (`cache`).
_PLANNING_MODULES = (
    loader, resolver, graphs, pins, planner, capabilities, sys.modules[__name__]
)


@dataclass(slots=True)
class TargetMemo:
    """What a long-running process keeps of one target's builds at one strictness."""

    decisions: DecisionMemo = field(default_factory=DecisionMemo)
    plan: PlanMemo = field(default_factory=PlanMemo)


@dataclass(slots=True)
class WarmState:
    """What a long-running process (the build server) keeps from one build to the next:
    the checked files of the latest build, the resolver's candidates, each target's
    decisions, components and workflows (per strictness), and the latest build memo.  Like the
    cache, it makes a build cheaper, never different.  Its owner calls `next_build`
    after each build, and `settle` once the build's caller has its answer."""

    files: KeptFiles = field(default_factory=KeptFiles)
    candidates: CandidateMemo = field(default_factory=CandidateMemo)
    targets: LatestBuild[tuple[str, bool], TargetMemo] = field(default_factory=LatestBuild)
    # The latest build memo (where it lives, what it holds), read from here rather than
    # from disk; and whether it is still to be written there (by `settle`).
    memo: tuple[Path, BuildMemo] | None = None
    memo_unwritten: bool = False

    def target(self, name: str, strict: bool) -> TargetMemo:
        memo = self.targets.get((name, strict)) or TargetMemo()
        self.targets.put((name, strict), memo)
        return memo

    def next_build(self) -> None:
        """Forget what the build just finished did not use."""
        self.files.next_build()
        self.candidates.next_build()
        self.targets.next_build()

    def settle(self) -> None:
        """Write what a build leaves for after its answer: its memo, for later processes."""
        if self.memo is not None and self.memo_unwritten:
            self.memo_unwritten = False
            _write_memo(*self.memo)


class _RecordingPinner(Pinner):
    """A `Pinner` that keeps every pin it gives, for the build memo to check again."""

    def __init__(self, module_path: list[Path]) -> None:
        super().__init__(module_path)
        self.modules: dict[str, Pin] = {}
        self.entry_points: dict[tuple[str, str], tuple[str, str, Pin]] = {}

    def pin_module(self, module: str) -> Pin:
        pin = self.modules[module] = super().pin_module(module)
        return pin

    def resolve_entry_point(self, group: str, name: str) -> Resolved:
        found = super().resolve_entry_point(group, name)
        self.entry_points[(group, name)] = (found.module, found.attr, found.pin)
        return found


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
    reuse_outputs: bool = False,
    warm: WarmState | None = None,
) -> Build:
    """Compile `targets` (all targets when None) from `paths` (the project's sources when None).

    `overlay` maps project-relative paths to text read instead of the file (unsaved buffers).
    `keep_trees` keeps every file's syntax tree in `Build.sources.modules` (no cache then).
    `reuse_outputs`: the caller needs only outputs, diagnostics and source texts, so
    the build memo may serve them (see the module docstring).
    `warm`: what a long-running process keeps between builds (used with the cache).
    """
    with gc_paused():
        strict = project.strict if strict is None else strict
        entries = discover(project, paths or [project.root / s for s in project.sources])
        use_cache = use_cache and not keep_trees
        warm = warm if use_cache else None
        cache = CheckCache(project.cache_dir, warm.files if warm else None) if use_cache else None
        module_dirs = [project.root / p for p in project.module_path] + (module_path or [])
        memo = None
        read = None  # the files the memo was compared against
        if cache is not None and not overlay:
            request = [str(project.root), targets, strict, [str(p) for p in module_dirs], entries]
            memo = cache.memo(_PLANNING_MODULES, json.dumps(request))
            if reuse_outputs:
                reused, read = _reuse(project, cache, memo, module_dirs, warm)
                if reused is not None:
                    cache.prune()
                    return reused
        pinner = _RecordingPinner(module_dirs)
        sources = load(project, entries, cache, overlay, keep_trees=keep_trees, read=read)
        recorded = [Path(os.path.relpath(d.resolve(), project.root)).as_posix() for d in module_dirs]
        build = _compile(sources, targets, strict, pinner, warm, recorded)
        if memo is not None and not build.failed:
            _remember(memo, build, pinner, warm)
        if cache is not None:
            cache.prune()
        return build


def _reuse(
    project: Project,
    cache: CheckCache,
    memo: Path,
    module_dirs: list[Path],
    warm: WarmState | None,
) -> tuple[Build | None, Sources | None]:
    """The build the memo stands for, when every file and pin it depends on is unchanged;
    and the files read to find out, if any (a whole build need not read them again)."""
    if warm is not None and warm.memo is not None and warm.memo[0] == memo:
        remembered: BuildMemo | None = warm.memo[1]
    else:
        blob = read_entry(memo)
        remembered = None if blob is None else load_entry(blob, BuildMemo)
    if remembered is None:
        return None, None
    sources = read_checksums(project, list(remembered.checksums), cache)
    if sources is None or sources.checksums != remembered.checksums:
        return None, sources
    pinner = Pinner(module_dirs)
    try:
        for module, pin in remembered.modules.items():
            if pinner.pin_module(module) != pin:
                return None, sources
        for (group, name), expected in remembered.entry_points.items():
            found = pinner.resolve_entry_point(group, name)
            if (found.module, found.attr, found.pin) != expected:
                return None, sources
    except PinError:
        return None, sources
    outputs = {name: seal(parts, sources) for name, parts in remembered.plans.items()}
    return Build(sources, None, outputs, diagnostics=list(remembered.diagnostics)), sources


def _remember(memo: Path, build: Build, pinner: _RecordingPinner, warm: WarmState | None) -> None:
    """Keep the memo of `build`: written now, or kept by `warm` and written by its `settle`."""
    checksums = build.sources.checksums
    if checksums.keys() != build.sources.files.keys():
        return  # a file without an entry: the next build could not compare it
    record = BuildMemo(
        dict(checksums),
        {name: plan.parts for name, plan in build.outputs.items()},
        tuple(build.diagnostics),
        pinner.modules,
        pinner.entry_points,
    )
    if warm is None:
        _write_memo(memo, record)
    else:
        warm.memo, warm.memo_unwritten = (memo, record), True


def _write_memo(memo: Path, record: BuildMemo) -> None:
    try:
        blob = dump_entry(record)
    except RecursionError:  # a diagnostic too deep to pickle: not remembered
        return
    write_entry(memo, blob)


def _compile(
    sources: Sources,
    targets: list[str] | None,
    strict: bool,
    pinner: Pinner,
    warm: WarmState | None,
    module_path: list[str],
) -> Build:
    program = check(sources)
    build = Build(sources, program)
    protocols = capabilities.ProtocolReader(pinner)
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
    for name in names:
        if name not in program.targets:
            continue
        target = program.targets[name]
        visible = sources.visible_from(target.place.file)
        if any(path not in sources.checked for path in visible):
            continue  # a file it depends on did not parse; its errors are already reported
        skipped = [sources.broken[path] for path in visible if path in sources.broken]
        if any(s.opaque or any(layer in s.layers for layer, _ in target.layers) for s in skipped):
            continue  # what a file skipped could be anything: the target is not resolved
        kept = warm.target(name, strict) if warm and not skipped else None
        resolution = resolve(
            program,
            sources,
            name,
            strict=strict,
            memo=warm.candidates if warm else None,
            decided=kept.decisions if kept else None,
            unknown=Skipped.union(skipped),
        )
        build.resolutions[name] = resolution
        diagnostics.extend(resolution.diagnostics)
        diagnostics.extend(capabilities.check(program, resolution, protocols))
        if skipped or has_errors(resolution.diagnostics):
            # No plan; but each winner's implementation is still looked for.
            diagnostics.extend(pin_errors(resolution, pinner))
            continue
        plan, plan_diagnostics = build_plan(
            resolution, sources, pinner, kept.plan if kept else None, module_path
        )
        diagnostics.extend(plan_diagnostics)
        if plan is not None:
            build.outputs[name] = plan
    build.diagnostics = sorted_diagnostics(diagnostics)
    if build.failed:
        build.outputs.clear()
    return build
