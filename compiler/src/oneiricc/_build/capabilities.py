"""Capabilities bound to protocols: does each provider define what it promises?

A stack binds a capability of a key to a Python protocol:

    capability adapter cache write = "oneiric.protocols:CacheWriter"

and every candidate of that key in a target that `provides write` must then
define the protocol's methods: the same names, each sync or async as the
protocol's, accepting every call the protocol's accepts (as many positional
arguments, its keyword-only ones).  Both classes are read from their source
with `ast`, located the way the pins locate modules; no user code runs.  A
class's bases are followed within its module and through `import`s into
other modules' sources.

What cannot be read statically is not an error: a module without source, a
class with a base that cannot be followed, a `__getattr__`, a method behind a
decorator this reader does not know (its presence counts, not its signature).
Only what is certainly missing or certainly different is reported (E0801), at
the candidate's `provides`.  A protocol that cannot be found is E0802, a
capability bound to two protocols in one target E0803.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oneiricc._build.checker import Binding, Impl
from oneiricc._build.pins import PinError, Pinner
from oneiricc._language.diagnostics import Diagnostic, Note, did_you_mean

if TYPE_CHECKING:
    from oneiricc._build.checker import Program
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
# Decorators that leave a method's signature as written.
_PLAIN_DECORATORS = frozenset({"abstractmethod", "abc.abstractmethod", "override", "final"})
# Methods of a protocol class that are not part of what it asks for.
_NOT_MEMBERS = frozenset(
    {"__init__", "__new__", "__init_subclass__", "__class_getitem__", "__subclasshook__"}
)
_MAX_DEPTH = 20  # bases followed across modules, at most


@dataclass(frozen=True, slots=True)
class Method:
    """A method as a caller sees it; `is_async` None: present, signature not read."""

    name: str
    is_async: bool | None
    min_positional: int = 0
    max_positional: int | None = None  # None: *args
    keywords: frozenset[str] = frozenset()  # keyword-only parameters
    required_keywords: frozenset[str] = frozenset()
    any_keyword: bool = False  # **kwargs


@dataclass(slots=True)
class _Class:
    methods: dict[str, Method]
    bases: list[tuple[str, str] | None]  # (module, name) of each base; None: not followed
    opaque: str | None  # why its methods are not all known from its body


@dataclass(slots=True)
class _Module:
    classes: dict[str, _Class] = field(default_factory=dict)
    functions: dict[str, Method] = field(default_factory=dict)
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, attr)
    modules: dict[str, str] = field(default_factory=dict)  # local name -> module (`import`)
    names: set[str] = field(default_factory=set)  # every top-level name bound


class _Unknown(Exception):
    """What a class is made of cannot be read statically (the message says why)."""


class ProtocolReader:
    """Reads modules' sources (once each per build) through a build's `Pinner`."""

    def __init__(self, pinner: Pinner) -> None:
        self.pinner = pinner
        self._modules: dict[str, _Module | None] = {}

    def module(self, name: str) -> _Module | None:
        """The module's facts; None when it has no readable Python source."""
        if name not in self._modules:
            self._modules[name] = self._read(name)
        return self._modules[name]

    def _read(self, name: str) -> _Module | None:
        try:
            self.pinner.pin_module(name)  # (recorded: a build memo depends on the file)
        except PinError:
            return None
        origin = self.pinner.source_of(name)
        if origin is None or not origin.endswith(".py"):
            return None
        try:
            with open(origin, "rb") as file:
                tree = ast.parse(file.read())
        except (OSError, SyntaxError, ValueError):
            return None
        package = name if os.path.basename(origin) == "__init__.py" else name.rpartition(".")[0]
        return _facts(tree, name, package)

    def methods(self, module: str, attr: str, depth: int = 0) -> dict[str, Method]:
        """The methods of class `module:attr`, its bases' included (raises `_Unknown`)."""
        if depth > _MAX_DEPTH:
            raise _Unknown("its bases are nested too deeply to follow")
        facts = self.module(module)
        if facts is None:
            raise _Unknown(f"module {module} has no readable Python source")
        found = facts.classes.get(attr)
        if found is None:
            if attr in facts.imported:
                return self.methods(*facts.imported[attr], depth + 1)
            raise _Unknown(f"{module}:{attr} is not a class defined in its module")
        if found.opaque is not None:
            raise _Unknown(found.opaque)
        methods: dict[str, Method] = {}
        for base in reversed(found.bases):
            if base is None:
                raise _Unknown(f"a base of {module}:{attr} cannot be followed statically")
            if f"{base[0]}:{base[1]}" not in _TRANSPARENT:
                methods.update(self.methods(*base, depth + 1))
        methods.update(found.methods)
        return methods


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _facts(tree: ast.Module, module: str, package: str) -> _Module:
    facts = _Module()
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                local = alias.asname or alias.name.partition(".")[0]
                facts.modules[local] = alias.name if alias.asname else local
                facts.names.add(local)
        elif isinstance(stmt, ast.ImportFrom):
            source = stmt.module or ""
            if stmt.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (stmt.level - 1)] if stmt.level > 1 else base
                source = ".".join([*base, *([stmt.module] if stmt.module else [])])
            for alias in stmt.names:
                local = alias.asname or alias.name
                facts.imported[local] = (source, alias.name)
                facts.names.add(local)
        elif isinstance(stmt, ast.ClassDef):
            facts.classes[stmt.name] = _class(stmt, facts, module)
            facts.names.add(stmt.name)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            facts.functions[stmt.name] = _method(stmt, in_class=False)
            facts.names.add(stmt.name)
    # A name bound again after its definition (an assignment, a second class) is not
    # what the definition says: it is not read.
    for stmt in tree.body:
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        for target in targets:
            if isinstance(target, ast.Name):
                facts.classes.pop(target.id, None)
                facts.functions.pop(target.id, None)
                facts.names.add(target.id)
    return facts


def _class(node: ast.ClassDef, facts: _Module, module: str) -> _Class:
    methods: dict[str, Method] = {}
    opaque = None
    pending = list(node.body)
    while pending:
        stmt = pending.pop(0)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            methods[stmt.name] = _method(stmt, in_class=True)
            if stmt.name in ("__getattr__", "__getattribute__"):
                opaque = f"class {node.name} defines {stmt.name}"
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    methods[target.id] = Method(target.id, None)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            methods[stmt.target.id] = Method(stmt.target.id, None)
        elif isinstance(stmt, (ast.If, ast.Try)):  # either branch may define it: present
            for inner in ast.walk(stmt):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    methods.setdefault(inner.name, Method(inner.name, None))
    bases: list[tuple[str, str] | None] = []
    for base in node.bases:
        while isinstance(base, ast.Subscript):  # Generic[T], Protocol[T], Base[int]
            base = base.value
        bases.append(_base(base, facts, module))
    return _Class(methods, bases, opaque)


def _base(node: ast.expr, facts: _Module, module: str) -> tuple[str, str] | None:
    name = _dotted(node)
    if name is None:
        return None
    head, _, rest = name.partition(".")
    if not rest:
        if head in facts.classes:
            return (module, head)
        if head in facts.imported:
            return facts.imported[head]
        return ("builtins", head) if head == "object" else None
    if head in facts.modules:  # import pkg.mod; class C(pkg.mod.Base)
        owner, _, attr = f"{facts.modules[head]}.{rest}".rpartition(".")
        return (owner, attr)
    if head in facts.imported:  # from pkg import mod; class C(mod.Base)
        source, name = facts.imported[head]
        owner, _, attr = f"{source}.{name}.{rest}".lstrip(".").rpartition(".")
        return (owner, attr)
    return None


def _method(node: ast.FunctionDef | ast.AsyncFunctionDef, *, in_class: bool) -> Method:
    decorators = [_dotted(d) for d in node.decorator_list]
    static = "staticmethod" in decorators
    known = {"staticmethod", "classmethod", *_PLAIN_DECORATORS}
    if any(d is None or d not in known for d in decorators):
        return Method(node.name, None)  # a property, an overload, a wrapper: present
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    if in_class and not static and positional:
        positional = positional[1:]  # self, or cls
    optional = min(len(args.defaults), len(positional))
    return Method(
        node.name,
        isinstance(node, ast.AsyncFunctionDef),
        len(positional) - optional,
        None if args.vararg else len(positional),
        frozenset(a.arg for a in args.kwonlyargs),
        frozenset(
            a.arg for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True) if default is None
        ),
        args.kwarg is not None,
    )


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


@dataclass(slots=True)
class _Protocol:
    binding: Binding
    methods: dict[str, Method] | None  # None: not checked (or not found: reported)


def check(program: Program, resolution: Resolution, reader: ProtocolReader) -> list[Diagnostic]:
    """E0801-E0803 for one target: its bindings, and every candidate providing one."""
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
    if not bound:
        return diagnostics
    protocols: dict[tuple[str, str, str], _Protocol] = {}
    for decision in resolution.decisions.values():
        for cand in [decision.winner, *(loss.candidate for loss in decision.losers)]:
            for capability in cand.provides:
                identity = (cand.domain, cand.key, capability)
                promised = bound.get(identity)
                if promised is None:
                    continue
                if identity not in protocols:
                    protocols[identity] = _Protocol(
                        promised, _protocol_methods(promised, reader, diagnostics)
                    )
                wanted = protocols[identity].methods
                if wanted:
                    _check_candidate(cand, promised, wanted, reader, diagnostics)
    return diagnostics


def _protocol_methods(
    binding: Binding, reader: ProtocolReader, diagnostics: list[Diagnostic]
) -> dict[str, Method] | None:
    facts = reader.module(binding.module)

    def report(message: str, help: str | None) -> None:
        diagnostics.append(
            Diagnostic(
                "E0802", message, binding.protocol_place.file, binding.protocol_place.pos, help
            )
        )

    if facts is None:
        try:
            reader.pinner.pin_module(binding.module)
        except PinError as exc:
            report(f'protocol module "{binding.module}" not found', exc.help)
        return None  # (found, but without Python source: not checked)
    if binding.attr not in facts.names:
        report(
            f"module {binding.module} defines no {binding.attr}",
            did_you_mean(binding.attr, facts.classes)
            or f"classes of {binding.module}: {', '.join(sorted(facts.classes)) or 'none'}",
        )
        return None
    if binding.attr in facts.functions:
        report(f"{binding.protocol} is a function, not a protocol class", None)
        return None
    try:
        methods = reader.methods(binding.module, binding.attr)
    except _Unknown:
        return None
    return {name: m for name, m in methods.items() if _member(name)}


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
) -> None:
    impl: Impl | None = cand.fields.get("impl")
    if impl is None:
        return
    module, attr = impl.module, impl.attr
    if impl.kind == "entrypoint":
        try:
            found = reader.pinner.resolve_entry_point(impl.module, impl.attr)
        except PinError:
            return  # reported by the pins where it matters
        module, attr = found.module, found.attr
    facts = reader.module(module)
    if facts is None:
        return
    if attr in facts.functions:
        have = {"__call__": facts.functions[attr]}
    else:
        try:
            have = reader.methods(module, attr)
        except _Unknown:
            return  # not checked
    problems = mismatches(wanted, have)
    if not problems:
        return
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
