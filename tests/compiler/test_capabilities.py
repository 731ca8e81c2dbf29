"""Capabilities bound to protocols: the compiler holds every provider to its promise.

The classes are real Python files (a package on the project's module path, the
runtime's own `oneiric.protocols` and `oneiric.adapters`), read by the
compiler from source; nothing here is mocked.  What the compiler accepts is
also what Python accepts: a fitting method is called, in a real process, with
every call the protocol allows.
"""

from __future__ import annotations

import ast
import itertools
import json
import textwrap
from pathlib import Path
from typing import Any

import oneiric.adapters
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oneiricc._authoring.explanation import check_lines
from oneiricc._build.capabilities import mismatches
from oneiricc._build.modules import Method, ModuleFacts, Reader, read_module
from oneiricc._build.pipeline import Pipeline
from oneiricc._build.project import load_project
from oneiricc._incremental.build import IncrementalBuild
from oneiricc._incremental.cache import CheckCache
from oneiricc._incremental.facts import FactsReader
from support import ROOT, compile_at, run_cli, write_project
from syrupy.assertion import SnapshotAssertion

PROTOCOLS = """
from typing import Protocol


class Reader(Protocol):
    def get(self, key: str) -> bytes | None: ...


class Writer(Protocol):
    def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...
    def delete(self, key: str) -> bool: ...


class Pinger(Protocol):
    async def ping(self, *, timeout: float = 1.0) -> bool: ...
"""


def _project(tmp_path: Path, impl: str, stacks: str) -> Path:
    """A project whose module path holds package `app` (protocols + `impl`)."""
    package = tmp_path / "src" / "app"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "protocols.py").write_text(PROTOCOLS)
    (package / "impl.py").write_text(textwrap.dedent(impl))
    return write_project(tmp_path, {"stacks/main.oneiric": stacks}, 'module-path = ["src"]\n')


def _stacks(provides: str = "read, write", extra: str = "") -> str:
    return f"""oneiric 1

stack app {{
  capability adapter cache read = "app.protocols:Reader"
  capability adapter cache write = "app.protocols:Writer"
  capability adapter cache ping = "app.protocols:Pinger"
  adapter cache "mine" {{ impl "app.impl:Cache" provides {provides} }}
{extra}}}

target dev {{ layers app }}
"""


def _errors(root: Path) -> list[tuple[str, str]]:
    build = compile_at(root)
    return [(d.code, d.message) for d in build.diagnostics]


def test_a_fitting_provider_builds(tmp_path: Path) -> None:
    impl = """
        class Cache:
            def get(self, key):
                return None

            def set(self, key, value, ttl=None):
                pass

            def delete(self, key):
                return True

            async def ping(self, **options):
                return True
    """
    assert _errors(_project(tmp_path, impl, _stacks("read, write, ping"))) == []


def test_a_cache_that_claims_write_without_set(tmp_path: Path) -> None:
    impl = """
        class Cache:
            def get(self, key):
                return None

            def delete(self, key):
                return True
    """
    [(code, message)] = _errors(_project(tmp_path, impl, _stacks()))
    assert code == "E0801"
    assert message == (
        'adapter cache "mine" provides write, but app.impl:Cache does not fit '
        "app.protocols:Writer: it has no set"
    )


class _CountedReader(Reader):
    """Counts the module files actually read (not served by a cache)."""

    files: list[str] = []

    def read(self, path: str, sha256: str) -> ModuleFacts:
        self.files.append(Path(path).name)
        return super().read(path, sha256)


class _CountedFacts(FactsReader, _CountedReader):
    """The cached reader, counting the files it does not find in the cache."""


class _Pure(Pipeline):
    def reader(self) -> Reader:
        return _CountedReader()


class _Cached(IncrementalBuild):
    def reader(self) -> Reader:
        return _CountedFacts(self.cache)


def test_one_read_of_each_module_per_build_and_none_once_cached(tmp_path: Path) -> None:
    """The implementations and capabilities checks share each module's facts: read once
    per build, then kept by file hash in the cache (a later build reads none)."""
    impl = """
        from app.protocols import Reader

        class Cache(Reader):
            def set(self, key, value, ttl=None):
                pass

            def delete(self, key):
                return True
    """
    root = _project(tmp_path, impl, _stacks())
    project = load_project(root)
    _CountedReader.files = []
    assert not _Pure(project).run().failed  # the pure pipeline: no cache at all
    assert sorted(_CountedReader.files) == ["impl.py", "protocols.py"]
    for expected in (["impl.py", "protocols.py"], []):
        _CountedReader.files = []
        assert not _Cached(project, CheckCache(project.cache_dir)).run().failed
        assert sorted(_CountedReader.files) == expected


# What the reader cannot decide, on the protocol's side and on the implementation's.
UNDECIDED = {
    "src/app/star.py": "from app.protocols import *\n",
    "src/app/odd.py": """from nowhere import Base
from app.protocols import Reader


def make_base():
    return object


class Dynamic:
    def __getattr__(self, name):
        return len


class Made(make_base()):
    def get(self, key): ...


Alias = Reader


class FromNowhere(Base):
    def get(self, key): ...


class Loop(Again):
    def get(self, key): ...


class Again(Loop):
    def get(self, key): ...


class Fine:
    def get(self, key): ...


class D21:
    def get(self, key): ...
"""
    + "".join(f"\n\nclass D{i}(D{i + 1}): ...\n" for i in reversed(range(21))),
    "stacks/main.oneiric": """oneiric 1

stack app {
  capability adapter fine read = "app.protocols:Reader"
  capability adapter star read = "app.star:Reader"
  capability adapter getattr read = "app.odd:Dynamic"
  capability adapter based read = "app.odd:Made"
  capability adapter alias read = "app.odd:Alias"
  capability adapter nowhere read = "app.odd:FromNowhere"
  capability adapter loop read = "app.odd:Loop"
  capability adapter deep read = "app.odd:D0"
  capability adapter builtin read = "sys:Reader"
  capability adapter impl read = "app.protocols:Reader"
  capability adapter based_impl read = "app.protocols:Reader"
  capability workflow flow run = "app.protocols:Runner"
  adapter fine "x" { impl "app.odd:Fine" provides read }
  adapter star "x" { impl "app.odd:Fine" provides read }
  adapter getattr "x" { impl "app.odd:Fine" provides read }
  adapter based "x" { impl "app.odd:Fine" provides read }
  adapter alias "x" { impl "app.odd:Fine" provides read }
  adapter nowhere "x" { impl "app.odd:Fine" provides read }
  adapter loop "x" { impl "app.odd:Fine" provides read }
  adapter deep "x" { impl "app.odd:Fine" provides read }
  adapter builtin "x" { impl "app.odd:Fine" provides read }
  adapter impl "x" { impl "app.odd:Dynamic" provides read }
  adapter based_impl "x" { impl "app.odd:Made" provides read }
  task t "x" { impl "json:loads" }
  workflow flow "x" { provides run; node a { task t } }
}

target dev { layers app }
""",
}


def test_explain_says_why_each_capability_is_not_checked(
    tmp_path: Path, snapshot: SnapshotAssertion
) -> None:
    """Every reason a protocol or a provider cannot be decided statically: none is an error
    (a star import or a cycle of bases included), each is shown by `oneiricc explain`."""
    runner = "\n\nclass Runner(Protocol):\n    def run(self) -> None: ...\n"
    files = {"src/app/__init__.py": "", "src/app/protocols.py": PROTOCOLS + runner, **UNDECIDED}
    root = write_project(tmp_path, files, 'module-path = ["src"]\n')
    build = compile_at(root)
    assert build.diagnostics == []
    explained = {
        component: check_lines(build.contracts["dev"].get(component), fits)
        for component, fits in sorted(build.fits["dev"].items())
    }
    assert explained == snapshot
    shown = run_cli("oneiricc", "--root", str(root), "explain", "adapter:impl", "-t", "dev")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == snapshot
    document = run_cli(
        "oneiricc", "--root", str(root), "explain", "workflow:flow", "-t", "dev", "--format", "json"
    )
    assert json.loads(document.stdout)["capabilities"] == snapshot


@pytest.mark.parametrize(
    ("methods", "problem"),
    [
        ("async def get(self, key): ...", "its get is an async def, the protocol's a def"),
        ("def get(self): ...", "its get takes at most 0 arguments, the protocol's 1 argument"),
        (
            "def get(self, key, default): ...",
            "its get requires 2 arguments, the protocol's 1 argument",
        ),
        ("def get(self, key, *, fresh): ...", "its get requires keyword argument fresh"),
    ],
)
def test_each_kind_of_misfit(tmp_path: Path, methods: str, problem: str) -> None:
    impl = f"""
        class Cache:
            {methods}
    """
    [(code, message)] = _errors(_project(tmp_path, impl, _stacks("read")))
    assert code == "E0801"
    assert message.endswith(f"does not fit app.protocols:Reader: {problem}")


def test_async_and_keyword_only_protocol_methods(tmp_path: Path) -> None:
    impl = """
        class Cache:
            def ping(self):
                return True
    """
    [(code, message)] = _errors(_project(tmp_path, impl, _stacks("ping")))
    assert code == "E0801"
    assert message.endswith("its ping is a def, the protocol's an async def")


def test_methods_come_from_bases_in_other_modules(tmp_path: Path) -> None:
    """A base imported relatively and one imported absolutely are both followed."""
    impl = """
        from . import base
        from .mixins import Deleting


        class Cache(base.Reading, Deleting):
            def set(self, key, value, ttl=None):
                pass
    """
    root = _project(tmp_path, impl, _stacks())
    (root / "src/app/base.py").write_text("class Reading:\n    def get(self, key): ...\n")
    (root / "src/app/mixins.py").write_text("class Deleting:\n    def delete(self, key): ...\n")
    assert _errors(root) == []
    (root / "src/app/mixins.py").write_text("class Deleting:\n    def remove(self, key): ...\n")
    [(code, message)] = _errors(root)
    assert (code, message.rpartition(": ")[2]) == ("E0801", "it has no delete")


@pytest.mark.parametrize(
    "impl",
    [
        # a base that is made at run time
        "class Cache(type('Base', (), {})):\n    pass\n",
        # attribute access decided at run time
        "class Cache:\n    def __getattr__(self, name): ...\n",
        # a base from a module without Python source (a C extension)
        "from _json import make_scanner\nclass Cache(make_scanner):\n    pass\n",
        # a base that does not exist statically
        "import nowhere\nclass Cache(nowhere.Base):\n    pass\n",
    ],
)
def test_what_cannot_be_read_is_not_an_error(tmp_path: Path, impl: str) -> None:
    assert _errors(_project(tmp_path, impl, _stacks())) == []


def test_decorated_and_assigned_methods_count_as_present(tmp_path: Path) -> None:
    impl = """
        import functools


        def _get(self, key):
            return None


        class Cache:
            get = _get

            @functools.cache
            def set(self, key, value, ttl=None): ...

            @property
            def delete(self): ...
    """
    assert _errors(_project(tmp_path, impl, _stacks())) == []


def test_only_claimed_capabilities_are_checked(tmp_path: Path) -> None:
    impl = """
        class Cache:
            def get(self, key):
                return None
    """
    assert _errors(_project(tmp_path, impl, _stacks("read"))) == []


def test_losers_are_held_to_their_claims_too(tmp_path: Path) -> None:
    impl = """
        class Cache:
            def get(self, key):
                return None

        class Broken:
            pass
    """
    extra = '  adapter cache "other" { impl "app.impl:Broken" provides read; priority -1 }\n'
    [(code, message)] = _errors(_project(tmp_path, impl, _stacks("read", extra)))
    assert code == "E0801"
    assert message.startswith('adapter cache "other" provides read')


def test_protocol_not_found_and_bound_twice(tmp_path: Path) -> None:
    impl = "class Cache:\n    def get(self, key): ...\n"
    stacks = """oneiric 1

stack base {
  capability adapter cache read = "app.protocols:Reader"
  capability adapter cache other = "app.protocols:Raeder"
  capability adapter cache gone = "app.nowhere:Reader"
  capability adapter cache bad = "not a protocol"
  adapter cache "mine" { impl "app.impl:Cache" provides read, other, gone }
}

stack prod {
  capability adapter cache read = "app.protocols:Writer"
}

target dev { layers base, prod }
"""
    found = _errors(_project(tmp_path, impl, stacks))
    assert [code for code, _ in found] == ["E0802", "E0802", "E0802", "E0803"]
    assert "defines no Raeder" in found[0][1]
    assert 'protocol module "app.nowhere" not found' in found[1][1]
    assert 'malformed protocol "not a protocol"' in found[2][1]


def _builtin_classes() -> dict[str, list[str]]:
    """Every built-in adapter class, by the protocol its name says it implements."""
    kinds = {"Cache": "Cache", "Database": "Database", "Storage": "Storage"}
    found: dict[str, list[str]] = {kind: [] for kind in kinds.values()}
    for path in sorted(Path(oneiric.adapters.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                for suffix, kind in kinds.items():
                    if node.name.endswith(suffix):
                        found[kind].append(f"oneiric.adapters.{path.stem}:{node.name}")
    return found


def test_every_builtin_adapter_fits_its_kind(tmp_path: Path) -> None:
    found = _builtin_classes()
    every = {c for classes in found.values() for c in classes}
    assert "oneiric.adapters.memory:MemoryCache" in every
    assert "oneiric.adapters.sqlite:SQLiteDatabase" in every
    assert "oneiric.adapters.localfs:LocalStorage" in every
    lines = []
    for kind, classes in found.items():
        key = kind.lower()
        lines.append(f'  capability adapter {key} is = "oneiric.protocols:{kind}"')
        for index, impl in enumerate(classes):
            lines.append(
                f'  adapter {key} "p{index}" {{ impl "{impl}" provides is; priority {index} }}'
            )
    stacks = "oneiric 1\n\nstack app {\n" + "\n".join(lines) + "\n}\n\ntarget dev { layers app }\n"
    root = write_project(tmp_path, {"stacks/main.oneiric": stacks})
    assert [d for d in compile_at(root).diagnostics if d.code.startswith("E08")] == []
    # The check is live: a protocol the adapters do not implement is reported for each.
    wrong = stacks.replace('"oneiric.protocols:Database"', '"oneiric.protocols:Storage"')
    write_project(tmp_path, {"stacks/main.oneiric": wrong})
    misfits = [d for d in compile_at(root).diagnostics if d.code == "E0801"]
    assert len(misfits) == len(found["Database"])


def test_the_demo_keeps_its_promises_and_is_checked(tmp_path: Path) -> None:
    """The demo stacks bind capabilities; a demo cache without delete breaks the build."""
    assert "capability adapter cache write" in (ROOT / "stacks/base.oneiric").read_text()
    demo = tmp_path / "demo"
    for path in (ROOT / "stacks").glob("*.oneiric"):
        (demo / "stacks").mkdir(parents=True, exist_ok=True)
        (demo / "stacks" / path.name).write_text(path.read_text())
    package = demo / "src" / "shopdemo"
    package.mkdir(parents=True)
    for path in (ROOT / "demo/src/shopdemo").glob("*.py"):
        (package / path.name).write_text(path.read_text())
    write_project(demo, {}, 'module-path = ["src"]\n')
    assert not compile_at(demo).failed
    cache = package / "cache.py"
    cache.write_text(cache.read_text().replace("def delete(", "def remove("))
    misfits = [d for d in compile_at(demo).diagnostics if d.code == "E0801"]
    assert misfits
    assert all("it has no delete" in d.message for d in misfits)


# -------------------------------------------- the check against Python --

_PARAMS = st.lists(st.sampled_from(["a", "b=1", "*args", "*, k", "*, k=1", "**kw"]), max_size=4)


def _signature(params: list[str]) -> str | None:
    """A valid parameter list made of `params` (None when Python would refuse it)."""
    named = [f"{p[0]}{i}{p[1:]}" if p[0] in "ab" else p for i, p in enumerate(params)]
    text = ", ".join(["self", *named])
    try:
        compile(f"def f({text}): ...", "<signature>", "exec")
    except SyntaxError:
        return None
    return text


def _read(signature: str) -> Method:
    facts = read_module(f"class C:\n    def m({signature}): ...\n".encode())
    return facts.classes["C"].methods["m"]


def _broken_calls(protocol: str, impl: str) -> int:
    """How many calls the protocol's method allows fail on the implementation's, run."""
    namespace: dict[str, Any] = {}
    exec(  # signatures made by the test itself
        f"class P:\n    def m({protocol}): pass\nclass I:\n    def m({impl}): pass",
        namespace,
    )
    broken = 0
    positional = [tuple(range(count)) for count in range(6)]
    # Keywords: every subset of the protocol's keyword-only parameters, with or without
    # one that no signature names (for **kwargs).  Other parameters are passed by position.
    names = sorted(_read(protocol).keywords)
    subsets = [c for size in range(len(names) + 1) for c in itertools.combinations(names, size)]
    keywords = [{**dict.fromkeys(c, 1), **extra} for c in subsets for extra in ({}, {"z": 1})]
    for args, kwargs in itertools.product(positional, keywords):
        try:
            namespace["P"]().m(*args, **kwargs)
        except TypeError:
            continue  # a call the protocol does not allow
        try:
            namespace["I"]().m(*args, **kwargs)
        except TypeError:
            broken += 1
    return broken


@settings(max_examples=300, deadline=None)
@given(want=_PARAMS, have=_PARAMS)
def test_the_arity_check_agrees_with_python(want: list[str], have: list[str]) -> None:
    """A misfit is reported exactly where a call the protocol's method allows fails on
    the implementation's (tried: up to 5 positional arguments, the protocol's keyword-only
    parameters, and a keyword no signature names)."""
    protocol, impl = _signature(want), _signature(have)
    if protocol is None or impl is None:
        return
    reported = mismatches({"m": _read(protocol)}, {"m": _read(impl)})
    assert bool(reported) == (_broken_calls(protocol, impl) > 0), (protocol, impl, reported)
