"""The incremental build: the pure pipeline (`_build.pipeline.Pipeline`) with
its stages served from earlier work, and `compile_project`, the compiler's
entry point (`oneiricc.compile_project`).

Three kinds of earlier work, each reused only where equal inputs guarantee
equal results:

- the on-disk cache of checked files (`cache.CheckCache`, through
  `cache.CachedLoader`): a rebuild parses and checks only the changed files;
- the build memo (`cache.BuildMemo`), the whole-build early cutoff: a
  successful build with the cache on is remembered under a key of what it was
  asked (targets, strictness, module path, the files found) with every file's
  entry checksum and every pin it took.  A later build asked the same, whose
  files all have the same checked form (a comment edit included) and whose
  pins are all the same, reuses its plans: only `sources` (the files' digests)
  and so the plan digest and bytes are made again.  Nothing is loaded, joined,
  resolved or planned then, so such a build has no `program` or `resolutions`:
  only callers that need the outputs and diagnostics alone ask for it
  (`reuse_outputs`);
- a long-running process's `memos.WarmState` (the build server): checked
  files by content, candidates by declaration, decisions and components by
  their inputs (`memos.MemoResolver`, `memos.MemoPlanner`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from oneiric._plan.document import Pin
from oneiric._plan.gcpause import gc_paused

from oneiricc._build import (
    capabilities,
    graphs,
    loader,
    pins,
    pipeline,
    planner,
    plugins,
    resolver,
)
from oneiricc._build.checker import Program
from oneiricc._build.loader import Sources
from oneiricc._build.pins import PinError, Pinner, Resolved
from oneiricc._build.pipeline import Build, Pipeline
from oneiricc._build.planner import CompiledPlan, seal
from oneiricc._build.project import Project
from oneiricc._build.resolver import Resolution
from oneiricc._incremental.cache import (
    BuildMemo,
    CachedLoader,
    CheckCache,
    ReadFiles,
    load_entry,
    read_checksums,
    read_entry,
    write_memo,
)
from oneiricc._incremental.memos import WarmState
from oneiricc._language.diagnostics import Diagnostic
from oneiricc._language.recovery import Skipped

if TYPE_CHECKING:
    from oneiricc._build.modules import Reader

# The code that turns checked files into plans: part of the memo's key, with what
# shapes the entries themselves (`cache`).
_PLANNING_MODULES = (
    loader,
    resolver,
    graphs,
    pins,
    planner,
    capabilities,
    plugins,
    pipeline,
    sys.modules[__name__],
    # the implementations check and the modules' reader: imported only by builds that check
    Path(pins.__file__ or "").with_name("implementations.py"),
    Path(pins.__file__ or "").with_name("modules.py"),
)


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

    `strict`: decisions made by declaration order are errors (default: the project's).
    `use_cache`: read and write the project's cache of checked files and build memos.
    `module_path`: directories to pin implementations from, besides the project's.
    `overlay` maps project-relative paths to text read instead of the file (unsaved buffers).
    `keep_trees` keeps every file's syntax tree in `Build.sources.modules` (no cache then).
    `reuse_outputs`: the caller needs only outputs, diagnostics and source texts, so
    the build memo may serve them (see the module docstring).
    `warm`: what a long-running process keeps between builds (used with the cache).
    """
    with gc_paused():
        if not use_cache or keep_trees:
            stages = Pipeline(
                project, module_path=module_path, overlay=overlay, keep_trees=keep_trees
            )
            return stages.run(paths, targets, strict)
        cache = CheckCache(project.cache_dir, warm.files if warm else None)
        incremental = IncrementalBuild(
            project,
            cache,
            module_path=module_path,
            overlay=overlay,
            warm=warm,
            reuse_outputs=reuse_outputs,
        )
        build = incremental.run(paths, targets, strict)
        cache.prune()
        return build


class IncrementalBuild(Pipeline):
    """The pipeline through the cache and the build memo, and with `warm`, through
    what a long-running process keeps.  `reuse_outputs`: see `compile_project`."""

    def __init__(
        self,
        project: Project,
        cache: CheckCache,
        *,
        module_path: list[Path] | None = None,
        overlay: Mapping[str, str] | None = None,
        warm: WarmState | None = None,
        reuse_outputs: bool = False,
    ) -> None:
        super().__init__(project, module_path=module_path, overlay=overlay)
        self.cache = cache
        self.warm = warm
        self.reuse_outputs = reuse_outputs
        self._read: ReadFiles | None = None  # the files the memo was compared against
        self._loader: CachedLoader | None = None
        self._pinner: _RecordingPinner | None = None

    def compile(self, entries: list[str], targets: list[str] | None, strict: bool) -> Build:
        if self.overlay:
            return super().compile(entries, targets, strict)
        request = [str(self.project.root), targets, strict, [str(p) for p in self.module_dirs]]
        memo = self.cache.memo(_PLANNING_MODULES, json.dumps([*request, entries]))
        if self.reuse_outputs:
            reused, self._read = self._reuse(memo)
            if reused is not None:
                return reused
        build = super().compile(entries, targets, strict)
        if not build.failed:
            self._remember(memo, build)
        return build

    def load(self, entries: list[str]) -> Sources:
        self._loader = CachedLoader(self.project, self.cache, self.overlay, self._read)
        return self._loader.load(entries)

    def pinner(self) -> Pinner:
        self._pinner = _RecordingPinner(self.module_dirs)
        return self._pinner

    def reader(self) -> Reader:
        from oneiricc._incremental.facts import FactsReader

        return FactsReader(self.cache, self.warm.facts if self.warm else None)

    def resolve(
        self,
        program: Program,
        sources: Sources,
        target: str,
        strict: bool,
        unknown: Skipped | None,
    ) -> Resolution:
        if self.warm is None or unknown is not None:  # (a broken file: no plan to reuse)
            return super().resolve(program, sources, target, strict, unknown)
        memo = self.warm.target(target, strict).resolver
        return memo.resolve(program, sources, target, strict=strict)

    def plan(
        self, resolution: Resolution, sources: Sources, pinner: Pinner, strict: bool
    ) -> tuple[CompiledPlan | None, list[Diagnostic]]:
        if self.warm is None:
            return super().plan(resolution, sources, pinner, strict)
        memo = self.warm.target(resolution.target.name, strict).planner
        return memo.build_plan(resolution, sources, pinner, self.recorded_module_path)

    def _reuse(self, memo: Path) -> tuple[Build | None, ReadFiles | None]:
        """The build the memo stands for, when every file and pin it depends on is unchanged;
        and the files read to find out, if any (a whole build need not read them again)."""
        warm = self.warm
        if warm is not None and warm.memo is not None and warm.memo[0] == memo:
            remembered: BuildMemo | None = warm.memo[1]
        else:
            blob = read_entry(memo)
            remembered = None if blob is None else load_entry(blob, BuildMemo)
        if remembered is None:
            return None, None
        read = read_checksums(self.project, list(remembered.checksums), self.cache)
        if read is None or read.checksums != remembered.checksums:
            return None, read
        pinner = Pinner(self.module_dirs)
        try:
            for module, pin in remembered.modules.items():
                if pinner.pin_module(module) != pin:
                    return None, read
            for (group, name), expected in remembered.entry_points.items():
                found = pinner.resolve_entry_point(group, name)
                if (found.module, found.attr, found.pin) != expected:
                    return None, read
            for group, listed in remembered.groups.items():
                if pinner.group(group) != listed:
                    return None, read  # a plugin was installed, removed or upgraded
        except PinError:
            return None, read
        sources = read.sources
        outputs = {name: seal(parts, sources) for name, parts in remembered.plans.items()}
        return Build(sources, None, outputs, diagnostics=list(remembered.diagnostics)), read

    def _remember(self, memo: Path, build: Build) -> None:
        """Keep the memo of `build`: written now, or kept by `warm` and written by its
        `settle`."""
        assert self._loader is not None
        assert self._pinner is not None
        checksums = self._loader.checksums
        if checksums.keys() != build.sources.files.keys():
            return  # a file without an entry: the next build could not compare it
        record = BuildMemo(
            dict(checksums),
            {name: plan.parts for name, plan in build.outputs.items()},
            tuple(build.diagnostics),
            self._pinner.modules,
            self._pinner.entry_points,
            self._pinner.groups,
        )
        if self.warm is None:
            write_memo(memo, record)
        else:
            self.warm.memo, self.warm.memo_unwritten = (memo, record), True


class _RecordingPinner(Pinner):
    """A `Pinner` that keeps every pin it gives, for the build memo to check again."""

    def __init__(self, module_path: list[Path]) -> None:
        super().__init__(module_path)
        self.modules: dict[str, Pin] = {}
        self.entry_points: dict[tuple[str, str], tuple[str, str, Pin]] = {}
        self.groups: dict[str, list[tuple[str, str, str, str]]] = {}

    def pin_module(self, module: str) -> Pin:
        pin = self.modules[module] = super().pin_module(module)
        return pin

    def group(self, group: str) -> list[tuple[str, str, str, str]]:
        found = self.groups[group] = super().group(group)
        return found

    def resolve_entry_point(self, group: str, name: str) -> Resolved:
        found = super().resolve_entry_point(group, name)
        self.entry_points[(group, name)] = (found.module, found.attr, found.pin)
        return found
