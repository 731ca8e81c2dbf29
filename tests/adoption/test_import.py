"""`oneiricc import`: the original Oneiric's settings and manifests become stacks that
build and resolve the same way, with a report of what could not be carried over."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from minikit import cli

HERE = Path(__file__).resolve().parent / "migration"
LEGACY = {
    "src/legacy/__init__.py": "",
    "src/legacy/storage.py": (
        "class ObjectStore:\n"
        "    def __init__(self, bucket: str = 'files', part_size: float = 5.0) -> None:\n"
        "        self.bucket = bucket\n"
    ),
    "src/legacy/payments.py": (
        "class Sandbox:\n    pass\n\n\n"
        "class Live:\n"
        "    def __init__(self, currency: str = 'USD', regions: list[str] | None = None) -> None:\n"
        "        self.currency = currency\n"
    ),
    "src/legacy/tasks.py": (
        "def send_smtp(order: object, upstream: object) -> str:\n    return 'smtp'\n\n\n"
        "def send_sendgrid(order: object, upstream: object) -> str:\n    return 'sendgrid'\n"
    ),
    "src/legacy/events.py": "def audit(event: object) -> str:\n    return 'seen'\n",
    "src/legacy/actions.py": "def fetch(payload: object) -> object:\n    return payload\n",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    for name, text in {
        "oneiric.toml": 'sources = ["stacks"]\nmodule-path = ["src"]\n',
        **LEGACY,
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    for sample in HERE.iterdir():
        shutil.copy(sample, root / sample.name)
    return root


def _decisions(root: Path, target: str = "imported") -> dict[str, str]:
    plan = json.loads((root / "golden" / f"{target}.plan.json").read_bytes())
    return {c["id"]: c["provider"] for c in plan["components"]}


def test_settings_and_a_manifest_become_stacks_that_resolve_the_same(project: Path) -> None:
    args = ["settings.yml", "manifest.yaml", "--stack-order", "legacy:20,oneiric:10"]
    result = cli("oneiricc", "import", *args, cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "wrote stacks/imported.oneiric (target imported) and stacks/imported.report.md"
    )
    assert cli("oneiricc", "fmt", "--check", cwd=project).returncode == 0
    built = cli("oneiricc", "build", cwd=project)
    assert built.returncode == 0, built.stderr
    assert _decisions(project) == {
        "adapter:cache": "redis",  # its selection
        "adapter:storage": "s3like",  # priority 20 (legacy) over 10 (oneiric), lower level
        "service:payments": "live",  # stack level 5 over 1
        "task:email-sender": "sendgrid",  # registration order: the last one
        "event:order_created": "audit",
        "action:http_fetch": "builtin-http-fetch",
    }
    plan = json.loads((project / "golden" / "imported.plan.json").read_bytes())
    assert plan["profile"] == "serverless"
    assert [r["topic"] for r in plan["routes"]] == ["order.created"]
    by_id = {c["id"]: c for c in plan["components"]}
    assert by_id["adapter:cache"]["config"] == {"url": "redis://127.0.0.1:6379/0"}
    assert by_id["adapter:cache"]["provides"] == ["kv", "pub-sub", "ttl"]
    assert by_id["service:payments"]["config"] == {"currency": "EUR", "regions": ["eu", "us"]}
    assert by_id["task:email-sender"]["retry"] == {"attempts": 3, "backoff_ms": None}
    assert by_id["adapter:storage"]["config"] == {
        "bucket": "shop-files",
        "part_size": {"$float": "8.5"},
    }

    report = (project / "stacks" / "imported.report.md").read_text()
    for expected in (
        "| settings.yml: remote | settings section |",
        "| settings.yml: lifecycle | settings section |",
        "| settings.yml: profile | watchers_enabled |",
        "| settings.yml: adapters: options |",
        "| settings.yml: adapters: provider_settings.redis.password | null |",
        '| settings.yml: adapters: selections.queue | adapter queue = "rabbit" |',
        "| manifest.yaml: entries[1]: uri |",
        "| manifest.yaml: entries[1]: requires |",
        "| manifest.yaml: entries[1]: metadata.connection_pool_size | 10 |",
        "| manifest.yaml: entries[7]: retry_policy | backoff_multiplier |",
        "| manifest.yaml: entries[10] | workflow fulfillment (legacy.workflows:Fulfillment) |",
        "| manifest.yaml: entries[8] | `order.created` | `order_created` |",
        "| manifest.yaml: entries[9] | `http.fetch` | `http_fetch` |",
        '| manifest.yaml: entries[8] | event order.created handles the topic "order.created" |',
        "10 declarations, 1 selection.",
    ):
        assert expected in report, expected
    stacks = (project / "stacks" / "imported.oneiric").read_text()
    assert "# Shared Redis cache" in stacks
    assert "layers level_1, level_3, level_5, settings" in stacks


def test_a_per_domain_settings_file_selects(project: Path) -> None:
    result = cli("oneiricc", "import", "manifest.yaml", "adapters.yml", cwd=project)
    assert result.returncode == 0, result.stderr
    assert cli("oneiricc", "build", cwd=project).returncode == 0
    decisions = _decisions(project)
    assert decisions["adapter:storage"] == "local"
    assert decisions["adapter:cache"] == "redis"  # priority 500


def test_import_never_overwrites_nor_half_writes(project: Path) -> None:
    assert cli("oneiricc", "import", "manifest.yaml", cwd=project).returncode == 0
    before = (project / "stacks" / "imported.oneiric").read_bytes()
    again = cli("oneiricc", "import", "settings.yml", "manifest.yaml", cwd=project)
    assert again.returncode == 1
    assert "refusing to overwrite stacks/imported.oneiric, stacks/imported.report.md" in (
        again.stderr
    )
    assert (project / "stacks" / "imported.oneiric").read_bytes() == before
    (project / "stacks" / "other.report.md").write_text("mine")
    half = cli("oneiricc", "import", "manifest.yaml", "--out", "stacks/other.oneiric", cwd=project)
    assert half.returncode == 1
    assert not (project / "stacks" / "other.oneiric").exists()


@pytest.mark.parametrize(
    ("files", "args", "code", "message"),
    [
        ({"x.yml": "a: 1\n"}, [], 1, "neither a remote manifest"),
        ({"x.yml": "entries: [{domain: adapter}]\n"}, [], 1, "missing key, provider, factory"),
        (
            {"x.yml": "entries: [{domain: gadget, key: k, provider: p, factory: m:f}]\n"},
            [],
            1,
            "unknown domain 'gadget'",
        ),
        ({"x.yml": "entries:\n  - [\n"}, [], 1, "not valid YAML"),
        ({"x.yml": "entries: []\n"}, ["--stack-order", "nonsense"], 2, "is not NAME:PRIORITY"),
        ({"x.yml": "entries: []\n"}, [], 1, "nothing to import"),
        ({"x.yml": "entries: []\n"}, ["--out", "stacks/x.txt"], 2, "ends in .oneiric"),
        ({}, [], 2, "x.yml"),
    ],
)
def test_bad_input(
    tmp_path: Path, files: dict[str, str], args: list[str], code: int, message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = cli("oneiricc", "import", "x.yml", *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stacks").exists()
