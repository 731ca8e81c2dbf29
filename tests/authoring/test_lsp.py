"""`oneiricc lsp`, driven over stdio by a minimal LSP client in a real subprocess."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from support import write_project
from syrupy.assertion import SnapshotAssertion

BASE = """\
oneiric 1

stack base {
  adapter cache "memory" { impl "argparse:Namespace"; priority 10; provides read, write }
  adapter cache "redis" { impl "argparse:Namespace"; priority 5; provides read, write }
  task charge "default" { impl "json:loads" }
  task ship "default" { impl "json:loads" }
}
"""

PROD = """\
oneiric 1
import "base.oneiric"

stack prod {
  service orders "default" {
    impl "argparse:Namespace"
    requires adapter cache (write)
  }
  workflow flow "default" {
    node pay { task charge }
    pay -> ship
  }
  select adapter cache = "redis"
}

target prod { layers base, prod }

target dev { layers base }
"""


class Client:
    """JSON-RPC over the server's stdin/stdout, with a reader thread and timeouts."""

    def __init__(self, root: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oneiricc", "lsp"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        while True:
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            if not headers:
                return
            body = stream.read(int(headers["content-length"]))
            self.messages.put(json.loads(body))

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.process.stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        message = self.wait(lambda m: m.get("id") == self.next_id and "method" not in m)
        assert "error" not in message, message
        return message["result"]

    def wait(self, matches: Any, timeout: float = 60) -> dict[str, Any]:
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no message from the server in time") from None
            if matches(message):
                return message

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        message = self.wait(
            lambda m: (
                m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
            )
        )
        return list(message["params"]["diagnostics"])

    def close(self) -> None:
        try:
            self.request("shutdown", {})
            self.notify("exit", {})
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=30)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path, {"stacks/base.oneiric": BASE, "stacks/prod.oneiric": PROD})


def _started(root: Path, target: str) -> Client:
    """A server on the project in `root`, initialized to explain `target`."""
    client = Client(root)
    result = client.request(
        "initialize",
        {
            "processId": os.getpid(),
            "rootUri": root.as_uri(),
            "capabilities": {},
            "initializationOptions": {"target": target},
        },
    )
    capabilities = result["capabilities"]
    assert capabilities["hoverProvider"]
    assert capabilities["definitionProvider"]
    assert capabilities["documentFormattingProvider"]
    assert capabilities["completionProvider"]
    client.notify("initialized", {})
    return client


@pytest.fixture
def client(project: Path) -> Iterator[Client]:
    client = _started(project, "prod")
    yield client
    client.close()
    assert client.process.returncode == 0


def _open(client: Client, path: Path, text: str | None = None) -> str:
    uri = path.as_uri()
    content = path.read_text() if text is None else text
    client.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "oneiric", "version": 1, "text": content}},
    )
    return uri


def _at(text: str, needle: str, offset: int = 0) -> dict[str, int]:
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    return {"line": line, "character": index - (text.rfind("\n", 0, index) + 1)}


def test_diagnostics_follow_unsaved_edits(client: Client, project: Path) -> None:
    prod = project / "stacks/prod.oneiric"
    uri = _open(client, prod)
    assert client.diagnostics(uri) == []
    broken = PROD.replace('= "redis"', '= "redsi"')
    client.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [{"text": broken}],
        },
    )
    (diag,) = client.diagnostics(uri)
    assert diag["code"] == "E0203"
    assert diag["severity"] == 1
    assert diag["source"] == "oneiricc"
    assert (
        diag["message"] == 'unknown provider "redsi" for adapter cache\nhelp: did you mean "redis"?'
    )
    start = _at(broken, '"redsi"')
    assert diag["range"] == {
        "start": start,
        "end": {"line": start["line"], "character": start["character"] + 7},
    }
    assert prod.read_text() == PROD  # nothing written to disk


def test_hover_definition_completion_formatting(client: Client, project: Path) -> None:
    prod = project / "stacks/prod.oneiric"
    uri = _open(client, prod)
    client.diagnostics(uri)
    doc = {"textDocument": {"uri": uri}}

    hover = client.request("textDocument/hover", {**doc, "position": _at(PROD, "cache (write)")})
    text = hover["contents"]["value"]
    assert 'adapter cache → "redis"   [target prod]' in text  # initializationOptions.target
    assert "decided by: selection" in text
    assert "memory (layer base)" in text

    base_uri = (project / "stacks/base.oneiric").as_uri()
    layer = client.request("textDocument/definition", {**doc, "position": _at(PROD, "base, prod")})
    assert layer == [
        {
            "uri": base_uri,
            "range": {
                "start": {"line": 2, "character": 6},
                "end": {"line": 2, "character": 10},
            },
        }
    ]
    required = client.request(
        "textDocument/definition", {**doc, "position": _at(PROD, "cache (write)")}
    )
    assert [(d["uri"], d["range"]["start"]["line"]) for d in required] == [
        (base_uri, 4),  # the winner (redis) first
        (base_uri, 3),
    ]
    task = client.request("textDocument/definition", {**doc, "position": _at(PROD, "charge }")})
    assert [(d["uri"], d["range"]["start"]["line"]) for d in task] == [(base_uri, 5)]
    node = client.request(
        "textDocument/definition", {**doc, "position": _at(PROD, "    pay -> ship", 4)}
    )
    assert [(d["uri"], d["range"]["start"]["line"]) for d in node] == [(base_uri, 5)]
    imported = client.request(
        "textDocument/definition", {**doc, "position": _at(PROD, '"base.oneiric"', 2)}
    )
    assert imported[0]["uri"] == base_uri

    base_doc = {"textDocument": {"uri": _open(client, project / "stacks/base.oneiric")}}
    loser = client.request("textDocument/hover", {**base_doc, "position": _at(BASE, '"memory"')})
    assert (
        '**"memory" does not run in target prod**: lost by selection' in loser["contents"]["value"]
    )

    line = PROD.splitlines().index('  select adapter cache = "redis"')
    items = client.request(
        "textDocument/completion",
        {**doc, "position": {"line": line, "character": len('  select adapter cache = "')}},
    )
    assert sorted(i["label"] for i in items["items"]) == ["memory", "redis"]
    keywords = client.request(
        "textDocument/completion", {**doc, "position": {"line": 5, "character": 4}}
    )
    labels = {i["label"] for i in keywords["items"]}
    assert {"adapter", "workflow", "impl", "requires", "select"} <= labels

    messy = PROD.replace("stack prod {", "stack   prod{")
    client.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": messy}]},
    )
    edits = client.request(
        "textDocument/formatting", {**doc, "options": {"tabSize": 2, "insertSpaces": True}}
    )
    assert len(edits) == 1
    assert edits[0]["newText"] == PROD
    assert edits[0]["range"]["start"] == {"line": 0, "character": 0}


def test_syntax_errors_do_not_break_the_server(client: Client, project: Path) -> None:
    uri = _open(client, project / "stacks/prod.oneiric", "oneiric 1\nstack {\n")
    (diag,) = client.diagnostics(uri)
    assert diag["code"] == "E0001"
    doc = {"textDocument": {"uri": uri}}
    assert (
        client.request("textDocument/hover", {**doc, "position": {"line": 1, "character": 1}})
        is None
    )
    assert (
        client.request(
            "textDocument/formatting", {**doc, "options": {"tabSize": 2, "insertSpaces": True}}
        )
        is None
    )


CHECKED_MODULES = {
    "src/shop/__init__.py": "",
    "src/shop/cache.py": (
        "import typing\n"
        "from datetime import timedelta\n"
        "\n"
        "class Cache:\n"
        "    def __init__(\n"
        "        self, *, size: int = 10, ttl: timedelta | None = None,\n"
        "        loader: typing.Callable[[], int] | None = None,\n"
        "    ) -> None: ...\n"
        "    def set(self, key: str, value: bytes) -> None: ...\n"
    ),
    "src/shop/protocols.py": (
        "from typing import Protocol\n"
        "\n"
        "class Writer(Protocol):\n"
        "    def set(self, key: str, value: bytes) -> None: ...\n"
    ),
    "src/shop/lazy.py": "def __getattr__(name):\n    return len\n",
}

CHECKED = """\
oneiric 1

stack shop {
  capability adapter cache write = "shop.protocols:Writer"
  adapter cache "memory" {
    impl "shop.cache:Cache"
    provides write
    config { size = 5, loader = "x" }
  }
  service orders "default" { impl "shop.lazy:Orders" }
}

target dev { layers shop }
"""


def test_hover_on_a_declaration_shows_what_was_checked(
    tmp_path: Path, snapshot: SnapshotAssertion
) -> None:
    """On a component's declaration or its `impl` string, hover adds `oneiricc explain`'s
    "checked:" lines for the winner: config keys and capabilities checked or not, and why."""
    root = write_project(
        tmp_path, {**CHECKED_MODULES, "stacks/shop.oneiric": CHECKED}, 'module-path = ["src"]\n'
    )
    client = _started(root, "dev")
    try:
        uri = _open(client, root / "stacks/shop.oneiric")
        assert client.diagnostics(uri) == []
        doc = {"textDocument": {"uri": uri}}
        shown = {
            where: client.request("textDocument/hover", {**doc, "position": _at(CHECKED, where)})[
                "contents"
            ]["value"]
            for where in ('"shop.cache:Cache"', 'cache "memory"', 'orders "default"')
        }
    finally:
        client.close()
    assert shown['"shop.cache:Cache"'] == shown['cache "memory"']  # impl string, declaration
    assert "  checked:    implementation and config" in shown['cache "memory"']
    assert "  capability: write checked against shop.protocols:Writer" in shown['cache "memory"']
    assert "config loader not checked" in shown['cache "memory"']
    assert "checked:    no — " in shown['orders "default"']
    assert shown == snapshot
