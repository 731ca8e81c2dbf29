"""A small real HTTP server for the HTTP client adapter's tests: `python httpd.py PORT NAME`.

GET /ok -> 200 {"server": NAME}; GET /flaky/KEY/N -> 503 for the first N requests of KEY,
then 200; GET /fail -> 500; GET /slow -> 200 after 2 s; POST /echo -> the body back.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN: Counter[str] = Counter()
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts[0] == "ok":
            self.reply(200, json.dumps({"server": sys.argv[2]}).encode())
        elif parts[0] == "flaky":
            with LOCK:
                SEEN[parts[1]] += 1
                count = SEEN[parts[1]]
            self.reply(503 if count <= int(parts[2]) else 200, b'{"count": %d}' % count)
        elif parts[0] == "fail":
            self.reply(500, b"{}")
        elif parts[0] == "slow":
            time.sleep(2)
            self.reply(200, b"{}")
        else:
            self.reply(404, b"{}")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(200, body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
