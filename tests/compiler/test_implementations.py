"""The build checks implementations and config against their Python source (issue 15):
every mistake of a build at once, "not checked" where the source cannot tell, nothing
imported, no false positive; and a generated signature against a generated config."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oneiricc._build.modules import Signature, read_module
from support import compile_at, run_cli, write_project

APP_MODULES = {
    "src/myapp/__init__.py": "raise SystemExit('imported the package')\n",
    "src/myapp/tasks.py": (
        "raise SystemExit('imported the module')\n"
        "def validate(order, upstream, *, strict: bool = False):\n"
        "    return order\n"
    ),
    "src/myapp/services.py": (
        "from dataclasses import dataclass\n"
        "from datetime import timedelta\n"
        "from typing import Literal\n"
        "\n"
        "@dataclass\n"
        "class Pool:\n"
        "    size: int\n"
        "    timeout: timedelta | None = None\n"
        "\n"
        "class Base:\n"
        "    def __init__(self, *, url: str, pool: Pool | None = None) -> None: ...\n"
        "\n"
        "class Orders(Base):\n"
        "    pass\n"
        "\n"
        "class Mailer:\n"
        "    def __init__(\n"
        "        self, host: str, port: int = 25, *,\n"
        "        mode: Literal['tls', 'plain'] = 'tls', deps=None\n"
        "    ) -> None: ...\n"
    ),
}

BASE = """oneiric 1

stack base {
  adapter cache "memory" {
    impl "oneiric.adapters.memory:MemoryCache"
    config { max_entries = 100 }
  }
  service mailer "smtp" { impl "myapp.services:Mailer"; config { host = "mail", port = 25 } }
}
"""

APP = """oneiric 1
import "base.oneiric"

stack app {
  adapter cache "memory" { config { ttl = "10m" } }
  service orders "default" {
    impl "myapp.services:Orders"
    config { url = env("ORDERS_URL", "http://x"), pool = { size = 4, timout = 5s } }
  }
  service mailer "smtp" { config { mode = "ssl", prt = 26 } }
  task validate "default" { impl "myapp.tasks:validat" }
  task check "default" { impl "myapp.tasks:validate"; config { strict = "yes" } }
  task ship "default" { impl "myapp.shipping:ship" }
  action zip "gzip" { impl "oneiric.actions.compress:compress"; config { level = 5s } }
  service billing "default" { impl "myapp.services:Base" }
  workflow flow "default" { validate -> shpi }
  select adapter cahce = "memory"
}

target prod { layers base, app }
"""


def test_one_build_reports_every_mistake_of_every_file_and_stage(tmp_path: Path) -> None:
    root = write_project(
        tmp_path,
        {**APP_MODULES, "stacks/base.oneiric": BASE, "stacks/app.oneiric": APP},
        'module-path = ["src"]\n',
    )
    build = compile_at(root)
    found = sorted((d.code, d.location) for d in build.diagnostics)
    assert found == [
        ("E0207", "stacks/app.oneiric:17:3"),  # selection typo (resolution)
        ("E0303", "stacks/app.oneiric:16:41"),  # unknown workflow task (checker)
        ("E0602", "stacks/app.oneiric:13:30"),  # missing module (pins), despite the above
        ("E0701", "stacks/app.oneiric:11:34"),  # validat
        ("E0702", "stacks/app.oneiric:10:50"),  # mailer prt: the layer that set it
        ("E0703", "stacks/app.oneiric:15:3"),  # billing: url unset
        ("E0704", "stacks/app.oneiric:10:36"),  # mode = "ssl"
        ("E0704", "stacks/app.oneiric:12:64"),  # strict = "yes"
        ("E0704", "stacks/app.oneiric:14:74"),  # level = 5s
        ("E0704", "stacks/app.oneiric:5:37"),  # ttl = "10m", set by the refining layer
        ("E0704", "stacks/app.oneiric:8:51"),  # pool.timout
    ], [(d.code, d.location, d.message) for d in build.diagnostics]
    messages = {d.message for d in build.diagnostics}
    assert any('no field "timout" (did you mean "timeout"?)' in m for m in messages)
    assert "myapp" not in sys.modules  # read, never imported


def test_what_the_source_cannot_tell_is_not_checked_and_explained(tmp_path: Path) -> None:
    modules = {
        "src/dyn/__init__.py": "",
        "src/dyn/lazy.py": "def __getattr__(name):\n    return len\n",
        "src/dyn/star.py": "from json import *\n",
        "src/dyn/deco.py": (
            "import functools\n@functools.lru_cache\ndef make(x: int) -> int:\n    return x\n"
        ),
        "src/dyn/alias.py": "from collections import OrderedDict as Made\n",
        "src/dyn/odd.py": (
            "import typing\n"
            "class Made:\n"
            "    def __init__(self, *, a: typing.Callable[[], int], b: 'Undefined') -> None: ...\n"
        ),
    }
    stack = """oneiric 1
stack s {
  adapter a "x" { impl "dyn.lazy:anything"; config { k = 1 } }
  adapter b "x" { impl "dyn.star:dumps"; config { k = 1 } }
  adapter c "x" { impl "dyn.deco:make"; config { k = 1 } }
  adapter d "x" { impl "dyn.alias:Made"; config { k = 1 } }
  adapter e "x" { impl "dyn.odd:Made"; config { a = 1, b = "x" } }
  adapter f "x" { impl "math:sqrt" }
}
target t { layers s }
"""
    root = write_project(
        tmp_path, {**modules, "stacks/s.oneiric": stack}, 'module-path = ["src"]\n'
    )
    build = compile_at(root)
    assert [d.code for d in build.diagnostics] == []
    contracts = build.contracts["t"]
    assert "module-level __getattr__" in (contracts["adapter:a"].reason or "")
    assert "imports * from json" in (contracts["adapter:b"].reason or "")
    assert "decorated (@functools.lru_cache)" in (contracts["adapter:c"].reason or "")
    assert "imported from collections" in (contracts["adapter:d"].reason or "")
    assert contracts["adapter:e"].checked
    assert set(contracts["adapter:e"].keys) == {"a", "b"}
    assert all(why and "not read statically" in why for why in contracts["adapter:e"].keys.values())
    assert not contracts["adapter:f"].checked
    explained = run_cli("oneiricc", "--root", str(root), "explain", "adapter:e", "-t", "t")
    assert explained.returncode == 0, explained.stderr
    assert 'config a not checked: the annotation "typing.Callable[[], int]"' in explained.stdout


def test_no_false_positive_on_the_demo_stacks() -> None:
    from support import ROOT

    build = compile_at(ROOT)
    assert not build.failed, [d.message for d in build.diagnostics]
    assert {c for t in build.contracts.values() for c in t}  # something was checked


def test_no_false_positive_on_a_generated_benchmark_project(tmp_path: Path) -> None:
    import importlib.util

    from support import ROOT

    spec = importlib.util.spec_from_file_location("gen_project", ROOT / "bench" / "gen_project.py")
    assert spec is not None
    assert spec.loader is not None
    gen_project = importlib.util.module_from_spec(spec)
    sys.modules["gen_project"] = gen_project
    spec.loader.exec_module(gen_project)
    gen_project.generate(tmp_path, 600)
    build = compile_at(tmp_path)
    assert not build.failed, [d.message for d in build.diagnostics][:5]
    reasons = {c.reason for t in build.contracts.values() for c in t.values()}
    assert None in reasons
    assert len(reasons) > 1


# -- generated signatures against generated config ---------------------------------------

# annotation → the values of the pool it admits (an oracle independent of the checker)
ANNOTATIONS: dict[str, set[str]] = {
    "int": {"int", "size"},
    "str": {"str_a", "str_zz", "secret", "env_str"},
    "bool": {"bool"},
    "float": {"int", "size", "float"},
    "timedelta": {"duration"},
    "int | None": {"int", "size"},
    "Optional[str]": {"str_a", "str_zz", "secret", "env_str"},
    "Literal['a', 'b']": {"str_a"},
    "list[str]": {"list_str"},
    "dict[str, int]": {"map_int"},
    "Annotated[int, 'doc']": {"int", "size"},
    "Union[int, timedelta]": {"int", "size", "duration", "env_int"},
    "Any": None,  # type: ignore[dict-item]  # everything
}
ANNOTATIONS["int"] |= {"env_int"}
ANNOTATIONS["float"] |= {"env_int"}
ANNOTATIONS["int | None"] |= {"env_int"}
ANNOTATIONS["Annotated[int, 'doc']"] |= {"env_int"}
VALUES = {
    "int": "5",
    "size": "64KiB",
    "float": "0.5",
    "bool": "true",
    "str_a": '"a"',
    "str_zz": '"zz"',
    "duration": "30s",
    "list_str": '["x", "y"]',
    "map_int": "{ k = 1 }",
    "secret": 'secret("db/password")',
    "env_str": 'env("SOME_NAME")',
    "env_int": 'env("SOME_PORT", 8080)',
}

parameters = st.lists(
    st.tuples(
        st.sampled_from(sorted(ANNOTATIONS)),
        st.booleans(),  # has a default
        st.booleans(),  # keyword-only
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    params=parameters,
    varkw=st.booleans(),
    domain=st.sampled_from(["adapter", "task"]),
    data=st.data(),
)
def test_generated_signature_and_config_report_exactly_the_mismatches(
    params: list[tuple[str, bool, bool]], varkw: bool, domain: str, data: st.DataObject
) -> None:
    names = [f"p{i}" for i in range(len(params))]
    ordered = sorted(zip(names, params, strict=True), key=lambda item: item[1][2])  # keyword last
    source = [
        "from datetime import timedelta",
        "from typing import Annotated, Any, Literal, Optional, Union",
    ]
    passed = "input, upstream, " if domain == "task" else ""
    rendered, star = [], False
    # Defaults must not precede required positional parameters: give the positional
    # ones after the first default a default too.
    positional_default = False
    effective_required: dict[str, bool] = {}
    for name, (annotation, default, keyword) in ordered:
        if keyword and not star:
            rendered.append("*")
            star = True
        has_default = default or (not keyword and positional_default)
        positional_default = positional_default or (not keyword and has_default)
        effective_required[name] = not has_default
        rendered.append(f"{name}: {annotation}" + (" = None" if has_default else ""))
    if varkw:
        rendered.append("**extra: Any")
    source.append(f"def make({passed}{', '.join(rendered)}):\n    return None\n")
    chosen = data.draw(st.lists(st.sampled_from(names), unique=True))
    values = {name: data.draw(st.sampled_from(sorted(VALUES))) for name in chosen}
    unknown = data.draw(st.booleans())
    entries = [f"{name} = {VALUES[kind]}" for name, kind in values.items()]
    if unknown:
        entries.append("zzz_unknown = 1")
    config = f" config {{ {', '.join(entries)} }}" if entries else ""
    stack = (
        f'oneiric 1\nstack s {{\n  {domain} thing "x" {{ impl "genmod:make";{config} }}\n}}\n'
        "target t { layers s }\n"
    )
    expected = set()
    for name, kind in values.items():
        annotation = dict(zip(names, (p[0] for p in params), strict=True))[name]
        admitted = ANNOTATIONS[annotation]
        if admitted is not None and kind not in admitted:
            expected.add(("E0704", name))
    expected |= {
        ("E0703", name) for name in names if effective_required[name] and name not in values
    }
    if unknown and not varkw:
        expected.add(("E0702", "zzz_unknown"))
    with tempfile.TemporaryDirectory() as temp:
        root = write_project(
            Path(temp),
            {"src/genmod.py": "\n".join(source), "stacks/s.oneiric": stack},
            'module-path = ["src"]\n',
        )
        build = compile_at(root)
    found = set()
    for d in build.diagnostics:
        key = d.message.split('"')[1] if d.code in ("E0702", "E0704") else d.message.split('"')[-2]
        found.add((d.code, key))
    assert found == expected, ("\n".join(source), stack, [d.message for d in build.diagnostics])


def test_reading_a_module_binds_what_python_would() -> None:
    facts = read_module(
        b"import os.path\n"
        b"import json as j\n"
        b"from a import b as c\n"
        b"x, (y, *z) = 1, (2, 3)\n"
        b"w: int = 1\n"
        b"v: int\n"
        b"if True:\n    def f(): ...\nelse:\n    class F: ...\n"
        b"try:\n    from _speed import g\nexcept ImportError:\n    def g(): ...\n"
        b"with open('x') as h:\n    pass\n"
        b"for i in range(3):\n    pass\n"
        b"def setter():\n    global late\n    late = 1\n"
    )
    assert facts.undecidable is None
    assert facts.names == {
        "os", "j", "c", "x", "y", "z", "w", "f", "F", "g", "h", "i", "setter", "late"
    }  # fmt: skip
    assert "v" not in facts.names  # annotated, never assigned
    assert "bound more than once" in getattr(facts.definitions["g"], "reason", "")


def test_dataclass_fields_the_init_does_not_take_are_not_parameters() -> None:
    facts = read_module(
        b"from dataclasses import dataclass, field, InitVar\n"
        b"from typing import ClassVar, Generic, TypeVar\n"
        b"T = TypeVar('T')\n"
        b"@dataclass\n"
        b"class Made:\n"
        b"    size: int\n"
        b"    seen: list[str] = field(init=False)\n"
        b"    kind: ClassVar[str] = 'x'\n"
        b"    seed: InitVar[int] = 0\n"
        b"class Box(Generic[T]):\n"
        b"    def __init__(self, *, item: int) -> None: ...\n"
    )
    made = facts.definitions["Made"]
    assert isinstance(made, Signature)
    assert {p.name: p.required for p in made.params} == {"size": True, "seed": False}
    box = facts.definitions["Box"]
    assert isinstance(box, Signature)
    assert [p.name for p in box.params] == ["item"]
