"""Secret providers by reference scheme (file, env, cmd, aws-sm and aws-ssm against moto's
server, an AWS emulator), their TTL caches, rotation that swaps exactly the components whose
values changed, and a planted secret that must appear in no output."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from oneiric._lifecycle.runtime import Runtime, SwapAborted
from oneiric._plan import values
from oneiric._plan.secrets import SECRETS, SecretError, split
from planbuild import component, plan
from rtprocess import oneiric, running, wait_for, write_plan  # noqa: F401 (fixture)
from secretclients import Client
from servers import Server, free_port, moto_server

PLANTED = "pl4nted-Secret-value-7c1e"
HELPER = """
import pathlib, sys, time
name = sys.argv[1]
calls = pathlib.Path(sys.argv[2])
calls.write_text(calls.read_text() + name + "\\n" if calls.exists() else name + "\\n")
if name == "slow":
    time.sleep(5)
if name == "broken":
    print("helper says: " + name, file=sys.stderr)
    sys.exit(3)
print(pathlib.Path(sys.argv[3], name).read_text().strip())
"""


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config"
    (config / "secrets").mkdir(parents=True)
    monkeypatch.setenv("ONEIRIC_CONFIG", str(config))
    SECRETS.invalidate()
    Client.made.clear()
    return config


def settings(config: Path, text: str) -> None:
    (config / "secrets.toml").write_text(text, encoding="utf-8")


def with_helper(config: Path, tmp_path: Path, ttl: int = 300, timeout: float = 2) -> Path:
    """A `cmd:` helper (a real program) reading values from `values/`, counting its calls."""
    (tmp_path / "helper.py").write_text(HELPER, encoding="utf-8")
    (tmp_path / "values").mkdir()
    command = [sys.executable, str(tmp_path / "helper.py"), "{name}"]
    command += [str(tmp_path / "calls"), str(tmp_path / "values")]
    settings(
        config,
        f"[cmd]\ncommand = {json.dumps(command)}\ntimeout_s = {timeout}\n[ttl]\ncmd = {ttl}\n",
    )
    return tmp_path / "values"


def test_scheme_selects_the_provider_bare_names_stay_files(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert split("db/password") == ("file", "db/password")
    assert split("file:db/password") == ("file", "db/password")
    assert split("aws-sm:shop/db#password") == ("aws-sm", "shop/db#password")
    assert split("vault:x") == ("file", "vault:x")  # not a scheme of ours: a file name
    (config_dir / "secrets" / "db").mkdir()
    (config_dir / "secrets" / "db" / "password").write_text("from-file\n")
    monkeypatch.setenv("SHOP_DB_PASSWORD", "from-env")
    assert SECRETS.read("db/password") == "from-file"
    assert SECRETS.read("file:db/password") == "from-file"
    assert SECRETS.read("env:SHOP_DB_PASSWORD") == "from-env"
    with pytest.raises(SecretError, match="environment variable NOPE is not set"):
        SECRETS.read("env:NOPE")
    with pytest.raises(SecretError, match="must be relative"):
        SECRETS.read("file:../escape")
    with pytest.raises(SecretError, match="nothing after env:"):
        SECRETS.read("env:")


def test_command_provider_runs_the_helper_with_a_timeout_and_caches(
    config_dir: Path, tmp_path: Path
) -> None:
    store = with_helper(config_dir, tmp_path, ttl=300, timeout=1)
    (store / "db").write_text(PLANTED)
    assert SECRETS.read("cmd:db") == PLANTED
    assert SECRETS.read("cmd:db") == PLANTED
    assert (tmp_path / "calls").read_text().split() == ["db"]  # the second read was cached
    SECRETS.invalidate(["cmd:db"])
    assert SECRETS.read("cmd:db") == PLANTED
    assert (tmp_path / "calls").read_text().split() == ["db", "db"]
    with pytest.raises(SecretError, match=r"gave no answer within 1s"):
        SECRETS.read("cmd:slow")
    with pytest.raises(SecretError, match="exited with 3") as caught:
        SECRETS.read("cmd:broken")
    assert "helper says" not in str(caught.value)  # the helper's stderr is not repeated


def test_command_provider_needs_a_configured_helper(config_dir: Path) -> None:
    with pytest.raises(SecretError, match=r"no helper configured; set \[cmd\] command"):
        SECRETS.read("cmd:db")


@pytest.fixture(scope="module")
def moto() -> Iterator[Server]:
    yield from moto_server()


def test_aws_secrets_manager_and_ssm_against_an_emulator(
    moto: Server, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{moto.port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings(config_dir, f'[aws]\nregion = "eu-west-1"\nendpoint_url = "{endpoint}"\n')
    common: dict[str, Any] = {"endpoint_url": endpoint, "region_name": "eu-west-1"}
    sm = boto3.client("secretsmanager", **common)
    sm.create_secret(Name="shop/db", SecretString=json.dumps({"password": PLANTED, "user": "u"}))
    sm.create_secret(Name="shop/token", SecretString="tok-1")
    ssm = boto3.client("ssm", **common)
    ssm.put_parameter(Name="/shop/api", Value="param-1", Type="SecureString")
    assert SECRETS.read("aws-sm:shop/db#password") == PLANTED
    assert SECRETS.read("aws-sm:shop/token") == "tok-1"
    assert SECRETS.read("aws-ssm:/shop/api") == "param-1"
    sm.put_secret_value(SecretId="shop/token", SecretString="tok-2")
    assert SECRETS.read("aws-sm:shop/token") == "tok-1"  # cached for the provider's TTL
    SECRETS.invalidate()
    assert SECRETS.read("aws-sm:shop/token") == "tok-2"
    with pytest.raises(SecretError, match=r"AWS Secrets Manager: ResourceNotFoundException"):
        SECRETS.read("aws-sm:shop/missing")
    with pytest.raises(SecretError, match="no JSON field 'nope'") as caught:
        SECRETS.read("aws-sm:shop/db#nope")
    assert PLANTED not in str(caught.value)
    with pytest.raises(SecretError, match="AWS SSM: ParameterNotFound"):
        SECRETS.read("aws-ssm:/shop/none")


def client_component(cid: str, reference: str) -> dict[str, Any]:
    made = component(
        cid, "one", impl="secretclients:Client", config={"password": {"$secret": reference}}
    )
    del made["config"]["tag"]
    return made


@pytest.mark.anyio
async def test_rotation_swaps_exactly_the_components_whose_values_changed(
    config_dir: Path, tmp_path: Path, callers: Any
) -> None:
    store = with_helper(config_dir, tmp_path)
    for name, value in {"a": "a-1", "b": "b-1"}.items():
        (store / name).write_text(value)
    (config_dir / "secrets" / "c").write_text("c-1")
    runtime = Runtime()
    await runtime.apply(
        plan(
            client_component("adapter:a", "cmd:a"),
            client_component("adapter:b", "cmd:b"),
            client_component("adapter:c", "c"),
        )
    )
    before = {cid: i.value for cid, i in runtime.instances.items()}
    assert await runtime.refresh_secrets() is None  # nothing changed: nothing swapped
    (store / "a").write_text("a-2")
    (store / "b").write_text("b-2")
    handle = runtime.handle("adapter:a")
    with callers(6, handle.fingerprint) as calls:
        await anyio.sleep(0.1)
        report = await runtime.refresh_secrets(["cmd:a"])  # only a's reference
        await anyio.sleep(0.1)
    assert report is not None
    assert report.changed == ["adapter:a"]
    assert calls.failures == []
    digest = hashlib.sha256(b"a-2").hexdigest()[:12]
    assert all(seen[-1] == digest for seen in calls.results)
    assert before["adapter:a"].closed  # make before break: the old one was cleaned up
    assert runtime.instances["adapter:b"].value is before["adapter:b"]
    assert runtime.instances["adapter:c"].value is before["adapter:c"]
    report = await runtime.refresh_secrets()  # all: b changed too
    assert report is not None
    assert report.changed == ["adapter:b"]
    (store / "a").unlink()  # unreadable now: the swap fails, the old instance serves on
    with pytest.raises(SwapAborted, match=r"adapter:a: config password: secret 'cmd:a'"):
        await runtime.refresh_secrets()
    assert handle.fingerprint() == digest
    await runtime.stop()


def test_plan_holds_references_never_values(tmp_path: Path) -> None:
    from support import compile_at, write_project

    root = write_project(
        tmp_path / "project",
        {
            "stacks/s.oneiric": 'oneiric 1\nstack s {\n  adapter db "pg" {\n'
            '    impl "secretclients:Client"\n'
            '    config { password = secret("aws-sm:shop/db#password") }\n  }\n}\n'
            "target t { layers s }\n"
        },
        settings=f'module-path = ["{Path(__file__).parent}"]\n',
    )
    build = compile_at(root)
    [built] = build.plans.values()
    [db] = built.components
    assert db.config == {"password": {"$secret": "aws-sm:shop/db#password"}}
    assert values.secret_references(db.config) == ["aws-sm:shop/db#password"]


def test_a_planted_secret_appears_in_no_output(
    config_dir: Path,
    tmp_path: Path,
    running: Any,  # noqa: F811
) -> None:
    """`oneiric run` with --http and --secrets-refresh, `secrets rotate`, status, health,
    list, metrics, the plan, a failing rotation: the value is in none of them."""
    store = with_helper(config_dir, tmp_path, ttl=0)
    (store / "db").write_text(PLANTED)
    (config_dir / "secrets" / "api").write_text(PLANTED + "-api")
    plan_file = tmp_path / "plan.json"
    write_plan(
        plan_file,
        plan(client_component("adapter:db", "cmd:db"), client_component("adapter:api", "api")),
    )
    port = free_port()
    env = {"ONEIRIC_CONFIG": str(config_dir), "LOG_LEVEL": "debug"}
    run = running(plan_file, "--http", str(port), "--secrets-refresh", "1s", env=env)
    run.wait_running(watching=False)
    outputs: dict[str, str] = {"plan": plan_file.read_text()}
    (store / "db").write_text(PLANTED + "-2")
    rotated = oneiric("secrets", "rotate", "cmd:db", "--state", str(run.state), env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "swapped adapter:db" in rotated.stdout
    outputs["rotate"] = rotated.stdout + rotated.stderr
    (store / "db").unlink()
    failed = oneiric("secrets", "rotate", "--state", str(run.state), "--format", "json", env=env)
    assert failed.returncode == 1
    assert "secret 'cmd:db'" in failed.stdout
    outputs["failed rotate"] = failed.stdout + failed.stderr
    wait_for(lambda: "secret rotation" in run.stderr.read_text(), what="a refresh problem logged")
    for command in (["status"], ["health"], ["list"]):
        done = oneiric(*command, "--state", str(run.state), env=env)
        outputs[" ".join(command)] = done.stdout + done.stderr
    for path in ("/metrics", "/status", "/healthz", "/readyz", "/"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                outputs[path] = answer.read().decode()
        except urllib.error.HTTPError as exc:
            outputs[path] = exc.read().decode()
    assert run.stop() == 0
    outputs["logs"] = run.stderr.read_text()
    for path in run.state.rglob("*"):
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert len(outputs) > 10
    assert "oneiric_" in outputs["/metrics"]
    assert "adapter:db" in outputs["logs"]
    for where, text in outputs.items():
        assert PLANTED not in text, f"the secret leaked into {where}"
    assert os.environ.get("ONEIRIC_CONFIG") == str(config_dir)
