"""What a long-running process (the build server) keeps from one build to the
next, and the memoizing stages that use it.

`WarmState` holds it: the checked files of the latest build (`cache.KeptFiles`),
the resolver's candidates, and per target and strictness a `MemoResolver` (its
decisions) and a `MemoPlanner` (its components and workflows).  Each memoizing
stage overrides the pure stage's seams (`_build.resolver.Resolver`,
`_build.planner.Planner`) and reuses only what equal inputs guarantee equal:
candidates and declarations are never changed once made, so an object of the
last build that is the very same one stands for the same result.  Like the
cache, the memos make a build cheaper, never different.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from oneiricc._build.checker import Decl, Program
from oneiricc._build.loader import Sources
from oneiricc._build.pins import Pinner
from oneiricc._build.planner import CompiledPlan, Made, MadeWorkflow, Pinned, Planner
from oneiricc._build.resolver import (
    Candidate,
    Decision,
    Key,
    KeyInputs,
    Resolution,
    Resolver,
    decision_inputs,
)
from oneiricc._incremental.cache import BuildMemo, KeptFiles, LatestBuild, write_memo
from oneiricc._language.diagnostics import Diagnostic
from oneiricc._language.recovery import Skipped

if TYPE_CHECKING:
    from oneiricc._build.modules import ModuleFacts

# Candidates kept from one build to the next, a layer's at a time, by (identity of the
# layer's declarations, layer position): the candidates made of single declarations
# (not refined) are the same in every build in which that layer's declarations are
# the very same objects, as an unchanged file's are.  The value holds the
# declarations too, so that their id stays their own.
CandidateMemo = LatestBuild[tuple[int, int], tuple[list[Decl], list[Candidate]]]


@dataclass(slots=True)  # not frozen: made for every key of every build in a server
class _Decided:
    """A decision (None: an error) with what it was made of and what it reported."""

    inputs: KeyInputs
    decision: Decision | None
    diagnostics: list[Diagnostic]

    def made_of(self, inputs: KeyInputs) -> bool:
        """Made of these very objects: then deciding again would give the same."""
        mine = self.inputs
        return (
            mine.selection is inputs.selection
            and len(mine.cands) == len(inputs.cands)
            and all(a is b for a, b in zip(mine.cands, inputs.cands, strict=True))
            and len(mine.consumers) == len(inputs.consumers)
            and all(
                a[0] is b[0] and a[1] is b[1]
                for a, b in zip(mine.consumers, inputs.consumers, strict=True)
            )
        )


class MemoResolver(Resolver):
    """One target's resolver at one strictness, kept from one build to the next.

    Candidates come from the candidates memo shared by every target.  A decision
    depends on its key's candidates, selection and consumers alone (and on the
    target's name and the strictness, fixed per resolver): when those are the
    very objects of the last build, the last decision and its diagnostics stand.
    Every decision keeps what it was made from (`Decision.inputs`), so that the
    planner can tell which are the same as the last build's.
    """

    def __init__(self, candidates: CandidateMemo) -> None:
        self.kept_candidates = candidates
        self.last: dict[Key, _Decided] = {}
        self._made: dict[Key, _Decided] = {}

    def resolve(
        self,
        program: Program,
        sources: Sources,
        target_name: str,
        *,
        strict: bool,
        unknown: Skipped | None = None,
    ) -> Resolution:
        self._made = {}
        resolution = super().resolve(program, sources, target_name, strict=strict, unknown=unknown)
        self.last, self._made = self._made, {}
        return resolution

    def candidates(self, decls: list[Decl], layer_name: str, index: int) -> list[Candidate]:
        kept = self.kept_candidates
        made = kept.get((id(decls), index))
        if made is None or made[0] is not decls or (made[1] and made[1][0].layer != layer_name):
            made = (decls, super().candidates(decls, layer_name, index))
        kept.put((id(decls), index), made)
        return made[1]

    def decide(self, key: Key, inputs: KeyInputs) -> Decision | None:
        last = self.last.get(key)
        if last is not None and last.made_of(inputs):
            self.report.diagnostics.extend(last.diagnostics)
            self._made[key] = last
            return last.decision
        reported = len(self.report.diagnostics)
        decision = super().decide(key, inputs)
        if decision is not None:
            decision.inputs = decision_inputs(inputs)
        self._made[key] = _Decided(inputs, decision, self.report.diagnostics[reported:])
        return decision


class MemoPlanner(Planner):
    """One target's planner at one strictness, kept from one build to the next.

    A component is made of its decision and its implementation's pin alone, and a
    decision of its inputs (`Decision.inputs`): when both are equal to the last
    build's, so is the component, and it is not made nor encoded again.  A
    workflow is made of its winning candidate alone: when that is the very object
    the last build's was (`MemoResolver` gives an unchanged declaration the same
    candidate), so is the workflow.
    """

    def __init__(self) -> None:
        self.last: dict[Key, Made] = {}
        self.last_workflows: dict[Key, MadeWorkflow] = {}
        self._made: dict[Key, Made] = {}
        self._made_workflows: dict[Key, MadeWorkflow] = {}

    def build_plan(
        self,
        resolution: Resolution,
        sources: Sources,
        pinner: Pinner,
        module_path: list[str] | None = None,
    ) -> tuple[CompiledPlan | None, list[Diagnostic]]:
        self._made, self._made_workflows = {}, {}
        plan, diagnostics = super().build_plan(resolution, sources, pinner, module_path)
        if plan is not None:  # (a plan that fails makes nothing: the last build's are kept)
            self.last = self._made
            self.last_workflows = self._made_workflows
        self._made, self._made_workflows = {}, {}
        return plan, diagnostics

    def component(self, key: Key, decision: Decision, pinned: Pinned) -> Made:
        last = self.last.get(key)
        if (
            last is not None
            and decision.inputs is not None
            and last.pinned == pinned
            and last.inputs == decision.inputs
        ):
            made = last
        else:
            made = super().component(key, decision, pinned)
        self._made[key] = made
        return made

    def workflow(self, key: Key, winner: Candidate) -> MadeWorkflow:
        last = self.last_workflows.get(key)
        made = last if last is not None and last.winner is winner else super().workflow(key, winner)
        self._made_workflows[key] = made
        return made


@dataclass(slots=True)
class TargetMemo:
    """What a long-running process keeps of one target's builds at one strictness."""

    resolver: MemoResolver
    planner: MemoPlanner = field(default_factory=MemoPlanner)


@dataclass(slots=True)
class WarmState:
    """What a long-running process (the build server) keeps from one build to the next:
    the checked files and implementation modules' facts of the latest build, the resolver's
    candidates, each target's
    decisions, components and workflows (per strictness), and the latest build memo.
    Its owner calls `next_build` after each build, and `settle` once the build's caller
    has its answer."""

    files: KeptFiles = field(default_factory=KeptFiles)
    # implementation modules' facts, by file hash (`facts.KeptFacts`)
    facts: LatestBuild[str, ModuleFacts] = field(default_factory=LatestBuild)
    candidates: CandidateMemo = field(default_factory=CandidateMemo)
    targets: LatestBuild[tuple[str, bool], TargetMemo] = field(default_factory=LatestBuild)
    # The latest build memo (where it lives, what it holds), read from here rather than
    # from disk; and whether it is still to be written there (by `settle`).
    memo: tuple[Path, BuildMemo] | None = None
    memo_unwritten: bool = False

    def target(self, name: str, strict: bool) -> TargetMemo:
        memo = self.targets.get((name, strict)) or TargetMemo(MemoResolver(self.candidates))
        self.targets.put((name, strict), memo)
        return memo

    def next_build(self) -> None:
        """Forget what the build just finished did not use."""
        self.files.next_build()
        self.facts.next_build()
        self.candidates.next_build()
        self.targets.next_build()

    def settle(self) -> None:
        """Write what a build leaves for after its answer: its memo, for later processes."""
        if self.memo is not None and self.memo_unwritten:
            self.memo_unwritten = False
            write_memo(*self.memo)
