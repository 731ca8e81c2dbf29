"""`oneiricc import`: stacks from the original, runtime-resolving Oneiric's files.

Reads its settings (`OneiricSettings` as YAML, TOML or JSON: per-domain
`selections`, `provider_settings`, `options`; or a per-domain file such as
settings/adapters.yml, with or without the `selections` level) and its remote
manifests (`entries` of domain, key, provider, factory, priority,
stack_level, metadata, and the v2 fields), and writes one `.oneiric` file
that resolves the same way, plus a report of everything not carried over.

How its precedence maps onto this language's (docs/migration.md):

    its rule                                        here
    1 explicit selection (settings selections)      `select DOMAIN KEY = "PROVIDER"`
    2 priority (explicit, else ONEIRIC_STACK_ORDER  `priority N`
      by the factory's top-level package)
    3 stack_level (higher wins)                     one layer per stack level, ascending
    4 registration order (last registered wins)     declaration order within a layer

Pure: data in, text and report out; the command line reads and writes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oneiric._text import plural

from oneiricc._language.parser import keywords

DOMAINS = ("adapter", "service", "task", "event", "workflow", "action")
SECTIONS = {f"{domain}s": domain for domain in DOMAINS}  # settings sections, by name
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*\Z")
# Words a bare name may not be: the grammar's keywords (names are quoted otherwise).
RESERVED = frozenset(keywords())
_ENTRY_FIELDS = frozenset({"domain", "key", "provider", "factory", "priority", "stack_level"})
_NOT_CARRIED = {
    "uri": "artifacts are not fetched at run time here: install the package where "
    "oneiricc and the runtime run; the plan pins its files' sha256",
    "sha256": "pins are taken by oneiricc from the installed files (the plan's `pin`)",
    "version": "the installed distribution's version is pinned by oneiricc",
    "requires": "Python requirements belong to your package's dependencies",
    "python_version": "not a resolution input",
    "os_platform": "not a resolution input",
    "license": "not a resolution input",
    "documentation_url": "not a resolution input",
    "owner": "not a resolution input",
    "settings_model": "config is checked against the factory's signature here",
    "requires_secrets": 'write secrets as `secret("path")` config values',
    "side_effect_free": "not a resolution input",
    "timeout_seconds": "set `activate timeout` or a workflow node's `timeout` where it applies",
    "signature": "manifests are signed by `oneiricc sign` from the compiled plan",
    "signature_algorithm": "manifests are signed by `oneiricc sign` from the compiled plan",
}


class MigrationError(ValueError):
    """An input that is not one of the original's settings or manifest files."""


@dataclass(slots=True)
class Entry:
    domain: str
    key: str
    provider: str
    factory: str
    priority: int | None
    stack_level: int
    where: str  # "manifest.yaml: entries[3]"
    config: dict[str, Any] = field(default_factory=dict)
    provides: list[str] = field(default_factory=list)
    retry: int | None = None
    description: str | None = None


@dataclass(slots=True)
class Migration:
    """What the inputs say, accumulated file by file (registration order = input order)."""

    stack_order: dict[str, int] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    selections: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    provider_settings: dict[tuple[str, str], tuple[dict[str, Any], str]] = field(
        default_factory=dict
    )
    profile: str | None = None
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # where, what, why
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # where, from, to
    assumed: list[tuple[str, str]] = field(default_factory=list)  # where, what
    selected: int = 0  # selections carried over
    sources: list[str] = field(default_factory=list)

    def drop(self, where: str, what: str, why: str) -> None:
        self.dropped.append((where, what, why))

    # -- reading ---------------------------------------------------------------
    def read(self, label: str, data: Any, stem: str) -> None:
        """One parsed input file (`stem`: its name without suffix, for per-domain files)."""
        self.sources.append(label)
        if not isinstance(data, Mapping):
            raise MigrationError(f"{label}: expected a mapping at the top level")
        if "entries" in data:
            self._manifest(label, data)
        elif any(section in data for section in SECTIONS):
            self._settings(label, data)
        elif stem in SECTIONS:
            self._domain(label, SECTIONS[stem], data)
        else:
            raise MigrationError(
                f"{label}: neither a remote manifest (`entries`) nor settings "
                f"(`{'`, `'.join(SECTIONS)}`, or a per-domain file such as adapters.yml)"
            )

    def _manifest(self, label: str, data: Mapping[str, Any]) -> None:
        entries = data["entries"]
        if not isinstance(entries, list):
            raise MigrationError(f"{label}: `entries` must be a list")
        for name in sorted(set(data) - {"entries", "source"}):
            self.drop(f"{label}: {name}", "manifest field", _NOT_CARRIED.get(name, "unknown"))
        for index, raw in enumerate(entries):
            where = f"{label}: entries[{index}]"
            if not isinstance(raw, Mapping):
                raise MigrationError(f"{where}: expected a mapping")
            missing = [f for f in ("domain", "key", "provider", "factory") if not raw.get(f)]
            if missing:
                raise MigrationError(f"{where}: missing {', '.join(missing)}")
            entry = Entry(
                domain=str(raw["domain"]),
                key=str(raw["key"]),
                provider=str(raw["provider"]),
                factory=str(raw["factory"]),
                priority=_int(raw.get("priority"), f"{where}: priority"),
                stack_level=_int(raw.get("stack_level"), f"{where}: stack_level") or 0,
                where=where,
            )
            if entry.domain not in DOMAINS:
                raise MigrationError(
                    f"{where}: unknown domain {entry.domain!r} (known: {', '.join(DOMAINS)})"
                )
            if ":" not in entry.factory:
                self.drop(where, f"{entry.domain} {entry.key} ({entry.factory})", _NO_ATTR)
                continue
            self._extras(entry, raw)
            self.entries.append(entry)

    def _extras(self, entry: Entry, raw: Mapping[str, Any]) -> None:
        where = entry.where
        for name in sorted(set(raw) - _ENTRY_FIELDS):
            value = raw[name]
            if name == "metadata" and isinstance(value, Mapping):
                for meta, item in value.items():
                    if meta == "description" and isinstance(item, str):
                        entry.description = item
                    else:
                        self.drop(f"{where}: metadata.{meta}", repr(item), _METADATA)
            elif name == "capabilities" and isinstance(value, list):
                entry.provides = [str(item) for item in value]
            elif (
                name == "retry_policy"
                and isinstance(value, Mapping)
                and entry.domain in ("task", "event")
                and isinstance(value.get("max_attempts"), int)
            ):
                entry.retry = int(value["max_attempts"])
                rest = sorted(set(value) - {"max_attempts"})
                if rest:
                    self.drop(f"{where}: retry_policy", ", ".join(rest), _BACKOFF)
            else:
                why = _NOT_CARRIED.get(name, "no equivalent in the stack language")
                self.drop(f"{where}: {name}", _short(value), why)

    def _settings(self, label: str, data: Mapping[str, Any]) -> None:
        for name, value in data.items():
            if name in SECTIONS:
                if not isinstance(value, Mapping):
                    raise MigrationError(f"{label}: {name} must be a mapping")
                self._domain(f"{label}: {name}", SECTIONS[name], value)
            elif name == "profile" and isinstance(value, Mapping) and value.get("name"):
                profile = str(value["name"])
                if profile != "default":
                    self.profile = profile
                rest = sorted(set(value) - {"name"})
                if rest:
                    self.drop(f"{label}: profile", ", ".join(rest), _PROFILE)
            else:
                self.drop(f"{label}: {name}", "settings section", _SECTION_WHY.get(name, _OTHER))

    def _domain(self, where: str, domain: str, data: Mapping[str, Any]) -> None:
        known = {"selections", "provider_settings", "options"}
        if not known & set(data):  # a flat per-domain file: `cache: redis`
            data = {"selections": data}
        for name in sorted(set(data) - known):
            self.drop(f"{where}: {name}", "field", "not part of a domain's settings")
        selections = data.get("selections") or {}
        if not isinstance(selections, Mapping):
            raise MigrationError(f"{where}: selections must map a key to a provider")
        for key, provider in selections.items():
            if not isinstance(provider, str):
                raise MigrationError(f"{where}: selections.{key} must be a provider name")
            self.selections[(domain, str(key))] = (provider, f"{where}: selections.{key}")
        settings = data.get("provider_settings") or {}
        if not isinstance(settings, Mapping):
            raise MigrationError(f"{where}: provider_settings must map a provider to settings")
        for provider, config in settings.items():
            if not isinstance(config, Mapping):
                raise MigrationError(f"{where}: provider_settings.{provider} must be a mapping")
            self.provider_settings[(domain, str(provider))] = (
                dict(config),
                f"{where}: provider_settings.{provider}",
            )
        if data.get("options"):
            self.drop(f"{where}: options", _short(data["options"]), _OPTIONS)

    # -- writing ---------------------------------------------------------------
    def render(self, target: str) -> str:
        """The `.oneiric` text (unformatted; the caller formats it)."""
        used_settings: set[tuple[str, str]] = set()
        levels = sorted({e.stack_level for e in self.entries})
        stack_names = {level: _level_name(level) for level in levels}
        out = [
            "oneiric 1",
            "",
            f"# Imported by `oneiricc import` from {', '.join(self.sources)}.",
            "# Precedence as in the original: selection, then priority (explicit, else",
            "# ONEIRIC_STACK_ORDER), then stack level (one layer each), then registration order.",
        ]
        declared: dict[tuple[str, str], set[str]] = {}
        for level in levels:
            out += ["", f"stack {stack_names[level]} {{"]
            for entry in (e for e in self.entries if e.stack_level == level):
                out += self._component(entry, used_settings)
                declared.setdefault((entry.domain, entry.key), set()).add(entry.provider)
            out.append("}")
        selects = []
        for (domain, key), (provider, where) in self.selections.items():
            providers = declared.get((domain, key))
            if providers is None:
                self.drop(where, f'{domain} {key} = "{provider}"', _NO_CANDIDATE)
            elif provider not in providers:
                self.drop(where, f'{domain} {key} = "{provider}"', _NO_PROVIDER)
            else:
                selects.append(f'  select {domain} {self._name(key, where)} = "{provider}"')
                self.selected += 1
        for (domain, provider), (_, where) in self.provider_settings.items():
            if (domain, provider) not in used_settings:
                self.drop(where, "provider settings", _UNUSED_SETTINGS)
        layers = [stack_names[level] for level in levels]
        if selects:
            out += ["", "stack settings {", *selects, "}"]
            layers.append("settings")
        if not layers:
            raise MigrationError("nothing to import: no manifest entries")
        target_fields = [f"layers {', '.join(layers)}"]
        if self.profile:
            target_fields.append(f"profile {self._name(self.profile, 'profile')}")
        out += ["", f"target {target} {{ {'; '.join(target_fields)} }}", ""]
        return "\n".join(out)

    def _component(self, entry: Entry, used: set[tuple[str, str]]) -> list[str]:
        key = self._name(entry.key, entry.where)
        if entry.domain == "workflow":
            self.drop(entry.where, f"workflow {entry.key} ({entry.factory})", _WORKFLOW)
            return []
        lines = []
        if entry.description:
            lines.append(f"  # {' '.join(entry.description.split())}")
        lines.append(f"  {entry.domain} {key} {_string(entry.provider)} {{")
        lines.append(f"    impl {_string(entry.factory)}")
        priority = entry.priority
        if priority is None:
            package = entry.factory.partition(":")[0].split(".")[0]
            priority = self.stack_order.get(package)
        if priority:
            lines.append(f"    priority {priority}")
        if entry.provides:
            names = [self._name(cap, f"{entry.where}: capabilities") for cap in entry.provides]
            lines.append(f"    provides {', '.join(names)}")
        if entry.domain == "event":
            lines.append(f"    on {_string(entry.key)}")
            self.assumed.append((entry.where, f'event {entry.key} handles the topic "{entry.key}"'))
        if entry.retry is not None:
            lines.append(f"    retry {entry.retry}")
        settings = self.provider_settings.get((entry.domain, entry.provider))
        if settings is not None:
            used.add((entry.domain, entry.provider))
            config, where = settings
            items = [
                f"{_key(name)} = {text}"
                for name, value in config.items()
                if (text := self._value(value, f"{where}.{name}")) is not None
            ]
            if items:
                lines.append(f"    config {{ {', '.join(items)} }}")
        lines.append("  }")
        return lines

    def _name(self, name: str, where: str) -> str:
        if _NAME.match(name) and name not in RESERVED:
            return name
        fixed = re.sub(r"[^A-Za-z0-9_-]", "_", name).strip("-") or "_"
        if not re.match(r"[A-Za-z_]", fixed):
            fixed = f"_{fixed}"
        fixed = re.sub(r"-(?![A-Za-z0-9_])", "_", fixed)
        if fixed in RESERVED:
            fixed += "_"
        self.renamed.append((where, name, fixed))
        return fixed

    def _value(self, value: Any, where: str) -> str | None:
        """`value` as a literal of the language; None (and a report line) when it has none."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if not math.isfinite(value) or value < 0:
                self.drop(where, repr(value), "the language has no negative or infinite floats")
                return None
            return _float(value)
        if isinstance(value, str):
            return _string(value)
        if isinstance(value, list):
            items = [self._value(item, f"{where}[{i}]") for i, item in enumerate(value)]
            if any(item is None for item in items):
                return None
            return f"[{', '.join(item for item in items if item is not None)}]"
        if isinstance(value, Mapping):
            entries = [
                f"{_key(str(k))} = {text}"
                for k, v in value.items()
                if (text := self._value(v, f"{where}.{k}")) is not None
            ]
            return f"{{ {', '.join(entries)} }}"
        if value is None:
            self.drop(where, "null", "the language has no null: leave the key out for the default")
            return None
        self.drop(where, repr(value), "not a JSON value")
        return None

    def report(self, written: str, target: str) -> str:
        lines = [
            "# oneiricc import report",
            "",
            f"Read: {', '.join(self.sources)}.",
            f"Wrote: {written} (target `{target}`): "
            f"{plural(len([e for e in self.entries if e.domain != 'workflow']), 'declaration')}, "
            f"{plural(self.selected, 'selection')}.",
            "",
        ]
        if self.assumed:
            lines += ["## Assumed", "", "| where | what |", "| --- | --- |"]
            lines += [f"| {w} | {_cell(what)} |" for w, what in self.assumed]
            lines.append("")
        if self.renamed:
            lines += ["## Renamed", "", "| where | was | now |", "| --- | --- | --- |"]
            lines += [f"| {w} | `{a}` | `{b}` |" for w, a, b in self.renamed]
            lines.append("")
        if self.dropped:
            lines += ["## Not carried over", "", "| where | what | why |", "| --- | --- | --- |"]
            lines += [f"| {w} | {_cell(what)} | {_cell(why)} |" for w, what, why in self.dropped]
        else:
            lines.append("Everything was carried over.")
        return "\n".join(lines) + "\n"


_NO_ATTR = "a factory here is `module:attribute`"
_METADATA = "metadata is not a resolution input; only `description` is kept, as a comment"
_BACKOFF = "retry counts carry over (`retry N`); backoff policies need `backoff DURATION`"
_PROFILE = "profiles here only name the target's profile (`profile NAME`)"
_OPTIONS = "domain options are runtime knobs with no equivalent in the stacks"
_OTHER = "runtime configuration, not resolution: set it for `oneiric run` (docs/runtime.md)"
_SECTION_WHY = {
    "remote": "delivery here is `oneiricc sign` + `oneiric run --manifest URL --trust FILE`",
    "secrets": 'secrets are `secret("path")` config values read from $ONEIRIC_CONFIG/secrets',
    "lifecycle": "timeouts are per component here (`activate timeout`, `drain timeout`)",
    "logging": "the runtime logs JSON lines; LOG_LEVEL sets the level",
    "plugins": "entry points are named in `impl entrypoint GROUP NAME`",
}
_NO_CANDIDATE = "no manifest entry declares this component; the selection has nothing to select"
_NO_PROVIDER = "no manifest entry declares this provider for the component"
_UNUSED_SETTINGS = "no manifest entry uses this provider"
_WORKFLOW = (
    "workflows here are DAGs declared in the stacks (nodes and edges), not factories: "
    "declare its nodes in a `workflow` block"
)


def parse_stack_order(text: str) -> dict[str, int]:
    """ONEIRIC_STACK_ORDER's format: `name:priority,name:priority`."""
    order: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, number = item.partition(":")
        if not sep or not name or not re.fullmatch(r"-?[0-9]+", number.strip()):
            raise MigrationError(f"--stack-order: {item!r} is not NAME:PRIORITY")
        order[name.strip()] = int(number)
    return order


def _int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MigrationError(f"{where}: expected an integer, got {value!r}")
    return value


def _level_name(level: int) -> str:
    return f"level_{level}" if level >= 0 else f"level_minus_{-level}"


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _key(name: str) -> str:
    return name if _NAME.match(name) and name not in RESERVED else _string(name)


def _float(value: float) -> str:
    """A FLOAT literal (digits.digits): no exponent, which the language does not read."""
    text = repr(value)
    if re.fullmatch(r"[0-9]+\.[0-9]+", text):
        return text
    text = f"{value:.17f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _short(value: Any) -> str:
    text = json.dumps(value, default=repr, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def convert(
    inputs: Iterable[tuple[str, Any, str]], target: str, stack_order: Mapping[str, int]
) -> tuple[Migration, str]:
    """Read `inputs` ((label, parsed data, file stem), in registration order); the text."""
    migration = Migration(stack_order=dict(stack_order))
    for label, data, stem in inputs:
        migration.read(label, data, stem)
    return migration, migration.render(target)
