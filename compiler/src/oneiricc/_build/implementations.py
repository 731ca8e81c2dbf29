"""Implementations: is `module:attr` defined, and does the config fit its signature?

Read from the module's source, never by importing it: user code does not run
at build time.  The module's `ModuleFacts` (`modules`, read once per file
content) give the names bound at its top level, and for each function or class
the parameters a caller may pass, with each annotation read into a `Type` the
config values of the plan can be compared with.

`check_target` then confirms, for every winner of a target, that its attribute
exists (E0701), and that its config names only parameters the factory takes
(E0702), sets every required one (E0703) and gives each a value of a kind its
annotation admits (E0704).  What cannot be decided statically is never an
error: a module with a module-level `__getattr__` or a `from x import *`, a C
extension, a decorated function, an annotation this reader does not know.  The
component or the key is then "not checked", with the reason (`Contract`, shown
by `oneiricc explain`).  The runtime validates again at activation, against the
real signature.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oneiricc._build.checker import Impl, Place, config_kind
from oneiricc._build.modules import Opaque, Param, Signature, Type
from oneiricc._build.pins import PinError
from oneiricc._language.diagnostics import Diagnostic, did_you_mean

if TYPE_CHECKING:
    from oneiricc._build.modules import Reader
    from oneiricc._build.pins import Pinner
    from oneiricc._build.resolver import Candidate, Key, Resolution

# How many positional arguments the runtime passes to a callable of each domain
# (the rest of its parameters are what config binds): `task(input, upstream)`,
# `handler(event)`, `action(payload)`.  Factories (adapter, service) get config alone.
PASSED_POSITIONALLY: dict[str, int] = {
    "adapter": 0,
    "service": 0,
    "task": 2,
    "event": 1,
    "action": 1,
}
FACTORY_DOMAINS = ("adapter", "service")  # these also receive `deps` when they take it

# ------------------------------------------------------------ fitting --


def fits(value: Any, expected: Type) -> bool:
    """Whether a plan config value can be given where `expected` is (what cannot be
    compared statically has no `Type`: its key is not checked)."""
    kind = expected.kind
    if kind == "any":
        return True
    if kind == "union":
        return any(fits(value, alternative) for alternative in expected.args)
    if isinstance(value, dict) and "$env" in value:
        # env() yields a string, or its default's kind when it has a default.
        default = value.get("default")
        return fits("" if default is None else default, expected)
    if isinstance(value, dict) and "$secret" in value:
        return fits("", expected)
    if kind == "literal":
        return any(type(value) is type(v) and value == v for v in expected.values)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return (isinstance(value, int) and not isinstance(value, bool)) or _tagged(value, "$bytes")
    if kind == "float":
        return (isinstance(value, int) and not isinstance(value, bool)) or _tagged(
            value, "$bytes", "$float"
        )
    if kind == "str":
        return isinstance(value, str)
    if kind == "duration":
        return _tagged(value, "$duration_ms")
    if kind == "none":
        return False
    if kind == "list":
        return isinstance(value, list) and all(fits(item, expected.args[0]) for item in value)
    if kind == "map":
        return (
            isinstance(value, dict)
            and not any(k.startswith("$") for k in value)
            and all(fits(item, expected.args[0]) for item in value.values())
        )
    return _struct_problem(value, expected) is None  # (a struct: the last kind)


def _tagged(value: Any, *tags: str) -> bool:
    return isinstance(value, dict) and any(tag in value for tag in tags)


def _struct_problem(value: Any, expected: Type) -> str | None:
    if not isinstance(value, dict) or any(k.startswith("$") for k in value):
        return f"a map, not {_kind_phrase(value)}"
    known = {f.name: f for f in expected.fields}
    for key in value:
        if key not in known and not expected.open:
            hint = did_you_mean(key, known)
            return f'no field "{key}"' + (f" ({hint})" if hint else "")
    for f in expected.fields:
        if f.name not in value:
            if f.required:
                return f'field "{f.name}" is required'
            continue
        if f.type is not None and not fits(value[f.name], f.type):
            return f'field "{f.name}" cannot be {_kind_phrase(value[f.name])}'
    return None


def _kind_phrase(value: Any) -> str:
    kind = config_kind(value)
    if kind == "string":
        return f'the string "{value}"'
    if kind in ("int", "bool"):
        return f"the {kind} {str(value).lower() if kind == 'bool' else value}"
    if kind == "duration":
        return f"a duration ({value['$duration_ms']} ms)"
    if kind == "size":
        return f"a size ({value['$bytes']} bytes)"
    if kind == "env reference":
        if value.get("default") is not None:
            return f'env("{value["$env"]}") with the default {_kind_phrase(value["default"])}'
        return f'env("{value["$env"]}"), a string'
    if kind == "secret reference":
        return f'secret("{value["$secret"]}"), a string'
    return f"a {kind}"


# ------------------------------------------------------------ checking --


@dataclass(frozen=True, slots=True)
class Contract:
    """What the build could confirm of one component's implementation, for `explain`."""

    checked: bool  # the attribute was found and its signature read
    reason: str | None  # why not, when not
    keys: dict[str, str | None] = field(default_factory=dict)  # config key → why not checked


def check_target(
    resolution: Resolution,
    pinner: Pinner,
    reader: Reader,
    settled: Callable[[Key], bool] = lambda key: True,
) -> tuple[list[Diagnostic], dict[str, Contract]]:
    """Check every winner's implementation and config (see the module docstring); those
    that cannot be pinned are left to the planner, which reports them.  `settled`: see
    `planner.check_winners`.  Of a winner that is not, what a missing layer could fix is
    not reported: a required parameter not set (E0703), a value that does not fit (E0704:
    that layer may replace it).  An unknown key (E0702) is: a layer adds or replaces keys,
    never removes one."""
    diagnostics: list[Diagnostic] = []
    contracts: dict[str, Contract] = {}
    for key, decision in resolution.decisions.items():
        cand = decision.winner
        impl: Impl | None = cand.fields.get("impl")
        if impl is None:
            continue
        try:
            if impl.kind == "module":
                module, attr = impl.module, impl.attr
                pinner.pin_module(module)
            else:
                found = pinner.resolve_entry_point(impl.module, impl.attr)
                module, attr = found.module, found.attr
        except PinError:
            continue
        contract = _check(cand, impl, module, attr, pinner, reader, diagnostics, settled(key))
        if contract is not None:
            contracts[f"{key[0]}:{key[1]}"] = contract
    return diagnostics, contracts


def _check(
    cand: Candidate,
    impl: Impl,
    module: str,
    attr: str,
    pinner: Pinner,
    reader: Reader,
    diagnostics: list[Diagnostic],
    settled: bool,
) -> Contract | None:
    """What the check of one winner confirmed (None: E0701, reported)."""
    source = pinner.source_of(module)  # (pinned by the caller)
    if source is None:
        return Contract(False, f"{module} is a built-in module, without source")
    facts = reader.module(pinner, module)
    name = attr.partition(".")[0]
    if name not in facts.names:
        if facts.undecidable is not None:
            return Contract(
                False, f"the names of {module} are not known statically: {facts.undecidable}"
            )
        if os.path.basename(source) == "__init__.py" and _submodule(source, name):
            return Contract(False, f"{module}.{name} is a submodule")
        shown = (
            f"{module}:{attr}"
            if impl.kind == "module"
            else f'{module}:{attr} (entry point "{impl.attr}")'
        )
        diagnostics.append(
            Diagnostic(
                "E0701",
                f'{shown}: module "{module}" defines no "{name}" at its top level',
                impl.place.file,
                impl.place.pos,
                did_you_mean(name, [n for n in facts.names if not n.startswith("__")])
                or f"{module} is read from {_short(source)}",
            )
        )
        return None
    if "." in attr:
        return Contract(False, f"{attr} is an attribute of {name}, not read statically")
    definition = facts.definitions[name]
    if isinstance(definition, Opaque):
        return Contract(False, definition.reason)
    return _check_config(cand, f"{module}:{attr}", definition, diagnostics, settled)


def _submodule(init: str, name: str) -> bool:
    directory = os.path.dirname(init)
    return os.path.isdir(os.path.join(directory, name)) or any(
        os.path.exists(os.path.join(directory, name + suffix)) for suffix in (".py", ".pyc", ".so")
    )


def _short(path: str) -> str:
    return path if len(path) < 80 else "…" + path[-77:]


def settable(signature: Signature, domain: str) -> dict[str, Param]:
    """The parameters config may set for an implementation of `domain`, by name."""
    passed = PASSED_POSITIONALLY.get(domain, 0)
    result: dict[str, Param] = {}
    positional_seen = 0
    for param in signature.params:
        if param.kind != "keyword":
            positional_seen += 1
            if positional_seen <= passed or param.kind == "positional":
                continue
        if param.name == "deps" and domain in FACTORY_DOMAINS:
            continue
        result[param.name] = param
    return result


def _check_config(
    cand: Candidate,
    shown: str,
    signature: Signature,
    diagnostics: list[Diagnostic],
    settled: bool,
) -> Contract:
    params = settable(signature, cand.domain)
    config: dict[str, Any] = cand.fields.get("config", {})
    keys: dict[str, str | None] = {}
    for key, value in config.items():
        param = params.get(key)
        place = _key_place(cand, key)
        if param is None:
            if signature.varkw:
                keys[key] = f"accepted by the **kwargs of {signature.where}"
                continue
            diagnostics.append(
                Diagnostic(
                    "E0702",
                    f'unknown config key "{key}": {signature.where.partition(" (")[0]} of {shown} '
                    "takes no such parameter",
                    place.file,
                    place.pos,
                    did_you_mean(key, params)
                    or (f"it takes: {', '.join(params)}" if params else "it takes no config"),
                )
            )
            keys[key] = None  # (checked: it is wrong)
            continue
        if param.type is None:
            keys[key] = param.reason
            continue
        keys[key] = None
        if not fits(value, param.type) and settled:
            given = _kind_phrase(value)
            alternatives = param.type.args if param.type.kind == "union" else (param.type,)
            structs = [t for t in alternatives if t.kind == "struct"]
            problem = _struct_problem(value, structs[0]) if structs else None
            detail = f": {problem}" if problem and isinstance(value, dict) else ""
            expected = param.annotation or "any"
            diagnostics.append(
                Diagnostic(
                    "E0704",
                    f'config "{key}" of {shown} cannot be {given}{detail}',
                    place.file,
                    place.pos,
                    f"{signature.where.partition(' (')[0]} declares {key}: {expected}"
                    + _hint(value, param.type),
                )
            )
    for name, param in params.items():
        if param.required and name not in config and settled:
            place = cand.field_places.get("config", cand.place)
            expected = f" ({param.annotation})" if param.annotation else ""
            diagnostics.append(
                Diagnostic(
                    "E0703",
                    f'{cand.domain} {cand.key} "{cand.provider}": {shown} requires config '
                    f'"{name}", which no layer sets',
                    place.file,
                    place.pos,
                    f"set `{name} = …`{expected} in its config: "
                    f"{signature.where.partition(' (')[0]} has no default for it",
                )
            )
    return Contract(True, None, keys)


def _hint(value: Any, expected: Type) -> str:
    kinds = {expected.kind} | {a.kind for a in expected.args if expected.kind == "union"}
    if "duration" in kinds and isinstance(value, str):
        return "; write a duration without quotes, such as 30s or 5m"
    if "int" in kinds and _tagged(value, "$duration_ms"):
        return "; write a number, not a duration"
    return ""


def _key_place(cand: Candidate, key: str) -> Place:
    """Where the layer that set `key` last (its value is the merged one's) sets it."""
    for decl in reversed(cand.decls):
        if key in decl.fields.get("config", ()):
            return decl.field_places.get(f"config.{key}", decl.field_places["config"])
    return cand.field_places.get("config", cand.place)
