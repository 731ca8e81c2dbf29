"""`oneiricc fmt`: canonical, idempotent, meaning-preserving, comments kept."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oneiric_sources import projects, sources
from oneiricc._language.diagnostics import CompileError
from oneiricc._language.formatter import concrete_tree, format_source
from support import ROOT, compile_at, run_cli, write_project

STACKS = sorted((ROOT / "stacks").glob("*.oneiric"))
SPAN = re.compile(r"(stacks/[^\s\"]*\.oneiric):[0-9]+:[0-9]+")


def _plan_without_layout(root: Path) -> dict[str, bytes]:
    """Plan bytes with what layout decides (spans, source hashes, digests) blanked out."""
    build = compile_at(root)
    assert not build.failed, [d.message for d in build.diagnostics]
    out = {}
    for name, plan in build.plans.items():
        data = plan.model_copy(update={"sources": [], "digest": "sha256:" + "0" * 64}).to_bytes()
        out[name] = SPAN.sub(r"\1:L:C", data.decode()).encode()
    return out


# Fixtures that exist to be unparsable (syntax, encoding, header errors): nothing to format.
UNPARSABLE_FIXTURES = {
    "tests/cases/E0001/stacks/fields.oneiric",
    "tests/cases/E0001/stacks/truncated.oneiric",
    "tests/cases/E0002/stacks/char.oneiric",
    "tests/cases/E0002/stacks/string.oneiric",
    "tests/cases/E0003/stacks/app.oneiric",
    "tests/cases/E0004/stacks/latin1.oneiric",
    "tests/cases/E0005/stacks/future.oneiric",
    "tests/cases/E0005/stacks/headless.oneiric",
    "tests/cases/E0007/stacks/base.oneiric",
}


def _committed_sources() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "*.oneiric"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return sorted(listed.stdout.split())


def test_every_committed_source_is_formatted() -> None:
    """Every tracked .oneiric file is in canonical style, or is a deliberately broken fixture."""
    unparsable, unformatted = set(), []
    for name in _committed_sources():
        data = (ROOT / name).read_bytes()
        try:
            text = data.decode("utf-8")
            formatted = format_source(name, text)
        except (UnicodeDecodeError, CompileError):
            unparsable.add(name)
            continue
        if formatted != text:
            unformatted.append(name)
    assert unformatted == [], f"run `oneiricc fmt {' '.join(unformatted)}`"
    assert unparsable == UNPARSABLE_FIXTURES


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_committed_stacks_are_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert format_source(path.name, text) == text, f"run `oneiricc fmt {path.relative_to(ROOT)}`"


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
@given(data=st.data())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_stacks_relaid_format_back_to_the_committed_file(path: Path, data: st.DataObject) -> None:
    """Any spacing of a committed file formats back to it, so its plan is byte-identical."""
    text = path.read_text(encoding="utf-8")
    strings = [t for t in concrete_tree(text).tree.scan_values(lambda v: v.type == "STRING")]
    assert not any(" " in s or "#" in s for s in strings)  # so spaces before "#" are layout

    def respace(match: re.Match[str]) -> str:
        return data.draw(st.sampled_from([" ", "  ", "\t", " \t "]))

    messy = []
    for line in text.splitlines():
        code, hash_, comment = line.partition("#")
        code = re.sub(r" +", respace, code.strip())
        indent = data.draw(st.sampled_from([line[: len(line) - len(line.lstrip())], "", "\t"]))
        messy.append(f"{indent}{code} {hash_}{comment}")
    messy_text = "\n".join(messy) + data.draw(st.sampled_from(["\n", "", "\n\n\n"]))
    assert format_source(path.name, messy_text) == text


def test_golden_plans_survive_formatting(tmp_path: Path) -> None:
    """Formatting a re-spaced copy of the demo's sources gives back their plans' exact bytes."""
    import shutil

    shutil.copytree(ROOT / "stacks", tmp_path / "stacks")
    (tmp_path / "oneiric.toml").write_text('sources = ["stacks"]\n', encoding="utf-8")
    committed = {name: plan.to_bytes() for name, plan in compile_at(tmp_path).plans.items()}
    assert sorted(committed) == ["dev", "prod"]
    for path in (tmp_path / "stacks").glob("*.oneiric"):
        path.write_text(re.sub(r"\n *", "\n\t\t", path.read_text()).replace(" {", "   {"))
    assert run_cli("oneiricc", "--root", str(tmp_path), "fmt", "--check").returncode == 1
    result = run_cli("oneiricc", "--root", str(tmp_path), "fmt")
    assert result.returncode == 0, result.stderr
    assert "3 files reformatted" in result.stderr
    assert {name: plan.to_bytes() for name, plan in compile_at(tmp_path).plans.items()} == committed


@given(text=sources)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_sources_are_idempotent_and_keep_their_meaning(text: str) -> None:
    formatted = format_source("stacks/main.oneiric", text)  # checks syntax tree and comments
    assert format_source("stacks/main.oneiric", formatted) == formatted
    assert all(len(line) <= 100 or "#" in line or '"' in line for line in formatted.split("\n"))
    assert not any(line != line.rstrip() for line in formatted.split("\n"))
    with tempfile.TemporaryDirectory() as before, tempfile.TemporaryDirectory() as after:
        write_project(Path(before), {"stacks/main.oneiric": text})
        write_project(Path(after), {"stacks/main.oneiric": formatted})
        assert _meaning(Path(before)) == _meaning(Path(after))


def _meaning(root: Path) -> object:
    """The plans without layout, or, for a project that does not compile (generated
    sources may, e.g. with conflicting fan-outs), its diagnostics without places."""
    build = compile_at(root)
    if build.failed:
        return sorted((d.code, d.message) for d in build.diagnostics)
    return _plan_without_layout(root)


@given(tokens=projects(), data=st.data())
@settings(max_examples=25, deadline=None)
def test_spacing_and_indentation_are_normalised(tokens: list[str], data: st.DataObject) -> None:
    """Layout depends only on the tokens and on which blocks were written on one line."""
    formatted = format_source("stacks/main.oneiric", " ".join(tokens))

    def respace(match: re.Match[str]) -> str:
        return match.group(1) or data.draw(st.sampled_from([" ", "   ", "\t"]))

    respaced = "\n".join(
        data.draw(st.sampled_from(["", "\t", "     "]))
        + re.sub(r'("(?:[^"\\]|\\.)*")| +', respace, line.strip())
        for line in formatted.split("\n")
    )
    assert format_source("stacks/main.oneiric", respaced) == formatted


COMMENTED = """\
# header comment

oneiric   1 # version
import "base.oneiric"
stack   s{ adapter cache "x" { impl "m:a" ; priority -5 provides a,b # caps
   config { a = 1 b = [1,2,] , "c d" = env ( "X" , "y" ) ,
     # lead of e
     e = { f = 30s } # trailing e
   }
   # dangling in component
 }
  # before select

  select adapter cache="x";
  workflow w "d" { node n {task t
  retry 3} a->b->c ; node m }
  event e "d" { where not ( payload.x == "a" or headers [ "k" ] ) and # mid
     payload.y not in [ 1 , 2 ]
  }
}
target t{layers s , s2 # layer comment
profile p}
# eof comment
"""

COMMENTED_FORMATTED = """\
# header comment

oneiric 1  # version
import "base.oneiric"

stack s {
  adapter cache "x" {
    impl "m:a"
    priority -5
    provides a, b  # caps
    config {
      a = 1,
      b = [1, 2],
      "c d" = env("X", "y"),
      # lead of e
      e = { f = 30s },  # trailing e
    }
    # dangling in component
  }
  # before select

  select adapter cache = "x"
  workflow w "d" {
    node n {
      task t
      retry 3
    }
    a -> b -> c
    node m
  }
  event e "d" {
    where not (payload.x == "a" or headers["k"]) and  # mid
        payload.y not in [1, 2]
  }
}

target t {
  layers s, s2  # layer comment
  profile p
}
# eof comment
"""


def test_layout_rules_and_comments() -> None:
    assert format_source("x.oneiric", COMMENTED) == COMMENTED_FORMATTED
    assert format_source("x.oneiric", COMMENTED_FORMATTED) == COMMENTED_FORMATTED


def test_one_line_blocks_stay_inline_while_they_fit() -> None:
    source = (
        'oneiric 1\nstack s {\n  task t "d" { impl "m:a" retry 3; }\n'
        f'  task u "d" {{ impl "m:{"a" * 80}" retry 3 }}\n}}\n'
    )
    assert format_source("x.oneiric", source) == (
        'oneiric 1\n\nstack s {\n  task t "d" { impl "m:a"; retry 3 }\n'
        f'  task u "d" {{\n    impl "m:{"a" * 80}"\n    retry 3\n  }}\n}}\n'
    )


def test_cli_check_diff_and_stdin(tmp_path: Path) -> None:
    good = "oneiric 1\n\ntarget t { layers a }\n"
    write_project(
        tmp_path,
        {"stacks/good.oneiric": good, "stacks/bad.oneiric": "oneiric 1\ntarget  t2 {layers a}"},
    )
    check = run_cli("oneiricc", "fmt", "--check", cwd=tmp_path)
    assert check.returncode == 1
    assert check.stdout == "would reformat: stacks/bad.oneiric\n"
    assert "1 file would be reformatted, 1 file already formatted" in check.stderr
    diff = run_cli("oneiricc", "fmt", "--diff", "stacks", cwd=tmp_path)
    assert diff.returncode == 1
    assert "--- a/stacks/bad.oneiric\n+++ b/stacks/bad.oneiric\n" in diff.stdout
    assert "+target t2 { layers a }\n" in diff.stdout
    assert (tmp_path / "stacks/bad.oneiric").read_text() == "oneiric 1\ntarget  t2 {layers a}"
    assert run_cli("oneiricc", "fmt", cwd=tmp_path).returncode == 0
    assert (tmp_path / "stacks/bad.oneiric").read_text() == "oneiric 1\n\ntarget t2 { layers a }\n"
    assert run_cli("oneiricc", "fmt", "--check", cwd=tmp_path).returncode == 0

    piped = _stdin("oneiric 1 target t{layers a;}")
    assert (piped.returncode, piped.stdout) == (0, "oneiric 1\n\ntarget t { layers a }\n")


def test_cli_reports_syntax_errors_and_keeps_going(tmp_path: Path) -> None:
    write_project(
        tmp_path,
        {"stacks/a.oneiric": "oneiric 1\nstack {\n", "stacks/b.oneiric": "oneiric 1 target t{}"},
    )
    result = run_cli("oneiricc", "fmt", "--format", "json", cwd=tmp_path)
    assert result.returncode == 1
    import json

    document = json.loads(result.stdout)
    assert document["diagnostics"][0]["code"] == "E0001"
    assert document["diagnostics"][0]["file"] == "stacks/a.oneiric"
    assert [f["path"] for f in document["files"] if f["changed"]] == ["stacks/b.oneiric"]
    assert (tmp_path / "stacks/b.oneiric").read_text() == "oneiric 1\n\ntarget t {}\n"
    assert run_cli("oneiricc", "fmt", "missing.oneiric", cwd=tmp_path).returncode == 2


def _stdin(text: str) -> object:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "oneiricc", "fmt", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
