"""`plugins "group"`: every installed entry point of a group becomes a candidate.

An entry point named `DOMAIN.KEY.PROVIDER` (the provider may hold dots) declares
`DOMAIN KEY "PROVIDER" { impl entrypoint "group" "DOMAIN.KEY.PROVIDER" }` in the stack
holding the `plugins` line, so it is resolved and pinned (module file sha256,
distribution and version) at build time exactly like an explicit `impl entrypoint`.
A component the stack declares itself wins over a plugin of the same identity.

    E1001  two distributions claim the same (domain, key, provider)
    E1002  an entry point name that is not DOMAIN.KEY.PROVIDER of a known domain
    E1003  a group no installed distribution declares (or not a group name)
"""

from __future__ import annotations

import dataclasses
import re

from oneiric._plan.document import DOMAINS

from oneiricc._build.checker import Decl, Impl, Layer, Place, Program
from oneiricc._build.pins import Pinner
from oneiricc._language.diagnostics import Diagnostic, Note, did_you_mean

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*")
PLUGIN_DOMAINS = tuple(d for d in DOMAINS if d != "workflow")  # a workflow has no impl


def expand(program: Program, pinner: Pinner) -> list[Diagnostic]:
    """Add the plugin candidates to every layer with `plugins` lines; their diagnostics."""
    diagnostics: list[Diagnostic] = []
    for name, layer in list(program.layers.items()):
        if layer.plugins:
            program.layers[name] = _expanded(layer, pinner, diagnostics)
    return diagnostics


def _expanded(layer: Layer, pinner: Pinner, diagnostics: list[Diagnostic]) -> Layer:
    declared = {(d.domain, d.key, d.provider) for d in layer.decls}
    claims: dict[tuple[str, str, str], tuple[str, str, Place]] = {}  # → dist, version, line
    added: list[Decl] = []
    for group, place in layer.plugins:
        found = pinner.group(group)
        if not found:
            diagnostics.append(
                _error(
                    "E1003",
                    f'no installed distribution declares entry points in group "{group}"',
                    place,
                    did_you_mean(group, pinner.group_names())
                    or "install the plugins (or pass --module-path), or remove the line; "
                    "`oneiricc plugins` lists what is installed",
                )
            )
            continue
        for ep_name, dist, version, _ in found:
            claimed = identity(ep_name)
            if claimed is None:
                diagnostics.append(
                    _error(
                        "E1002",
                        f'entry point "{ep_name}" of {dist} {version} in group "{group}" is '
                        "not named DOMAIN.KEY.PROVIDER",
                        place,
                        f"name it like adapter.cache.{dist.replace('-', '_')} "
                        f"(domains: {', '.join(PLUGIN_DOMAINS)})",
                    )
                )
                continue
            if claimed in declared:
                continue  # the stack's own declaration wins
            first = claims.get(claimed)
            if first is not None:
                domain, key, provider = claimed
                diagnostics.append(
                    _error(
                        "E1001",
                        f'{domain} {key} "{provider}" is claimed by two plugins: '
                        f"{first[0]} {first[1]} and {dist} {version}",
                        place,
                        "uninstall one of them, or declare the component in the stack "
                        "with the implementation you want",
                        notes=(Note(first[2].file, first[2].pos, "plugins taken here"),)
                        if first[2] != place
                        else (),
                    )
                )
                continue
            claims[claimed] = (dist, version, place)
            domain, key, provider = claimed
            impl = Impl("entrypoint", group, ep_name, place)
            added.append(
                Decl(
                    domain,  # type: ignore[arg-type]  # checked by identity()
                    key,
                    provider,
                    layer.name,
                    len(layer.decls) + len(added),
                    place,
                    {"impl": impl},
                    {"impl": place},
                )
            )
    return dataclasses.replace(layer, decls=[*layer.decls, *added])


def identity(name: str) -> tuple[str, str, str] | None:
    parts = name.split(".", 2)
    if len(parts) != 3:
        return None
    domain, key, provider = parts
    if domain not in PLUGIN_DOMAINS or not _KEY.fullmatch(key) or not provider.strip():
        return None
    return domain, key, provider


def _error(
    code: str, message: str, place: Place, help: str, notes: tuple[Note, ...] = ()
) -> Diagnostic:
    return Diagnostic(code, message, place.file, place.pos, help, notes=notes)
