"""What a Python module's source says, read once per file content and never imported.

`read_module` gives a module's `ModuleFacts`: the names bound at its top level
(and why they cannot all be known, when they cannot), for each function or
class the parameters a caller may pass with each annotation read into a
`Type` (the implementations check, `implementations`), and each class's
methods (name, arity, sync or async), its bases and the module's imports (the
capabilities check, `capabilities`).  Facts depend only on the file's bytes:
a `Reader` reads each file once per build, and the incremental build
(`_incremental.facts.FactsReader`) keeps them by file hash, on disk and in a
long-running process.  `Reader.module` gives them by module name, through a
build's `Pinner` (so a build memo depends on the file).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oneiricc._build.pins import Pinner

# ----------------------------------------------------------------- types --


@dataclass(frozen=True, slots=True)
class Type:
    """What an annotation admits, as far as config values go.

    kind: any, none, bool, int, float, str, duration, list (args: item), map
    (args: value), literal (values), union (args), struct (fields; `open` when
    unknown keys are accepted, as pydantic models do by default).
    """

    kind: str
    args: tuple[Type, ...] = ()
    values: tuple[object, ...] = ()
    fields: tuple[StructField, ...] = ()
    open: bool = False


@dataclass(frozen=True, slots=True)
class StructField:
    name: str
    type: Type | None  # None: not checked
    required: bool


ANY = Type("any")


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: str  # "positional" (positional-only), "either", "keyword"
    required: bool
    type: Type | None  # None: the annotation is not read statically (`reason`)
    annotation: str  # as written ("" when there is none)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Signature:
    """The parameters of a function, or of a class's `__init__` without `self`."""

    params: tuple[Param, ...]
    varargs: bool
    varkw: bool
    where: str  # "name(...)" as a message names it, with its line in the module


@dataclass(frozen=True, slots=True)
class Opaque:
    """A top-level name whose signature is not read statically, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Method:
    """A function or method as a caller sees it; `is_async` None: present, signature not
    read (a property, an overload, a wrapper)."""

    name: str
    is_async: bool | None
    min_positional: int = 0
    max_positional: int | None = None  # None: *args
    keywords: frozenset[str] = frozenset()  # keyword-only parameters
    required_keywords: frozenset[str] = frozenset()
    any_keyword: bool = False  # **kwargs


@dataclass(frozen=True, slots=True)
class ClassFacts:
    """A class as its body says: what it defines and what it derives from."""

    methods: dict[str, Method]  # and attributes (present, not read)
    bases: tuple[str | None, ...]  # each as written, `a.b.C` (None: not a dotted name)
    opaque: str | None  # why its methods are not all known from its body ("defines …")


# A name bound by an import: (level, module, name); name None for `import module`
# (whose local name is `module`'s first part, or its `as` name).
Import = tuple[int, str, str | None]


@dataclass(frozen=True, slots=True)
class ModuleFacts:
    """What a module's source says, independent of any stack."""

    names: frozenset[str]
    # Why the top-level names are not all known (module-level __getattr__, a star
    # import, no source at all); None when they are.
    undecidable: str | None
    definitions: dict[str, Signature | Opaque]
    # The names bound once at the top level by a class statement, a def, an import.
    classes: dict[str, ClassFacts]
    functions: dict[str, Method]
    imports: dict[str, Import]


# -------------------------------------------------------------- reading --


def read_module(source: bytes) -> ModuleFacts:
    """The facts of a module's source; a file that does not parse decides nothing."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        return unreadable(f"its source does not parse ({exc})")
    return _Reader(tree, source).facts()


def unreadable(reason: str) -> ModuleFacts:
    return ModuleFacts(frozenset(), reason, {}, {}, {}, {})


_TYPING = ("typing", "typing_extensions")
_LIST_ORIGINS = {
    "builtins.list",
    *(
        f"{m}.{n}"
        for m in (*_TYPING, "collections.abc")
        for n in ("List", "Sequence", "MutableSequence", "Iterable", "Collection")
    ),
}
_MAP_ORIGINS = {
    "builtins.dict",
    *(
        f"{m}.{n}"
        for m in (*_TYPING, "collections.abc")
        for n in ("Dict", "Mapping", "MutableMapping")
    ),
}
_SCALARS = {
    "builtins.int": Type("int"),
    "builtins.float": Type("float"),
    "builtins.str": Type("str"),
    "builtins.bool": Type("bool"),
    "builtins.object": ANY,
    "builtins.list": Type("list", (ANY,)),
    "builtins.dict": Type("map", (ANY,)),
    "typing.Any": ANY,
    "typing_extensions.Any": ANY,
    "datetime.timedelta": Type("duration"),
    "oneiric.Secret": Type("str"),
    "oneiric._plan.values.Secret": Type("str"),
}
_TRANSPARENT_CLASS_BASES = {"builtins.object", "typing.Generic", "typing_extensions.Generic"}


def _typing(qualified: str, *names: str) -> bool:
    module, _, name = qualified.rpartition(".")
    return module in _TYPING and name in names


class _Reader:
    def __init__(self, tree: ast.Module, source: bytes) -> None:
        self.tree = tree
        self.bindings: dict[str, list[ast.stmt]] = {}
        self.imports: dict[str, str] = {}  # local name → qualified name
        self.imported: dict[str, Import] = {}
        self.undecidable: str | None = None
        # Walking every node of a large module costs more than parsing it: the source's
        # text says first whether there is anything to find (a match in a comment or a
        # string only costs the walk, or makes the module "not checked").
        self._walrus = b":=" in source
        self._bind_all(tree.body)
        dynamic = _DYNAMIC_GLOBALS.search(source)
        if dynamic is not None:
            line = source.count(b"\n", 0, dynamic.start()) + 1
            self.undecidable = f"it calls {dynamic.group(1).decode()}() (line {line})"
        if _GLOBAL_STATEMENT.search(source) is not None:
            for node in _statements(tree.body):
                if isinstance(node, ast.Global):
                    for name in node.names:
                        self.bindings.setdefault(name, [])
        self.classes = {
            name: stmts[0]
            for name, stmts in self.bindings.items()
            if len(stmts) == 1 and isinstance(stmts[0], ast.ClassDef)
        }
        self._structs: dict[str, Type | str] = {}

    # -- top-level names --------------------------------------------------
    def _bind_all(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self._bind(stmt)

    def _bind(self, stmt: ast.stmt) -> None:
        match stmt:
            case (
                ast.FunctionDef(name=name)
                | ast.AsyncFunctionDef(name=name)
                | ast.ClassDef(name=name)
            ):
                self.bindings.setdefault(name, []).append(stmt)
                if name == "__getattr__":
                    self.undecidable = f"it defines a module-level __getattr__ (line {stmt.lineno})"
            case ast.Assign(targets=targets):
                for target in targets:
                    self._bind_target(target, stmt)
            case ast.AnnAssign(target=target, value=value) if value is not None:
                self._bind_target(target, stmt)
            case ast.AugAssign(target=target):
                self._bind_target(target, stmt)
            case ast.Import(names=names):
                for alias in names:
                    local = alias.asname or alias.name.partition(".")[0]
                    self.bindings.setdefault(local, []).append(stmt)
                    self.imports[local] = alias.name if alias.asname else local
                    self.imported[local] = (0, self.imports[local], None)
            case ast.ImportFrom(module=module, names=names, level=level):
                for alias in names:
                    if alias.name == "*":
                        self.undecidable = (
                            f"it imports * from {'.' * level}{module or ''} (line {stmt.lineno})"
                        )
                        continue
                    local = alias.asname or alias.name
                    self.bindings.setdefault(local, []).append(stmt)
                    self.imported[local] = (level, module or "", alias.name)
                    if level == 0 and module:
                        self.imports[local] = f"{module}.{alias.name}"
            case ast.If(body=body, orelse=orelse) | ast.While(body=body, orelse=orelse):
                self._bind_all(body)
                self._bind_all(orelse)
            case (
                ast.For(target=target, body=body, orelse=orelse)
                | ast.AsyncFor(target=target, body=body, orelse=orelse)
            ):
                self._bind_target(target, stmt)
                self._bind_all(body)
                self._bind_all(orelse)
            case ast.With(items=items, body=body) | ast.AsyncWith(items=items, body=body):
                for item in items:
                    if item.optional_vars is not None:
                        self._bind_target(item.optional_vars, stmt)
                self._bind_all(body)
            case (
                ast.Try(body=body, handlers=handlers, orelse=orelse, finalbody=final)
                | ast.TryStar(body=body, handlers=handlers, orelse=orelse, finalbody=final)
            ):
                self._bind_all(body)
                for handler in handlers:
                    if handler.name:
                        self.bindings.setdefault(handler.name, []).append(stmt)
                    self._bind_all(handler.body)
                self._bind_all(orelse)
                self._bind_all(final)
            case ast.Match(cases=cases):
                for case in cases:
                    self._bind_all(case.body)
            case _:
                pass
        for node in (
            ast.walk(stmt)
            if self._walrus
            and not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            else ()
        ):
            if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
                self.bindings.setdefault(node.target.id, []).append(stmt)

    def _bind_target(self, target: ast.expr, stmt: ast.stmt) -> None:
        if isinstance(target, ast.Name):
            self.bindings.setdefault(target.id, []).append(stmt)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for item in target.elts:
                self._bind_target(item, stmt)
        elif isinstance(target, ast.Starred):
            self._bind_target(target.value, stmt)

    def facts(self) -> ModuleFacts:
        definitions: dict[str, Signature | Opaque] = {}
        functions: dict[str, Method] = {}
        imports: dict[str, Import] = {}
        for name, stmts in self.bindings.items():
            definitions[name] = self._definition(name, stmts)
            if len(stmts) != 1:
                continue
            stmt = stmts[0]
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions[name] = _method(stmt, in_class=False)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                imports[name] = self.imported[name]
        classes = {name: _class(cls) for name, cls in self.classes.items()}
        return ModuleFacts(
            frozenset(self.bindings),
            self.undecidable,
            definitions,
            classes,
            functions,
            imports,
        )

    # -- signatures --------------------------------------------------------
    def _definition(self, name: str, stmts: list[ast.stmt]) -> Signature | Opaque:
        if len(stmts) != 1:
            lines = ", ".join(str(s.lineno) for s in stmts) or "a `global` statement"
            return Opaque(f"{name} is bound more than once at the top level (lines {lines})")
        stmt = stmts[0]
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if stmt.decorator_list:
                return Opaque(f"{name} is decorated (@{ast.unparse(stmt.decorator_list[0])})")
            return self._signature(stmt.args, f"{name}() (line {stmt.lineno})", drop_first=False)
        if isinstance(stmt, ast.ClassDef):
            return self._class_signature(stmt)
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            origin = self.imports.get(name, name)
            return Opaque(f"{name} is imported from {origin.rpartition('.')[0] or origin}")
        return Opaque(f"{name} is assigned (line {stmt.lineno}), not defined by def or class")

    def _class_signature(self, cls: ast.ClassDef) -> Signature | Opaque:
        seen: set[str] = set()
        current = cls
        while True:
            if current.name in seen:
                return Opaque(f"class {cls.name} inherits from itself")
            seen.add(current.name)
            if current.keywords:
                return Opaque(
                    f"class {current.name} is made with {ast.unparse(current.keywords[0])}"
                )
            kind = self._struct_kind(current)
            if kind == "dataclass":
                return self._dataclass_signature(cls, current)
            if kind in ("pydantic", "typeddict"):
                struct = self._struct(current.name)
                if isinstance(struct, str):
                    return Opaque(struct)
                params = tuple(
                    Param(f.name, "keyword", f.required, f.type, "") for f in struct.fields
                )
                return Signature(params, False, struct.open, f"{cls.name} (line {cls.lineno})")
            if current.decorator_list:
                return Opaque(
                    f"class {current.name} is decorated (@{ast.unparse(current.decorator_list[0])})"
                )
            methods = {
                stmt.name: stmt
                for stmt in current.body
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
            if "__new__" in methods:
                return Opaque(f"class {current.name} defines __new__")
            init = methods.get("__init__")
            if init is not None:
                if (
                    init.decorator_list
                    or sum(1 for s in current.body if getattr(s, "name", None) == "__init__") > 1
                ):
                    return Opaque(f"{current.name}.__init__ is decorated or defined twice")
                where = f"{cls.name}.__init__() (line {init.lineno})"
                return self._signature(init.args, where, drop_first=True)
            bases = [
                b
                for b in current.bases
                if self._qualified(_origin(b.value if isinstance(b, ast.Subscript) else b))
                not in _TRANSPARENT_CLASS_BASES
            ]
            if not bases:
                return Signature((), False, False, f"{cls.name}() (line {cls.lineno})")
            if len(bases) > 1:
                return Opaque(f"class {current.name} has several bases")
            base = bases[0]
            if not isinstance(base, ast.Name) or base.id not in self.classes:
                return Opaque(
                    f"class {current.name} inherits __init__ from {ast.unparse(base)}, "
                    "outside the module"
                )
            current = self.classes[base.id]

    def _dataclass_signature(self, cls: ast.ClassDef, current: ast.ClassDef) -> Signature | Opaque:
        if any(
            isinstance(stmt, ast.AnnAssign)
            and self._qualified(_origin(stmt.annotation)) == "dataclasses.KW_ONLY"
            for stmt in current.body
        ):
            return Opaque(f"dataclass {current.name} uses KW_ONLY")
        if any(
            isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == "__init__"
            for stmt in current.body
        ) or any(
            isinstance(d, ast.Call) and any(k.arg == "init" for k in d.keywords)
            for d in current.decorator_list
        ):
            return Opaque(f"dataclass {current.name} has an __init__ of its own or none")
        struct = self._struct(current.name)
        if isinstance(struct, str):
            return Opaque(struct)
        keyword_only = any(
            isinstance(d, ast.Call)
            and any(
                k.arg == "kw_only" and isinstance(k.value, ast.Constant) and k.value.value
                for k in d.keywords
            )
            for d in current.decorator_list
        )
        params = tuple(
            Param(f.name, "keyword" if keyword_only else "either", f.required, f.type, "")
            for f in struct.fields
        )
        return Signature(params, False, False, f"{cls.name} (line {cls.lineno})")

    def _signature(self, args: ast.arguments, where: str, *, drop_first: bool) -> Signature:
        positional = [*args.posonlyargs, *args.args]
        defaults_from = len(positional) - len(args.defaults)
        params: list[Param] = []
        for index, arg in enumerate(positional):
            kind = "positional" if index < len(args.posonlyargs) else "either"
            params.append(self._param(arg, kind, index < defaults_from))
        for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            params.append(self._param(arg, "keyword", default is None))
        if drop_first and positional:
            params.pop(0)
        return Signature(tuple(params), args.vararg is not None, args.kwarg is not None, where)

    def _param(self, arg: ast.arg, kind: str, required: bool) -> Param:
        if arg.annotation is None:
            return Param(arg.arg, kind, required, ANY, "")
        written = ast.unparse(arg.annotation)
        resolved = self.type(arg.annotation)
        if isinstance(resolved, str):
            return Param(arg.arg, kind, required, None, written, resolved)
        return Param(arg.arg, kind, required, resolved, written)

    # -- annotations -------------------------------------------------------
    def _qualified(self, name: str | None) -> str | None:
        """The qualified name a dotted local name stands for, or None."""
        if name is None:
            return None
        head, dot, rest = name.partition(".")
        if head in self.imports:
            return self.imports[head] + dot + rest
        if head in self.bindings:
            return f"<module>.{name}"
        return f"builtins.{name}"

    def type(self, node: ast.expr, depth: int = 0) -> Type | str:
        """The `Type` of an annotation, or why it is not read statically."""
        written = ast.unparse(node)
        unread = f'the annotation "{written}" is not read statically'
        if depth > 16:
            return unread
        if isinstance(node, ast.Constant):
            if node.value is None:
                return Type("none")
            if isinstance(node.value, str):
                try:
                    parsed = ast.parse(node.value, mode="eval").body
                except SyntaxError:
                    return unread
                return self.type(parsed, depth + 1)
            return unread
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._union([node.left, node.right], depth)
        if isinstance(node, ast.Subscript):
            return self._generic(node, depth, unread)
        qualified = self._qualified(_origin(node))
        if qualified is None:
            return unread
        if qualified in _SCALARS:
            return _SCALARS[qualified]
        local = qualified[9:] if qualified.startswith("<module>.") else ""
        if local and "." not in local:
            bound = self.bindings[local]
            if len(bound) == 1 and isinstance(bound[0], (ast.Assign, ast.AnnAssign)):
                alias = bound[0].value  # a type alias: `Format = Literal["a", "b"]`
                return unread if alias is None else self.type(alias, depth + 1)
            return self._struct(local)
        return unread

    def _union(self, members: list[ast.expr], depth: int) -> Type | str:
        alternatives: list[Type] = []
        for member in members:
            resolved = self.type(member, depth + 1)
            if isinstance(resolved, str):
                return resolved
            alternatives.extend(resolved.args if resolved.kind == "union" else (resolved,))
        return Type("union", tuple(alternatives))

    def _generic(self, node: ast.Subscript, depth: int, unread: str) -> Type | str:
        origin = self._qualified(_origin(node.value))
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if origin is None:
            return unread
        if _typing(origin, "Optional") and len(args) == 1:
            return self._union([args[0], ast.Constant(None)], depth)
        if _typing(origin, "Union"):
            return self._union(args, depth)
        if _typing(origin, "Annotated", "Required", "NotRequired", "ReadOnly"):
            return self.type(args[0], depth + 1)
        if _typing(origin, "Literal"):
            values = []
            for arg in args:
                if not isinstance(arg, ast.Constant) or not isinstance(
                    arg.value, (str, int, bool, type(None))
                ):
                    return unread
                values.append(arg.value)
            return Type("literal", values=tuple(values))
        if origin in _LIST_ORIGINS and len(args) == 1:
            item = self.type(args[0], depth + 1)
            return item if isinstance(item, str) else Type("list", (item,))
        if origin in _MAP_ORIGINS and len(args) == 2:
            key = self.type(args[0], depth + 1)
            value = self.type(args[1], depth + 1)
            if isinstance(value, str):
                return value
            if key != Type("str"):
                return unread
            return Type("map", (value,))
        return unread

    # -- structures defined in the module ------------------------------------
    def _struct_kind(self, cls: ast.ClassDef, within: frozenset[str] = frozenset()) -> str | None:
        """dataclass, pydantic or typeddict; `within`: the classes it was reached from (a
        cycle of bases, which Python would refuse, is none of them)."""
        for decorator in cls.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if self._qualified(_origin(target)) == "dataclasses.dataclass":
                return "dataclass"
        for base in cls.bases:
            qualified = self._qualified(_origin(base))
            if qualified == "pydantic.BaseModel":
                return "pydantic"
            if qualified is not None and _typing(qualified, "TypedDict"):
                return "typeddict"
            if qualified and qualified.startswith("<module>.") and qualified[9:] in self.classes:
                inner = self.classes[qualified[9:]]
                if inner is not cls and inner.name not in within:
                    kind = self._struct_kind(inner, within | {cls.name})
                    if kind in ("pydantic", "typeddict"):
                        return kind
        return None

    def _struct(self, name: str) -> Type | str:
        """The struct type of a dataclass, TypedDict or pydantic model of the module."""
        if name in self._structs:
            return self._structs[name]
        self._structs[name] = f"{name} refers to itself"  # until made: a cycle is not read
        self._structs[name] = made = self._make_struct(name)
        return made

    def _make_struct(self, name: str) -> Type | str:
        cls = self.classes.get(name)
        if cls is None:
            return f'the annotation "{name}" is not read statically'
        kind = self._struct_kind(cls)
        if kind is None:
            return f"{name} is a class of the module, not a dataclass, TypedDict or pydantic model"
        fields: dict[str, StructField] = {}
        for base in cls.bases:
            qualified = self._qualified(_origin(base)) or ""
            if qualified.startswith("<module>.") and qualified[9:] in self.classes:
                inherited = self._struct(qualified[9:])
                if isinstance(inherited, str):
                    return inherited
                fields.update((f.name, f) for f in inherited.fields)
            elif qualified not in (
                "pydantic.BaseModel",
                "typing.TypedDict",
                "typing_extensions.TypedDict",
                "builtins.object",
            ):
                return f"{name} inherits from {ast.unparse(base)}, outside the module"
        total = not any(
            k.arg == "total" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in cls.keywords
        )
        for stmt in cls.body:
            if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                continue
            qualified = (
                self._qualified(
                    _origin(
                        stmt.annotation.value
                        if isinstance(stmt.annotation, ast.Subscript)
                        else stmt.annotation
                    )
                )
                or ""
            )
            if _typing(qualified, "ClassVar") or qualified == "dataclasses.KW_ONLY":
                continue  # not a field
            if kind == "dataclass" and _not_in_init(stmt.value):
                continue
            if kind == "pydantic" and stmt.target.id.startswith("_"):
                continue  # a private attribute, not a field
            resolved = self.type(stmt.annotation)
            if kind == "typeddict":
                required = total
                if isinstance(stmt.annotation, ast.Subscript):
                    if _typing(qualified, "Required"):
                        required = True
                    elif _typing(qualified, "NotRequired"):
                        required = False
            else:
                required = stmt.value is None or _no_default(stmt.value)
            field_type = None if isinstance(resolved, str) else resolved
            fields[stmt.target.id] = StructField(stmt.target.id, field_type, required)
        return Type("struct", fields=tuple(fields.values()), open=kind == "pydantic")


def _no_default(value: ast.expr) -> bool:
    """`field()` / `Field()` without a default or default factory."""
    if isinstance(value, ast.Call) and _origin(value.func) in (
        "field",
        "dataclasses.field",
        "Field",
        "pydantic.Field",
    ):
        has_default = any(k.arg in ("default", "default_factory") for k in value.keywords)
        positional = bool(value.args) and not (
            isinstance(value.args[0], ast.Constant) and value.args[0].value is Ellipsis
        )
        return not (has_default or positional)
    return False


_DYNAMIC_GLOBALS = re.compile(rb"\b(globals|vars)\s*\(\s*\)")
_GLOBAL_STATEMENT = re.compile(rb"^[ \t]*global[ \t]", re.MULTILINE)


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones included (function and class bodies), no expression."""
    for stmt in body:
        yield stmt
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(stmt, name, None)
            if inner:
                yield from _statements(inner)


def _not_in_init(value: ast.expr | None) -> bool:
    """`field(init=False)`: a dataclass field its `__init__` does not take."""
    return (
        isinstance(value, ast.Call)
        and _origin(value.func) in ("field", "dataclasses.field")
        and any(
            k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in value.keywords
        )
    )


def _origin(node: ast.expr) -> str | None:
    """`a.b.c` of a Name or Attribute chain; None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


# ------------------------------------------------------------ methods --

# Decorators that leave a method's signature as written.
_PLAIN_DECORATORS = frozenset({"abstractmethod", "abc.abstractmethod", "override", "final"})


def _class(node: ast.ClassDef) -> ClassFacts:
    methods: dict[str, Method] = {}
    opaque = None
    pending = list(node.body)
    while pending:
        stmt = pending.pop(0)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            methods[stmt.name] = _method(stmt, in_class=True)
            if stmt.name in ("__getattr__", "__getattribute__"):
                opaque = f"defines {stmt.name}"
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
    bases: list[str | None] = []
    for base in node.bases:
        while isinstance(base, ast.Subscript):  # Generic[T], Protocol[T], Base[int]
            base = base.value
        bases.append(_origin(base))
    return ClassFacts(methods, tuple(bases), opaque)


def _method(node: ast.FunctionDef | ast.AsyncFunctionDef, *, in_class: bool) -> Method:
    decorators = [_origin(d) for d in node.decorator_list]
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
            a.arg
            for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)
            if default is None
        ),
        args.kwarg is not None,
    )


# ------------------------------------------------------------- reader --

class Reader:
    """Gives the facts of a module file; this one reads and parses it every time it is asked
    for a new file (kept for the build).  `_incremental` keeps them by file hash."""

    def __init__(self) -> None:
        self._read: dict[str, ModuleFacts] = {}

    def facts(self, path: str, sha256: str) -> ModuleFacts:
        found = self._read.get(sha256)
        if found is None:
            found = self._read[sha256] = self.read(path, sha256)
        return found

    def read(self, path: str, sha256: str) -> ModuleFacts:
        return read_file(path)

    def module(self, pinner: Pinner, name: str) -> ModuleFacts:
        """The facts of module `name` where `pinner` locates it (raises `PinError`)."""
        pin = pinner.pin_module(name)
        source = pinner.source_of(name)
        if source is None or pin["sha256"] is None:
            return unreadable(f"{name} is a built-in module, without source")
        return self.facts(source, pin["sha256"])


def read_file(path: str) -> ModuleFacts:
    if not path.endswith(".py"):
        return unreadable(f"{os.path.basename(path)} is a compiled module, without source")
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as exc:
        return unreadable(f"its source cannot be read ({exc.strerror})")
    return read_module(source)


