"""The runtime's second line: a component's resolved config against its factory's real
signature, before the factory runs.

The compiler checks config against the implementation's source (`oneiricc`'s
implementations check), but it leaves "not checked" what it cannot read
statically, and `env()` values are only known here.  At activation the runtime
inspects the imported factory (a class's `__init__`, or the function) and
refuses the activation, before calling anything, when config names a key the
factory does not take, leaves a required parameter unset, or gives a value its
annotation refuses.  Values are validated with pydantic (lax: an `env()` string
"8080" becomes the `int` 8080 its parameter asks for, and that validated value
is what the factory receives; a `Secret` is passed as is).  An annotation that
pydantic cannot build a validator for is not checked here either.

Factories of adapters and services get config alone (and `deps`); task, event
and action callables get config after the arguments the runtime passes
(`task(input, upstream)`, `handler(event)`, `action(payload)`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from oneiric._plan.model import Component
from oneiric._plan.values import ConfigError, Secret

PASSED_POSITIONALLY = {"adapter": 0, "service": 0, "task": 2, "event": 1, "action": 1}
FACTORY_DOMAINS = ("adapter", "service")
_POSITIONAL_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    required: bool
    annotation: str  # as shown in messages ("" when there is none)
    validate: Callable[[Any], Any] | None  # None: not checked


@dataclass(frozen=True, slots=True)
class _Signature:
    params: dict[str, _Param]
    varkw: bool


def check(component: Component, factory: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` validated against `factory`'s signature; `ConfigError` naming the component,
    its source position, the key, what was expected and what was given otherwise."""
    try:
        signature = _signature(factory, component.domain)
    except TypeError:  # an unhashable callable: read, not kept
        signature = _signature.__wrapped__(factory, component.domain)
    if signature is None:
        return dict(config)
    where = f"{component.id} ({component.span})"
    impl = component.implementation
    shown = f"{impl.module}:{impl.attr}" if impl is not None else component.id
    checked: dict[str, Any] = {}
    for key, value in config.items():
        param = signature.params.get(key)
        if param is None:
            if not signature.varkw:
                takes = ", ".join(signature.params) or "no config"
                raise ConfigError(
                    f'{where}: config "{key}" is not a parameter of {shown} (it takes: {takes}); '
                    "refused before activation"
                )
            checked[key] = value
            continue
        if param.validate is None or isinstance(value, Secret):
            checked[key] = value
            continue
        from pydantic import ValidationError

        try:
            validated = param.validate(value)
        except ValidationError:
            given = f"{value!r} ({type(value).__name__})"
            raise ConfigError(
                f'{where}: config "{key}" of {shown} expects {param.annotation}, given {given}; '
                "refused before activation"
            ) from None
        except Exception:  # a validator that cannot decide (an isinstance of a Protocol)
            validated = value
        # What pydantic converted (an env string to an int, a map to a dataclass) is passed
        # converted; what it only copied is passed as given (a list of secrets stays so).
        checked[key] = value if _same(validated, value) else validated
    for name, param in signature.params.items():
        if param.required and name not in config:
            raise ConfigError(
                f'{where}: {shown} requires config "{name}"'
                + (f" ({param.annotation})" if param.annotation else "")
                + ", which the plan does not set; refused before activation"
            )
    return checked


def _same(validated: Any, value: Any) -> bool:
    try:
        return type(validated) is type(value) and bool(validated == value)
    except Exception:
        return False


@functools.lru_cache(maxsize=1024)
def _signature(factory: Any, domain: str) -> _Signature | None:
    """What config may set on `factory`, read once per factory; None when it has no
    signature Python can tell (a C function, for one)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    hints = _hints(factory)
    passed = PASSED_POSITIONALLY.get(domain, 0)
    params: dict[str, _Param] = {}
    positional = 0
    varkw = False
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            varkw = True
            continue
        if param.kind in _POSITIONAL_KINDS:
            positional += 1
            if positional <= passed:
                continue
        if param.kind not in _KEYWORD_KINDS:
            continue
        if param.name == "deps" and domain in FACTORY_DOMAINS:
            continue
        annotation = hints.get(param.name, param.annotation)
        params[param.name] = _Param(
            param.name,
            param.default is inspect.Parameter.empty,
            _shown(param.annotation),
            _validator(annotation),
        )
    return _Signature(params, varkw)


def _hints(factory: Any) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # an annotation that does not evaluate here: its key is not checked
        return {}


def _shown(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _validator(annotation: Any) -> Callable[[Any], Any] | None:
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return None  # unannotated, or a forward reference that did not evaluate
    if annotation is Secret:
        annotation = str
    from pydantic import ConfigDict, TypeAdapter

    adapter: TypeAdapter[Any]
    try:
        adapter = TypeAdapter(annotation)
    except Exception:
        try:  # a class of its own: validated by isinstance
            adapter = TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
        except Exception:  # pydantic has no validator for it: not checked
            return None
    return adapter.validate_python
