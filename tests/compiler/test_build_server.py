"""The build server (`oneiricc server`): a forwarded build answers exactly as one run here.

Every forwarded command is run twice, through a real server process and in its
own process (`ONEIRICC_NO_SERVER`), and the two must print the same bytes,
write the same files and exit with the same code; the server's own count of
builds proves the first run was really served.  Sockets live under a private
runtime directory per test (`XDG_RUNTIME_DIR`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from oneiricc._cli.launcher import NO_SERVER_ENV
from oneiricc._incremental.cache import MEMO_DIRECTORY
from oneiricc._incremental.memos import WarmState
from oneiricc._incremental.server import _CodeFiles
from oneiricc._incremental.wire import (
    ProtocolError,
    ask,
    code_identity,
    encode,
    receive,
    server_address,
)
from support import ROOT, SMALL_PROJECT, SMALL_SETTINGS, compile_at, run_cli, write_project


@dataclass
class Served:
    root: Path
    env: dict[str, str]

    def oneiricc(
        self, *args: str, cwd: Path | None = None, served: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env) if served else {**self.env, NO_SERVER_ENV: "1"}
        return run_cli("oneiricc", *args, cwd=cwd or self.root, env=env)

    def status(self) -> dict[str, Any]:
        """The running server's own status (asked in this process: a command costs more)."""
        answer = ask(str(self.root), "status")
        assert answer is not None, "no build server answers"
        return answer


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """Short (a socket path has a length limit) and private to the test."""
    directory = Path(tempfile.mkdtemp(prefix="oc", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Served:
    """A project, with this test process and the commands it runs sharing `runtime_dir`."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    root = write_project(tmp_path / "p", dict(SMALL_PROJECT), SMALL_SETTINGS)
    return Served(root, {"XDG_RUNTIME_DIR": str(runtime_dir)})


@pytest.fixture
def served(project: Served) -> Iterator[Served]:
    started = project.oneiricc("server", "start", "--idle-timeout", "300")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = project.status()["pid"]
    try:
        yield project
    finally:
        project.oneiricc("server", "stop")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def same_as_local(
    served: Served, *args: str, cwd: Path | None = None, files: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run `args` through the server, then in-process; both must answer alike."""
    before = served.status()["builds"]
    remote = served.oneiricc(*args, cwd=cwd)
    remote_files = {name: (served.root / name).read_bytes() for name in files}
    assert served.status()["builds"] == before + 1, "the server did not serve the request"
    for name in files:
        (served.root / name).unlink()
    local = served.oneiricc(*args, cwd=cwd, served=False)
    assert (remote.returncode, remote.stdout, remote.stderr) == (
        local.returncode,
        local.stdout,
        local.stderr,
    )
    assert remote_files == {name: (served.root / name).read_bytes() for name in files}
    return remote


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_served_commands_answer_exactly_as_in_process(served: Served) -> None:
    root = served.root
    golden = ("golden/dev.plan.json", "golden/prod.plan.json")
    memos = root / ".oneiric-cache" / MEMO_DIRECTORY
    assert same_as_local(served, "build", files=golden).returncode == 0
    assert same_as_local(served, "build", files=golden).returncode == 0  # from the memo
    shutil.rmtree(memos)
    assert served.oneiricc("build", "--target", "dev").returncode == 0  # a new memo
    served.status()  # (answered once the build's answer, and what follows it, are done)
    assert len(list(memos.iterdir())) == 1  # the server writes its memo for later processes
    assert same_as_local(served, "check").returncode == 0
    assert same_as_local(served, "--format", "json", "check").returncode == 0

    edit(root / "stacks/base.oneiric", 'make" priority 1', 'make" priority 0')  # disk wins
    stale = same_as_local(served, "build", "--check")
    assert stale.returncode == 1
    assert '"provider": "disk"' in stale.stdout
    plan = same_as_local(served, "build", "--target", "prod", "--out", "-")
    assert json.loads(plan.stdout)["target"] == "prod"
    nested = same_as_local(
        served, "build", "-t", "dev", "-o", "../dev.json", cwd=root / "stacks", files=("dev.json",)
    )
    assert nested.returncode == 0

    with (root / "stacks/base.oneiric").open("a", encoding="utf-8") as handle:
        handle.write("# a comment\n")
    assert same_as_local(served, "build", files=golden).returncode == 0

    edit(root / "stacks/app.oneiric", "requires adapter db", "requires adapter dbx")
    broken = same_as_local(served, "build")
    assert broken.returncode == 1
    assert "E0206" in broken.stderr
    edit(root / "stacks/app.oneiric", "requires adapter dbx", "requires adapter db {")
    assert "E0001" in same_as_local(served, "--format", "json", "build").stdout
    assert same_as_local(served, "build", "--target", "nope").returncode == 1
    assert same_as_local(served, "build", "--out", "x.json").returncode == 2  # usage
    assert same_as_local(served, "build", "--help").returncode == 0


def test_other_commands_and_opted_out_builds_run_in_process(served: Served) -> None:
    before = served.status()["builds"]
    assert served.oneiricc("explain", "adapter:db", "--target", "prod").returncode == 0
    assert served.oneiricc("build", served=False).returncode == 0
    assert served.status()["builds"] == before


def test_root_option_and_subdirectories_reach_the_projects_server(
    served: Served, tmp_path: Path
) -> None:
    before = served.status()["builds"]
    assert served.oneiricc("check", cwd=served.root / "stacks").returncode == 0
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert served.oneiricc("--root", str(served.root), "check", cwd=outside).returncode == 0
    assert served.status()["builds"] == before + 2


def test_lifecycle_start_status_stop(project: Served) -> None:
    none = project.oneiricc("server", "status")
    assert none.returncode == 1
    assert "no build server runs" in none.stdout
    assert project.oneiricc("server", "stop").returncode == 0  # nothing to stop: fine
    assert project.oneiricc("server", "start").returncode == 0
    try:
        again = project.oneiricc("server", "start")
        assert again.returncode == 0
        assert "already runs" in again.stdout
        assert project.oneiricc("check").returncode == 0
        status = project.oneiricc("server", "status")
        assert status.returncode == 0
        assert "1 build served" in status.stdout
        address = Path(server_address(str(project.root)))
        assert stat.S_IMODE(address.stat().st_mode) == 0o600
        assert stat.S_IMODE(address.parent.stat().st_mode) == 0o700
    finally:
        stopped = project.oneiricc("server", "stop")
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    assert not address.exists()
    assert project.oneiricc("server", "status").returncode == 1


def test_idle_server_stops_by_itself(project: Served) -> None:
    assert project.oneiricc("server", "start", "--idle-timeout", "1").returncode == 0
    deadline = time.monotonic() + 30
    while project.oneiricc("server", "status").returncode == 0:
        assert time.monotonic() < deadline, "the idle server kept running"
        time.sleep(0.2)
    assert not Path(server_address(str(project.root))).exists()
    log = (project.root / ".oneiric-cache/server.log").read_text(encoding="utf-8")
    assert "no build for 1 s: stopping" in log


def test_killed_server_means_builds_run_here_and_a_new_one_can_start(served: Served) -> None:
    os.kill(served.status()["pid"], signal.SIGKILL)
    time.sleep(0.1)
    assert Path(server_address(str(served.root))).exists()  # left behind
    done = served.oneiricc("build")
    assert done.returncode == 0
    assert "oneiricc:" not in done.stderr
    assert served.oneiricc("server", "start").returncode == 0
    assert served.status()["builds"] == 0


def test_socket_directory_others_may_enter_is_never_used(served: Served) -> None:
    directory = Path(server_address(str(served.root))).parent
    before = served.status()["builds"]
    directory.chmod(0o755)
    try:
        assert served.oneiricc("check").returncode == 0
    finally:
        directory.chmod(0o700)
    assert served.status()["builds"] == before


def raw_request(root: Path, payload: bytes, fds: tuple[int, ...] = ()) -> dict[str, Any] | None:
    """Send `payload` (and `fds`) as a client would; the reply, or None when there is none."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(server_address(str(root)))
        sent = socket.send_fds(sock, [payload], list(fds)) if fds else 0
        if sent < len(payload):
            sock.sendall(payload[sent:])
        sock.shutdown(socket.SHUT_WR)
        try:
            return receive(sock)
        except (OSError, ProtocolError):
            return None


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x00\x05nope!",
        struct.pack("!I", 1 << 30) + b"{}",
        encode({"protocol": 1, "identity": "another compiler", "argv": ["build"]}),
        b"\x00\x00",
    ],
    ids=["not-a-message", "too-large", "another-compiler", "truncated"],
)
def test_bad_requests_are_refused_and_the_server_keeps_serving(
    served: Served, payload: bytes
) -> None:
    reply = raw_request(served.root, payload)
    assert reply is None or "declined" in reply
    before = served.status()["builds"]
    assert served.oneiricc("check").returncode == 0
    assert served.status()["builds"] == before + 1


def build_request(root: Path, **fields: Any) -> bytes:
    return encode(
        {
            "protocol": 1,
            "identity": code_identity(),
            "argv": ["check"],
            "prog": "oneiricc",
            "cwd": str(root),
            "env": {},
            "path": [],
            "umask": 0o022,
            "encoding": ["utf-8", "strict", "utf-8"],
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("fields", "streams", "refusal"),
    [
        ({}, False, "standard output"),
        ({"encoding": ["no-such-codec", "strict", "utf-8"]}, True, "unknown stream encoding"),
        ({"umask": "022"}, True, "malformed"),
        ({"argv": ["--root", "ROOT", "check"], "cwd": "/no/such/dir"}, True, "cannot run as"),
        ({"argv": ["check"], "cwd": "/"}, True, "another project"),
    ],
    ids=["no-streams", "encoding", "umask", "cwd", "other-project"],
)
def test_a_request_the_server_cannot_run_as_asked_is_refused(
    served: Served, fields: dict[str, Any], streams: bool, refusal: str
) -> None:
    with open(os.devnull, "w") as sink:
        fds = (sink.fileno(), sink.fileno()) if streams else ()
        argv = [str(served.root) if a == "ROOT" else a for a in fields.pop("argv", ["check"])]
        request = build_request(served.root, argv=argv, **fields)
        reply = raw_request(served.root, request, fds)
    assert reply is not None
    assert refusal in str(reply["declined"])
    assert served.oneiricc("check").returncode == 0


def test_a_changed_code_file_is_noticed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "probe_code_file.py"
    code.write_text("X = 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("probe_code_file")
    files = _CodeFiles()
    assert files.changed() is None
    code.write_text("X = 22\n", encoding="utf-8")
    assert files.changed() == str(code)


# Edits of the demo stacks (file, old, new), each kept for the rest of the sequence:
# decisions by every rule, consumers, refinements, selections, spans and pins change.
DEMO_EDITS = [
    ("stacks/base.oneiric", "priority 50", "priority 5"),
    ("stacks/shop.oneiric", "requires adapter cache (write)", "requires adapter cache (read)"),
    ("stacks/prod.oneiric", 'select adapter cache = "redis"', "# no selection"),
    ("stacks/prod.oneiric", "oneiric 1\n", "oneiric 1\n# every span below moves\n"),
    ("stacks/shop.oneiric", "requires adapter cache (read)", "requires adapter cache (write)"),
    ("stacks/base.oneiric", "provides read, write", "provides read"),  # an error: E0501
    ("stacks/base.oneiric", "provides read\n", "provides read, write\n"),
    ("stacks/prod.oneiric", "# no selection", 'select adapter cache = "nope"'),  # E0203
    # beside it, what the planner checks: E0105, then alone (a plan that fails)
    ("stacks/shop.oneiric", '{ impl "shopdemo.tasks:archive_order" }', "{ priority 1 }"),
    ("stacks/prod.oneiric", 'select adapter cache = "nope"', 'select adapter cache = "redis"'),
    ("stacks/shop.oneiric", "{ priority 1 }", '{ impl "shopdemo.tasks:archive_order" }'),
    ("stacks/base.oneiric", "priority 5\n", "priority 50\n"),
    ("mods/localimpl.py", "return 1", "return 2"),  # its pin changes, not its decision
    ("stacks/shop.oneiric", "reserve -> notify", "reserve -> notify -> archive"),  # a workflow
    ("stacks/shop.oneiric", "node notify { timeout 10s }", "node notify { timeout 11s }"),
]


@pytest.mark.parametrize("strict", [False, True])
def test_warm_state_gives_the_plans_of_a_build_without_any_cache(
    tmp_path: Path, strict: bool
) -> None:
    """In one process, through edits, what a server keeps between builds (checked files,
    decisions, components, workflows) changes nothing: every build equals a cold, uncached
    one."""
    root = tmp_path / "demo"
    shutil.copytree(ROOT / "stacks", root / "stacks")
    shutil.copy(ROOT / "oneiric.toml", root / "oneiric.toml")
    local = root / "mods" / "localimpl.py"
    local.parent.mkdir()
    local.write_text("def make(**config: object) -> int:\n    return 1\n", encoding="utf-8")
    with (root / "oneiric.toml").open("a", encoding="utf-8") as handle:
        handle.write('module-path = ["mods"]\n')
    edit(root / "stacks/shop.oneiric", '"shopdemo.services:OrderService"', '"localimpl:make"')
    warm = WarmState()
    components_reused = workflows_reused = decisions_reused = 0
    planned = []
    for path, old, new in [("", "", ""), *DEMO_EDITS]:
        if path:
            edit(root / path, old, new)
        kept = {
            target: memo
            for target in [("dev", strict), ("prod", strict)]
            if (memo := warm.targets.get(target)) is not None
        }
        before = {
            t: (k.planner.last.copy(), k.planner.last_workflows.copy()) for t, k in kept.items()
        }
        decided = {t: k.resolver.last.copy() for t, k in kept.items()}
        served = compile_at(root, use_cache=True, reuse_outputs=True, warm=warm, strict=strict)
        cold = compile_at(root, strict=strict)
        assert served.diagnostics == cold.diagnostics
        assert {n: p.data for n, p in served.outputs.items()} == {
            n: p.data for n, p in cold.outputs.items()
        }
        planned.append(bool(served.outputs))
        components_reused += sum(
            made is warm.target(*target).planner.last.get(key)
            for target, (last, _) in before.items()
            for key, made in last.items()
        )
        workflows_reused += sum(
            made is warm.target(*target).planner.last_workflows.get(key)
            for target, (_, workflows) in before.items()
            for key, made in workflows.items()
        )
        decisions_reused += sum(
            made is warm.target(*target).resolver.last.get(key)
            for target, last_decided in decided.items()
            for key, made in last_decided.items()
        )
        warm.next_build()
    assert len(warm.files) == 3
    if not strict:  # only the two errors made no plans (strict: the demo's tie is an error)
        assert planned == [True] * 6 + [False, True, False, False, False] + [True] * 5
    # The memos are used (strict: the demo's tie is an error, so there is no plan to reuse).
    assert decisions_reused > 0
    assert (components_reused > 0 and workflows_reused > 0) or strict


def test_interrupted_while_the_server_builds_the_command_aborts_cleanly(project: Served) -> None:
    """Ctrl-C while waiting for an answer: `Aborted!` and exit 1, as in-process; no traceback."""
    address = Path(server_address(str(project.root)))
    address.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:  # takes, never answers
        silent.bind(str(address))
        silent.listen(1)
        command = [sys.executable, "-m", "oneiricc", "check"]
        env = {**os.environ, **project.env}
        with subprocess.Popen(
            command, cwd=project.root, env=env, stderr=subprocess.PIPE, text=True
        ) as client:
            conn, _ = silent.accept()
            with conn:
                conn.settimeout(20)
                conn.recv(65536)  # the request arrived: the client now waits for the answer
                client.send_signal(signal.SIGINT)
                _, stderr = client.communicate(timeout=60)
    assert client.returncode == 1
    assert stderr == "Aborted!\n"
