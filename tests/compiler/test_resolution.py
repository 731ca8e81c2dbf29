"""Every resolution rule of DESIGN §3, compiled from small real projects in tmp_path.

Implementations point at built-in modules (`sys:exit`), which pin without a
file, so most tests stay fast; the pin tests use real files and distributions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from pathlib import Path
from textwrap import dedent

import pytest
from oneiric._plan.model import Component, Plan
from oneiricc import Build
from oneiricc._language.diagnostics import Severity
from support import compile_at, write_project

IMPL = 'impl "sys:exit"'


def build(tmp_path: Path, *files: str, settings: str = "", **options: object) -> Build:
    """Compile `files` (stacks/f0.oneiric, f1, ...; the `oneiric 1` header is added)."""
    sources: dict[str, str | bytes] = {
        f"stacks/f{i}.oneiric": "oneiric 1\n" + dedent(text).strip() + "\n"
        for i, text in enumerate(files)
    }
    return compile_at(write_project(tmp_path, sources, settings), **options)


def plan_of(result: Build, target: str = "t") -> Plan:
    assert not result.failed, errors(result)
    return result.plans[target]


def comp(result: Build, component_id: str, target: str = "t") -> Component:
    found = plan_of(result, target).component(component_id)
    assert found is not None, component_id
    return found


def errors(result: Build) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in result.diagnostics if d.severity is Severity.ERROR]


def only_error(result: Build, code: str) -> str:
    """The message of the single error of the build, which must have `code`."""
    found = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert [d.code for d in found] == [code], errors(result)
    assert not result.plans
    diag = found[0]
    return f"{diag.location}: {diag.message} | help: {diag.help} | " + " ".join(
        f"note: {n.message} at {n.file}:{n.pos.line}:{n.pos.col}" for n in diag.notes
    )


# ---------------------------------------------------------------- selection --


def test_selection_beats_priority_and_later_layer_selection_replaces_earlier(
    tmp_path: Path,
) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "a" {{ {IMPL} priority 90 }}
          adapter cache "b" {{ {IMPL} }}
          adapter cache "c" {{ {IMPL} }}
          select adapter cache = "b"
        }}
        stack app {{
          select adapter cache = "c"
        }}
        target t {{ layers base, app }}
        target early {{ layers base }}
        """,
    )
    cache = comp(result, "adapter:cache")
    assert (cache.provider, cache.explanation.rule) == ("c", "selection")
    assert cache.explanation.selection == "stacks/f0.oneiric:9:3"
    assert {(lo["provider"], lo["rule"]) for lo in cache.explanation.losers} == {
        ("a", "selection"),
        ("b", "selection"),
    }
    assert all("stacks/f0.oneiric:9:3" in lo["reason"] for lo in cache.explanation.losers)
    # Without the later layer, the earlier selection stands.
    assert comp(result, "adapter:cache", "early").provider == "b"


def test_selecting_an_unknown_provider_suggests_the_closest(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "redis" {{ {IMPL} }}
          adapter cache "memory" {{ {IMPL} }}
          select adapter cache = "redsi"
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0203")
    assert message.startswith('stacks/f0.oneiric:5:26: unknown provider "redsi" for adapter cache')
    assert 'did you mean "redis"?' in message


def test_selecting_an_unknown_component_is_an_error(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "redis" {{ {IMPL} }}
          select adapter cahce = "redis"
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0207")
    assert "selection of unknown component adapter cahce" in message
    assert 'did you mean "cache"?' in message


# --------------------------------------------------------------- capability --


def test_capability_drops_candidates_and_names_the_consumer(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "fast" {{ {IMPL} priority 50 provides read }}
          adapter cache "full" {{ {IMPL} provides read, write }}
          service orders "x" {{ {IMPL} requires adapter cache (write) }}
        }}
        target t {{ layers base }}
        """,
    )
    cache = comp(result, "adapter:cache")
    assert (cache.provider, cache.explanation.rule) == ("full", "capability")
    [loser] = cache.explanation.losers
    assert (loser["provider"], loser["rule"]) == ("fast", "capability")
    assert loser["reason"] == 'lacks capability write, required by service orders "x"'
    assert cache.explanation.required_capabilities == {"write": ['service orders "x"']}


def test_capability_then_priority_among_the_remaining(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "ro" {{ {IMPL} priority 90 provides read }}
          adapter cache "low" {{ {IMPL} priority 1 provides write }}
          adapter cache "high" {{ {IMPL} priority 5 provides write }}
          service orders "x" {{ {IMPL} requires adapter cache (write) }}
        }}
        target t {{ layers base }}
        """,
    )
    cache = comp(result, "adapter:cache")
    assert (cache.provider, cache.explanation.rule) == ("high", "priority")
    assert {(lo["provider"], lo["rule"]) for lo in cache.explanation.losers} == {
        ("ro", "capability"),
        ("low", "priority"),
    }


def test_no_candidate_with_the_capability_is_an_error_naming_the_consumer(
    tmp_path: Path,
) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "a" {{ {IMPL} provides read }}
          adapter cache "b" {{ {IMPL} }}
          service orders "x" {{ {IMPL} requires adapter cache (write) }}
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0501")
    assert message.startswith("stacks/f0.oneiric:5:40: no provider of adapter cache provides write")
    assert 'required by service orders "x"' in message
    assert '"a" provides read' in message
    assert '"b" provides nothing' in message


def test_selected_provider_lacking_a_capability_names_both(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "ro" {{ {IMPL} provides read }}
          adapter cache "rw" {{ {IMPL} provides read, write }}
          service orders "x" {{ {IMPL} requires adapter cache (write) }}
          select adapter cache = "ro"
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0502")
    assert 'selected provider "ro" of adapter cache lacks capability write' in message
    assert 'required by service orders "x"' in message
    assert "note: write is required here at stacks/f0.oneiric:5:40" in message


def test_only_winners_requirements_constrain(tmp_path: Path) -> None:
    """A losing consumer's impossible requirements neither constrain nor fail the build."""
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "ro" {{ {IMPL} priority 50 provides read }}
          adapter cache "rw" {{ {IMPL} provides read, write }}
          service orders "winner" {{ {IMPL} priority 10 requires adapter cache (read) }}
          service orders "loser" {{
            {IMPL}
            requires adapter cache (teleport)
            requires adapter nowhere
          }}
        }}
        target t {{ layers base }}
        """,
    )
    assert comp(result, "service:orders").provider == "winner"
    cache = comp(result, "adapter:cache")
    assert (cache.provider, cache.explanation.rule) == ("ro", "priority")
    assert cache.explanation.required_capabilities == {"read": ['service orders "winner"']}
    assert result.diagnostics == []


def test_a_winner_requiring_an_unknown_component_is_an_error(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "a" {{ {IMPL} }}
          service orders "x" {{ {IMPL} requires adapter cahce }}
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0206")
    assert "service:orders requires unknown component adapter cahce" in message
    assert 'did you mean "cache"?' in message


# ------------------------------------------------------ priority and layer --


def test_priority_higher_wins_across_layers(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{ adapter cache "old" {{ {IMPL} priority 7 }} }}
        stack app {{ adapter cache "new" {{ {IMPL} priority -3 }} }}
        target t {{ layers base, app }}
        """,
    )
    cache = comp(result, "adapter:cache")
    assert (cache.provider, cache.explanation.rule, cache.priority) == ("old", "priority", 7)
    [loser] = cache.explanation.losers
    assert (loser["provider"], loser["rule"], loser["reason"]) == (
        "new",
        "priority",
        "priority -3 < 7",
    )


def test_layer_later_in_the_target_wins(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack one {{ adapter cache "a" {{ {IMPL} priority 2 }} }}
        stack two {{ adapter cache "b" {{ {IMPL} priority 2 }} }}
        target t {{ layers one, two }}
        target swapped {{ layers two, one }}
        """,
    )
    cache = comp(result, "adapter:cache")
    assert (cache.provider, cache.layer, cache.explanation.rule) == ("b", "two", "layer")
    [loser] = cache.explanation.losers
    assert (loser["provider"], loser["layer"], loser["rule"]) == ("a", "one", "layer")
    assert loser["reason"] == "layer one comes before two in target t"
    assert comp(result, "adapter:cache", "swapped").provider == "a"
    assert result.diagnostics == []


# -------------------------------------------------------------- declaration --

TIE = f"""
stack base {{
  task notify "email" {{ {IMPL} }}
  task notify "sms" {{ {IMPL} }}
}}
target t {{ layers base }}
"""


def test_declaration_order_decides_with_a_warning(tmp_path: Path) -> None:
    result = build(tmp_path, TIE)
    notify = comp(result, "task:notify")
    assert (notify.provider, notify.explanation.rule) == ("sms", "declaration")
    [loser] = notify.explanation.losers
    assert (loser["provider"], loser["rule"]) == ("email", "declaration")
    [warning] = result.diagnostics
    assert (warning.code, warning.severity) == ("W0503", Severity.WARNING)
    assert warning.location == "stacks/f0.oneiric:4:3"
    assert '"sms" wins over "email" only because it is declared later' in warning.message
    assert [(n.pos.line, n.message) for n in warning.notes] == [(3, '"email" declared here')]


@pytest.mark.parametrize("how", ["flag", "oneiric.toml"])
def test_declaration_order_is_an_error_under_strict(tmp_path: Path, how: str) -> None:
    if how == "flag":
        result = build(tmp_path, TIE, strict=True)
    else:
        result = build(tmp_path, TIE, settings="strict = true\n")
    [error] = result.diagnostics
    assert (error.code, error.severity) == ("W0503", Severity.ERROR)
    assert result.failed
    assert not result.plans


def test_duplicate_component_in_one_layer_is_an_error(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "a" {{ {IMPL} }}
          adapter cache "a" {{ {IMPL} priority 3 }}
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0102")
    assert 'adapter cache "a" is declared twice in stack base' in message
    assert "note: first declared at stacks/f0.oneiric:3:3" in message


# --------------------------------------------------------------- refinement --


def test_refinement_replaces_fields_merges_config_and_records_layers(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter db "sqlite" {{
            {IMPL}
            priority 4
            provides sql
            config {{ path = "a.db", timeout = 5s, pool = {{ min = 1, max = 4 }} }}
            health every 10s timeout 1s
          }}
        }}
        stack mid {{ adapter db "sqlite" {{ config {{ timeout = 10s, pool = {{ max = 8 }} }} }} }}
        stack top {{ adapter db "sqlite" {{ priority 9 provides sql, transactions }} }}
        target t {{ layers base, mid, top }}
        """,
    )
    db = comp(result, "adapter:db")
    assert db.priority == 9
    assert db.provides == ["sql", "transactions"]
    assert db.config == {
        "path": "a.db",
        "timeout": {"$duration_ms": 10000},
        "pool": {"min": 1, "max": 8},
    }
    assert (db.health.interval_ms, db.health.timeout_ms) == (10000, 1000)
    assert db.layers == ["base", "mid", "top"]
    assert (db.layer, db.span) == ("base", "stacks/f0.oneiric:3:3")
    assert [(r["layer"], r["span"]) for r in db.explanation.refined_by] == [
        ("mid", "stacks/f0.oneiric:11:13"),
        ("top", "stacks/f0.oneiric:12:13"),
    ]


def test_refinement_does_not_move_the_candidate(tmp_path: Path) -> None:
    """Refining "a" in a later layer keeps it in base, declared before "b": "b" still wins."""
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "a" {{ {IMPL} }}
          adapter cache "b" {{ {IMPL} }}
        }}
        stack app {{ adapter cache "a" {{ config {{ size = 3 }} }} }}
        target t {{ layers base, app }}
        """,
    )
    cache = comp(result, "adapter:cache")
    assert (cache.provider, cache.explanation.rule) == ("b", "declaration")
    [loser] = cache.explanation.losers
    assert (loser["provider"], loser["layer"], loser["span"]) == (
        "a",
        "base",
        "stacks/f0.oneiric:3:3",
    )


def test_refinement_cannot_change_a_config_type(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{ adapter db "x" {{ {IMPL} config {{ timeout = 5s }} }} }}
        stack app {{ adapter db "x" {{ config {{ timeout = "slow" }} }} }}
        target t {{ layers base, app }}
        """,
    )
    assert "config timeout changes type from duration to string" in only_error(result, "E0402")


# ------------------------------------------------------------------- graphs --


def test_dependency_cycle_prints_the_whole_path(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          service a "x" {{ {IMPL} requires service b }}
          service b "x" {{ {IMPL} requires adapter c }}
          adapter c "x" {{ {IMPL} requires service a }}
          adapter d "x" {{ {IMPL} requires service a }}
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0301")
    assert "dependency cycle: adapter:c → service:a → service:b → adapter:c" in message


def test_workflow_cycle_prints_the_whole_path(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          task a "x" {{ {IMPL} }}
          task b "x" {{ {IMPL} }}
          task c "x" {{ {IMPL} }}
          workflow flow "x" {{ a -> b -> c -> a }}
        }}
        target t {{ layers base }}
        """,
    )
    assert "workflow flow has a cycle: a → b → c → a" in only_error(result, "E0302")


def test_workflow_node_naming_an_unknown_task(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          task charge "x" {{ {IMPL} }}
          workflow flow "x" {{
            node pay {{ task chrage }}
            pay -> charge
          }}
        }}
        target t {{ layers base }}
        """,
    )
    message = only_error(result, "E0303")
    assert "node pay of workflow flow runs unknown task chrage" in message
    assert 'did you mean "charge"?' in message


def test_activation_order_puts_dependencies_first(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          service api "x" {{ {IMPL} requires service orders requires adapter cache }}
          service orders "x" {{ {IMPL} requires adapter db requires adapter cache }}
          adapter db "x" {{ {IMPL} }}
          adapter cache "x" {{ {IMPL} requires adapter db }}
          action zip "x" {{ {IMPL} }}
          task send "x" {{ {IMPL} }}
          workflow flow "x" {{ node send }}
        }}
        target t {{ layers base }}
        """,
    )
    plan = plan_of(result)
    assert plan.activation_order == [
        "action:zip",
        "adapter:db",
        "adapter:cache",
        "service:orders",
        "service:api",
        "task:send",
        "workflow:flow",
    ]
    assert sorted(plan.activation_order) == [c.id for c in plan.components]


def test_workflow_generations_and_tasks_resolve_to_winners(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          task validate "x" {{ {IMPL} }}
          task reserve "x" {{ {IMPL} }}
          task charge "x" {{ {IMPL} }}
          task notify "x" {{ {IMPL} }}
          task ship "x" {{ {IMPL} }}
          task pay "card" {{ {IMPL} priority 1 }}
          task pay "cash" {{ {IMPL} priority 2 }}
          workflow flow "x" {{
            node charge {{ task pay retry 3 backoff 1s timeout 30s }}
            validate -> reserve -> charge -> ship
            reserve -> notify
          }}
        }}
        target t {{ layers base }}
        """,
    )
    plan = plan_of(result)
    [flow] = plan.workflows
    assert flow.generations == [["validate"], ["reserve"], ["charge", "notify"], ["ship"]]
    nodes = {node.name: node for node in flow.nodes}
    assert [node.name for node in flow.nodes] == sorted(nodes)
    assert nodes["charge"].task == "pay"
    assert nodes["charge"].depends_on == ["reserve"]
    assert nodes["charge"].timeout_ms == 30000
    assert nodes["charge"].retry is not None
    assert (nodes["charge"].retry.attempts, nodes["charge"].retry.backoff_ms) == (3, 1000)
    assert plan.component("task:pay").provider == "cash"  # type: ignore[union-attr]
    assert plan.activation_order.index("task:pay") < plan.activation_order.index("workflow:flow")


# ------------------------------------------------------------------- events --


def test_event_routes_fan_out_to_every_winner_highest_priority_first(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          event zeta "x" {{ on "order.created" {IMPL} }}
          event alpha "x" {{ on "order.created" {IMPL} }}
          event audit "x" {{ on "order.created" {IMPL} priority 5 }}
          event audit "old" {{ on "order.created" {IMPL} priority 1 }}
          event fulfil "x" {{ on "order.paid" {IMPL} fanout exclusive }}
        }}
        target t {{ layers base }}
        """,
    )
    plan = plan_of(result)
    routes = [(r.topic, r.fanout, r.handlers) for r in plan.routes]
    assert routes == [
        ("order.created", "broadcast", ["audit", "alpha", "zeta"]),
        ("order.paid", "exclusive", ["fulfil"]),
    ]
    audit = plan.component("event:audit")
    assert audit is not None
    assert audit.provider == "x"


def test_subscriptions_disagreeing_on_fanout_is_an_error(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          event a "x" {{ on "t" {IMPL} }}
          event b "x" {{ on "t" {IMPL} fanout exclusive }}
        }}
        target t {{ layers base }}
        """,
    )
    assert "disagree on fan-out" in only_error(result, "E0107")


# --------------------------------------------------------------------- pins --


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_pin_of_a_project_module_hashes_the_file_without_importing_it(tmp_path: Path) -> None:
    source = """
    stack base { adapter x "y" { impl "acme_pinned.impl:Thing" } }
    target t { layers base }
    """
    files: dict[str, str | bytes] = {
        "src/acme_pinned/__init__.py": "raise SystemExit('imported the package')\n",
        "src/acme_pinned/impl.py": "class Thing: ...\nraise SystemExit('imported the module')\n",
    }
    write_project(tmp_path, files)
    result = build(tmp_path, source, settings='module-path = ["src"]\n')
    pin = comp(result, "adapter:x").pin
    assert pin is not None
    assert pin.file == "acme_pinned/impl.py"
    assert pin.sha256 == _sha256(tmp_path / "src/acme_pinned/impl.py")
    assert (pin.distribution, pin.version) == (None, None)
    assert "acme_pinned" not in sys.modules
    # Editing the file changes the pin.
    (tmp_path / "src/acme_pinned/impl.py").write_text("Thing = 2\n")
    again = compile_at(tmp_path)
    pin2 = comp(again, "adapter:x").pin
    assert pin2 is not None
    assert pin2.sha256 == _sha256(tmp_path / "src/acme_pinned/impl.py")
    assert pin2.sha256 != pin.sha256


def test_pin_of_stdlib_and_of_an_installed_distribution(tmp_path: Path) -> None:
    import json as stdlib_json

    import click

    result = build(
        tmp_path,
        """
        stack base {
          adapter codec "json" { impl "json:JSONDecoder" }
          adapter ui "click" { impl "click.termui:getchar" }
        }
        target t { layers base }
        """,
    )
    codec = comp(result, "adapter:codec").pin
    assert codec is not None
    assert (codec.module, codec.file) == ("json", "json/__init__.py")
    assert codec.sha256 == _sha256(stdlib_json.__file__)
    assert codec.distribution is None
    ui = comp(result, "adapter:ui").pin
    assert ui is not None
    assert (ui.module, ui.file) == ("click.termui", "click/termui.py")
    assert ui.sha256 == _sha256(Path(click.__file__).parent / "termui.py")
    assert (ui.distribution, ui.version) == ("click", importlib.metadata.version("click"))


def test_entry_point_is_resolved_and_pinned(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        """
        stack base { service cli "x" { impl entrypoint "console_scripts" "oneiricc" } }
        target t { layers base }
        """,
    )
    cli = comp(result, "service:cli")
    assert cli.implementation is not None
    impl = cli.implementation.model_dump()
    assert impl == {
        "kind": "entrypoint",
        "group": "console_scripts",
        "name": "oneiricc",
        "module": "oneiricc._cli.launcher",
        "attr": "main",
    }
    pin = cli.pin
    assert pin is not None
    assert pin.file == "oneiricc/_cli/launcher.py"
    import oneiricc._cli.launcher

    assert pin.sha256 == _sha256(oneiricc._cli.launcher.__file__)
    expected = importlib.metadata.version("oneiric-compiler")
    assert (pin.distribution, pin.version) == ("oneiric-compiler", expected)


def test_unknown_module_and_entry_point_are_errors(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        """
        stack base {
          adapter a "x" { impl "no_such_module_anywhere.sub:thing" }
          adapter b "x" { impl entrypoint "console_scripts" "oneiricx" }
        }
        target t { layers base }
        """,
    )
    codes = [(d.code, d.location) for d in result.diagnostics]
    assert codes == [("E0602", "stacks/f0.oneiric:3:24"), ("E0603", "stacks/f0.oneiric:4:19")]
    assert 'implementation module "no_such_module_anywhere.sub" not found' in (
        result.diagnostics[0].message
    )
    assert "did you mean" in (result.diagnostics[1].help or "")


# ------------------------------------------------------------- all at once --


def test_every_error_is_reported_at_once_in_source_order(tmp_path: Path) -> None:
    result = build(
        tmp_path,
        f"""
        stack base {{
          adapter cache "a" {{ {IMPL} config {{ ttl = 5parsecs }} }}
          plugin cache "b" {{ {IMPL} }}
          service s "x" {{ {IMPL} requires adapter nope }}
        }}
        target t {{ layers base, missing }}
        """,
        f"""
        stack other {{ task x "y" {{ {IMPL} retry 5000 }} }}
        """,
    )
    found = [(d.location, d.code) for d in result.diagnostics]
    assert found == [
        ("stacks/f0.oneiric:3:54", "E0401"),
        ("stacks/f0.oneiric:4:3", "E0101"),
        ("stacks/f0.oneiric:5:52", "E0206"),
        ("stacks/f0.oneiric:7:25", "E0201"),
        ("stacks/f1.oneiric:2:44", "E0107"),
    ]
    assert not result.plans
