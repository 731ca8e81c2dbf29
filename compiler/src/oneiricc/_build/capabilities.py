"""Capabilities bound to protocols: does each provider define what it promises?

A stack binds a capability of a key to a Python protocol:

    capability adapter cache write = "oneiric.protocols:CacheWriter"

and every candidate of that key in a target that `provides write` must then
define the protocol's methods: the same names, each sync or async as the
protocol's, accepting every call the protocol's accepts (as many positional
arguments, its keyword-only ones).  Both classes come from their modules'
facts (`modules`: read from source with `ast`, located the way the pins
locate modules; no user code runs).  A class's bases are followed within its
module and through `import`s into other modules.

What cannot be read statically is not an error: a module without source, a
class with a base that cannot be followed, a `__getattr__`, a method behind a
decorator this reader does not know (its presence counts, not its signature).
The capability is then "not checked", with the reason (`Fit`, shown by
`oneiricc explain`).  Only what is certainly missing or certainly different is
reported (E0801), at the candidate's `provides`.  A protocol that cannot be
found is E0802, a capability bound to two protocols in one target E0803.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oneiricc._build.checker import Binding, Impl
from oneiricc._build.pins import PinError, Pinner
from oneiricc._language.diagnostics import Diagnostic, Note, did_you_mean

if TYPE_CHECKING:
    from oneiricc._build.checker import Program
    from oneiricc._build.modules import Import, Method, ModuleFacts, Reader
    from oneiricc._build.resolver import Candidate, Resolution

# Bases that add no method a protocol could ask for.
_TRANSPARENT = frozenset(
    {
        "builtins:object",
        "typing:Protocol",
        "typing:Generic",
        "typing_extensions:Protocol",
        "typing_extensions:Generic",
        "abc:ABC",
    }
)
# Methods of a protocol class that are not part of what it asks for.
_NOT_MEMBERS = frozenset(
    {"__init__", "__new__", "__init_subclass__", "__class_getitem__", "__subclasshook__"}
)
_MAX_DEPTH = 20  # bases followed across modules, at most


class _Unknown(Exception):
    """What a class is made of cannot be read statically (the message says why)."""


class ProtocolReader:
    """Classes of modules located through a build's `Pinner`, from their facts
    (`modules.Reader`: each file read once per build)."""

    def __init__(self, pinner: Pinner, reader: Reader) -> None:
        self.pinner = pinner
        self.reader = reader

    def module(self, name: str) -> ModuleFacts | None:
        """The module's facts; None when it cannot be located."""
        try:
            return self.reader.module(self.pinner, name)
        except PinError:
            return None

    def methods(
        self, module: str, attr: str, within: tuple[tuple[str, str], ...] = ()
    ) -> dict[str, Method]:
        """The methods of class `module:attr`, its bases' included (raises `_Unknown`);
        `within`: the classes it was reached from."""
        if (module, attr) in within:
            raise _Unknown(f"the bases of {module}:{attr} form a cycle")
        if len(within) > _MAX_DEPTH:
            first = ":".join(within[0])
            raise _Unknown(f"the bases of {first} are nested more than {_MAX_DEPTH} deep")
        facts = self.module(module)
        if facts is None:
            raise _Unknown(f"{module}:{attr} is in a module that is not found")
        found = facts.classes.get(attr)
        if found is None:
            imported = facts.imports.get(attr)
            if imported is not None and imported[2] is not None:
                return self.methods(*self._imported(module, imported), (*within, (module, attr)))
            if attr not in facts.names and facts.undecidable is not None:
                raise _Unknown(
                    f"the names of {module} are not known statically: {facts.undecidable}"
                )
            raise _Unknown(f"{module}:{attr} is not a class defined in its module")
        if found.opaque is not None:
            raise _Unknown(f"class {module}:{attr} {found.opaque}")
        methods: dict[str, Method] = {}
        for written in reversed(found.bases):
            base = None if written is None else self._base(module, facts, written)
            if base is None:
                raise _Unknown(f"a base of {module}:{attr} cannot be followed statically")
            if f"{base[0]}:{base[1]}" not in _TRANSPARENT:
                methods.update(self.methods(*base, (*within, (module, attr))))
        methods.update(found.methods)
        return methods

    def _imported(self, module: str, imported: Import) -> tuple[str, str]:
        """(module, name) of a name `from … import`ed by `module`."""
        level, source, name = imported
        assert name is not None
        if level:
            is_package = os.path.basename(self.pinner.source_of(module) or "") == "__init__.py"
            package = module if is_package else module.rpartition(".")[0]
            parts = package.split(".") if package else []
            parts = parts[: len(parts) - (level - 1)]
            source = ".".join([*parts, *([source] if source else [])])
        return source, name

    def _base(self, module: str, facts: ModuleFacts, written: str) -> tuple[str, str] | None:
        """(module, name) of the class a base of a class of `module` names."""
        head, _, rest = written.partition(".")
        imported = facts.imports.get(head)
        if not rest:
            if head in facts.classes:
                return (module, head)
            if imported is not None and imported[2] is not None:
                return self._imported(module, imported)
            return ("builtins", head) if head == "object" else None
        if imported is None:
            return None
        if imported[2] is None:  # import pkg.mod; class C(pkg.mod.Base)
            owner, _, attr = f"{imported[1]}.{rest}".rpartition(".")
        else:  # from pkg import mod; class C(mod.Base)
            source, name = self._imported(module, imported)
            owner, _, attr = f"{source}.{name}.{rest}".lstrip(".").rpartition(".")
        return (owner, attr)


def _arguments(count: int | None) -> str:
    if count is None:
        return "any number of arguments"
    return f"{count} argument{'' if count == 1 else 's'}"


def mismatches(protocol: dict[str, Method], impl: dict[str, Method]) -> list[str]:
    """What in `impl` certainly does not fit `protocol`, one phrase each."""
    missing = sorted(name for name in protocol if name not in impl)
    problems = [f"it has no {', '.join(missing)}"] if missing else []
    for name in sorted(protocol):
        want, have = protocol[name], impl.get(name)
        if have is None or want.is_async is None or have.is_async is None:
            continue
        if want.is_async != have.is_async:
            problems.append(
                f"its {name} is {'an async def' if have.is_async else 'a def'}, the protocol's "
                f"{'an async def' if want.is_async else 'a def'}"
            )
            continue
        if have.min_positional > want.min_positional:
            problems.append(
                f"its {name} requires {_arguments(have.min_positional)}, the protocol's "
                f"{_arguments(want.min_positional)}"
            )
        elif have.max_positional is not None and (
            want.max_positional is None or have.max_positional < want.max_positional
        ):
            problems.append(
                f"its {name} takes at most {_arguments(have.max_positional)}, the protocol's "
                f"{_arguments(want.max_positional)}"
            )
        if want.any_keyword and not have.any_keyword:
            problems.append(f"its {name} takes no **kwargs, the protocol's does")
        lacking = sorted(want.keywords - have.keywords) if not have.any_keyword else []
        extra = sorted(have.required_keywords - want.required_keywords)
        if lacking:
            problems.append(f"its {name} has no keyword argument {', '.join(lacking)}")
        if extra:
            problems.append(f"its {name} requires keyword argument {', '.join(extra)}")
    return problems


@dataclass(frozen=True, slots=True)
class Fit:
    """What the build could confirm of a component's capability bound to a protocol, for
    `oneiricc explain`."""

    protocol: str  # "module:Class"
    reason: str | None  # why it is not checked; None: checked (it fits, or E0801)


@dataclass(slots=True)
class _Protocol:
    binding: Binding
    methods: dict[str, Method] | None  # None: not checked (`reason`), or not found (reported)
    reason: str | None


def check(
    program: Program, resolution: Resolution, reader: ProtocolReader
) -> tuple[list[Diagnostic], dict[str, dict[str, Fit]]]:
    """E0801-E0803 for one target: its bindings, and every candidate providing one; and
    for each winner (by component id), what was checked of each capability it provides."""
    diagnostics: list[Diagnostic] = []
    bound: dict[tuple[str, str, str], Binding] = {}
    for name, _ in resolution.target.layers:
        layer = program.layers.get(name)
        for identity, binding in layer.bindings.items() if layer else ():
            first = bound.setdefault(identity, binding)
            if first.protocol != binding.protocol:
                diagnostics.append(
                    Diagnostic(
                        "E0803",
                        f"capability {binding.capability} of {binding.domain} {binding.key} is "
                        f"bound to {binding.protocol} here, but to {first.protocol} by an "
                        f"earlier layer of target {resolution.target.name}",
                        binding.place.file,
                        binding.place.pos,
                        help="bind each capability to one protocol; a later layer may not rebind it",
                        notes=(Note(first.place.file, first.place.pos, "first bound"),),
                    )
                )
    fits: dict[str, dict[str, Fit]] = {}
    if not bound:
        return diagnostics, fits
    protocols: dict[tuple[str, str, str], _Protocol] = {}
    for key, decision in resolution.decisions.items():
        for cand in [decision.winner, *(loss.candidate for loss in decision.losers)]:
            for capability in cand.provides:
                identity = (cand.domain, cand.key, capability)
                promised = bound.get(identity)
                if promised is None:
                    continue
                protocol = protocols.get(identity)
                if protocol is None:
                    protocol = protocols[identity] = _protocol(promised, reader, diagnostics)
                if protocol.methods is None:
                    reason = protocol.reason
                    if reason is None:
                        continue  # (the protocol is not found: E0802)
                else:
                    reason = _check_candidate(cand, promised, protocol.methods, reader, diagnostics)
                if cand is decision.winner:
                    fits.setdefault(f"{key[0]}:{key[1]}", {})[capability] = Fit(
                        promised.protocol, reason
                    )
    return diagnostics, fits


def _protocol(binding: Binding, reader: ProtocolReader, diagnostics: list[Diagnostic]) -> _Protocol:
    """The methods `binding`'s protocol asks for; or why they are not known (E0802 when
    the protocol is not found: no reason)."""

    def report(message: str, help: str | None) -> _Protocol:
        diagnostics.append(
            Diagnostic(
                "E0802", message, binding.protocol_place.file, binding.protocol_place.pos, help
            )
        )
        return _Protocol(binding, None, None)

    try:
        facts = reader.reader.module(reader.pinner, binding.module)
    except PinError as exc:
        return report(f'protocol module "{binding.module}" not found', exc.help)
    if binding.attr not in facts.names:
        if facts.undecidable is not None:
            reason = f"the names of {binding.module} are not known statically: {facts.undecidable}"
            return _Protocol(binding, None, reason)
        return report(
            f"module {binding.module} defines no {binding.attr}",
            did_you_mean(binding.attr, facts.classes)
            or f"classes of {binding.module}: {', '.join(sorted(facts.classes)) or 'none'}",
        )
    if binding.attr in facts.functions:
        return report(f"{binding.protocol} is a function, not a protocol class", None)
    try:
        methods = reader.methods(binding.module, binding.attr)
    except _Unknown as unknown:
        return _Protocol(binding, None, str(unknown))
    return _Protocol(binding, {name: m for name, m in methods.items() if _member(name)}, None)


def _member(name: str) -> bool:
    if name in _NOT_MEMBERS:
        return False
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _check_candidate(
    cand: Candidate,
    binding: Binding,
    wanted: dict[str, Method],
    reader: ProtocolReader,
    diagnostics: list[Diagnostic],
) -> str | None:
    """Why `cand` cannot be checked against `wanted`; None when it was (E0801 when it does
    not fit), or when its implementation cannot be located (E0602, E0603: the planner's)."""
    impl: Impl | None = cand.fields.get("impl")
    if impl is None:
        return f"a {cand.domain} has no implementation to check"
    module, attr = impl.module, impl.attr
    if impl.kind == "entrypoint":
        try:
            found = reader.pinner.resolve_entry_point(impl.module, impl.attr)
        except PinError:
            return None
        module, attr = found.module, found.attr
    facts = reader.module(module)
    if facts is None:
        return None
    if attr in facts.functions:
        have = {"__call__": facts.functions[attr]}
    else:
        try:
            have = reader.methods(module, attr)
        except _Unknown as unknown:
            return str(unknown)
    problems = mismatches(wanted, have)
    if not problems:
        return None
    place = cand.field_places.get("provides", cand.place)
    diagnostics.append(
        Diagnostic(
            "E0801",
            f'{cand.domain} {cand.key} "{cand.provider}" provides {binding.capability}, but '
            f"{module}:{attr} does not fit {binding.protocol}: {'; '.join(problems)}",
            place.file,
            place.pos,
            help=f"define what {binding.protocol} asks for in {module}:{attr}, "
            f"or do not claim {binding.capability}",
            notes=(
                Note(
                    binding.place.file,
                    binding.place.pos,
                    f"{binding.capability} is bound to {binding.protocol}",
                ),
            ),
        )
    )
    return None
