"""The deployment files: the Dockerfile's image, run without a container engine.

No engine can pull base images here, so the test does what the Dockerfile does
with what is at hand: it builds the same wheels (the runtime with its http
extra, the demo application) into a fresh virtualenv, lays out the image's
working directory (a signed manifest of the prod target, the trust file, a
secret), and runs the ENTRYPOINT + CMD command line and the HEALTHCHECK command
exactly as the Dockerfile writes them, with its ENV.  The compose file's
Prometheus rules are checked by promtool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from support import ROOT

sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from ophttp import get, require
from rtprocess import wait_for

ENV = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
for _name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
    ENV.pop(_name, None)


def instructions(path: Path) -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def one(stage: list[tuple[str, str]], word: str) -> str:
    (found,) = [rest for w, rest in stage if w == word]
    return found


def run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    wheels, image = instructions(ROOT / "Dockerfile")
    assert one(wheels, "FROM").endswith("AS wheels")
    # what test_the_image_entrypoint_... builds: the runtime with http, and the app
    assert one(wheels, "RUN") == (
        'pip wheel --no-cache-dir --wheel-dir /wheels "./runtime[http]" ./app'
    )
    assert one(image, "FROM").startswith("python:3.11-slim")
    assert ("COPY", "--from=wheels /wheels /tmp/wheels") in image
    assert one(image, "USER") not in ("root", "0")
    assert json.loads(one(image, "ENTRYPOINT"))[:2] == ["oneiric", "run"]
    assert "/healthz" in one(image, "HEALTHCHECK")
    assert one(image, "EXPOSE") == "9464"


def test_compose_runs_the_image_and_a_prometheus_scraping_it() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert compose["services"]["oneiric"]["build"]["dockerfile"] == "Dockerfile"
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["oneiric:9464"]
    promtool = require("promtool", "prometheus")
    out = run(promtool, "check", "rules", ROOT / "deploy" / "oneiric.rules.yml")
    assert "SUCCESS: 5 rules found" in out


def exec_form(arguments: str) -> list[str]:
    """A JSON-array instruction (exec form), e.g. ENTRYPOINT ["a", "b"] or CMD [...]."""
    words = json.loads(arguments.removeprefix("CMD").strip())
    assert isinstance(words, list)
    return [str(w) for w in words]


def image_env(image: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in image:
        if word == "ENV":
            env.update(pair.split("=", 1) for pair in rest.split())
    return env


@pytest.mark.slow
def test_the_image_entrypoint_runs_a_signed_prod_plan_from_fresh_wheels(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH; `make setup` installs it")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9464)) == 0:
            pytest.fail("port 9464 (the image's) is taken on this machine")
    _, image = instructions(ROOT / "Dockerfile")

    # Stage 1 and 2: the same wheels, installed into a fresh virtualenv.
    out = tmp_path / "wheels"
    for package in ("oneiric-runtime", "oneiric-demo"):
        run(uv, "build", "--wheel", "--package", package, "--out-dir", out, cwd=ROOT)
    venv = tmp_path / "venv"
    run(uv, "venv", "--python", "python3", "--quiet", venv)
    runtime_wheel = next(out.glob("oneiric_runtime-*.whl"))
    demo_wheel = next(out.glob("oneiric_demo-*.whl"))
    run(
        uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python",
        f"{runtime_wheel}[http]", demo_wheel,
    )  # fmt: skip
    assert not (venv / "bin" / "oneiricc").exists()  # the image carries no compiler

    # The image's WORKDIR: config/ (manifest, trust, secrets); state/ and var/ writable.
    srv = tmp_path / "srv"
    config = srv / "config"
    (config / "secrets" / "payments").mkdir(parents=True)
    (config / "secrets" / "payments" / "api-key").write_text("sk_test_deploy")
    (srv / "state").mkdir()
    (srv / "var").mkdir()
    oneiricc = Path(sys.executable).parent / "oneiricc"
    key = tmp_path / "release.key"
    run(oneiricc, "keygen", "--out", key)
    run(oneiricc, "trust", "init", "--key", f"{key}.pub", "--threshold", "1",
        "--out", config / "trust.json")  # fmt: skip
    run(oneiricc, "sign", ROOT / "golden" / "prod.plan.json", "--key", key, "--serial", "7",
        "--expires", "7d", "--out", config / "manifest.json")  # fmt: skip

    command = exec_form(one(image, "ENTRYPOINT")) + exec_form(one(image, "CMD"))
    env = {**ENV, **image_env(image), "PATH": f"{venv / 'bin'}:{ENV['PATH']}"}
    assert env["ONEIRIC_STATE"] == "state"
    log = (tmp_path / "oneiric.log").open("wb")
    proc = subprocess.Popen(command, cwd=srv, env=env, stdout=log, stderr=log)
    try:
        url = "http://127.0.0.1:9464/"

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "oneiric.log").read_text()
            try:
                return get(url + "readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=60, what="the image's runtime to be ready")
        health = exec_form(one(image, "HEALTHCHECK").split(" CMD ", 1)[1])
        assert subprocess.run(health, cwd=srv, env=env, timeout=30).returncode == 0
        metrics = get(url + "metrics")[2].decode()
        assert re.search(r'oneiric_plan_info\{.*serial="7".*target="prod"', metrics), metrics
        expiry = float(re.findall(r"^oneiric_manifest_expiry_timestamp_seconds (\S+)$",
                                  metrics, re.M)[0])  # fmt: skip
        assert 6 * 86400 < expiry - time.time() <= 7 * 86400
        with urllib.request.urlopen(url + "status", timeout=10) as response:
            status = json.loads(response.read())
        assert status["components"]["service:payments"]["provider"] == "live"
        assert (srv / "state" / "status.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, (tmp_path / "oneiric.log").read_text()
    # and once stopped, the HEALTHCHECK command fails
    assert subprocess.run(health, cwd=srv, env=env, capture_output=True).returncode != 0
