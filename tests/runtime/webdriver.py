"""A minimal W3C WebDriver client (urllib) for headless Chromium through chromedriver."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ophttp import free_port, get, require
from rtprocess import wait_for

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
    "--window-size=1280,1400",
]


class Browser:
    def __init__(self, url: str, session: str) -> None:
        self.base = f"{url}session/{session}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def js(self, script: str) -> Any:
        """Run `script` (a function body) in the page; read-only DOM queries."""
        return self._call("POST", "/execute/sync", {"script": script, "args": []})

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self._call("GET", "/screenshot"))
        path.write_bytes(png)
        return png

    def close(self) -> None:
        self._call("DELETE", "")


@contextmanager
def chromium(tmp: Path) -> Iterator[Browser]:
    """Headless Chromium driven by chromedriver, both real processes, on 127.0.0.1."""
    driver = require("chromedriver", "chromium-driver")
    binary = require("chromium", "chromium")
    port = free_port()
    log = (tmp / "chromedriver.log").open("wb")
    proc = subprocess.Popen(
        [driver, f"--port={port}", "--allowed-ips=127.0.0.1"], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}/"
    try:

        def ready() -> bool:
            assert proc.poll() is None, (tmp / "chromedriver.log").read_text()
            try:
                return bool(get(url + "status")[0] == 200)
            except OSError:
                return False

        wait_for(ready, timeout=30, what="chromedriver")
        body = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": binary,
                        "args": [*CHROMIUM_ARGS, f"--user-data-dir={tmp / 'chromium'}"],
                    },
                }
            }
        }
        request = urllib.request.Request(
            url + "session",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            session = json.loads(response.read())["value"]["sessionId"]
        browser = Browser(url, session)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
