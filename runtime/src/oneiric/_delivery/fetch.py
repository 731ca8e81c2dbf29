"""Fetching manifests and plans from files and HTTP(S), with hard limits.

* A size cap is enforced while the bytes arrive: a declared Content-Length
  over the cap is refused before the body is read, and a body that grows past
  the cap is abandoned at the first chunk that crosses it.
* Timeouts: connect and per-read timeouts catch a silent server, and an
  overall deadline catches one that drips a byte at a time.
* Compression is refused (`Accept-Encoding: identity`): a cap must bound what
  is held in memory, not what crossed the wire.
* ETag / If-None-Match: a 304 answer is reported as `not_modified`.
* Files must be regular files (not a FIFO or a device that never ends).

Sources are URLs (`http://`, `https://`, `file://`) or local paths.  A
reference inside a manifest is resolved against the manifest's own location;
a manifest fetched over HTTP(S) may only reference HTTP(S).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from oneiric._delivery.checks import Check, Rejected, TransferError
from oneiric._delivery.limits import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Fetched:
    data: bytes  # empty when not_modified
    etag: str | None = None
    not_modified: bool = False


def is_http(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def resolve(base: str, reference: str) -> str:
    """Resolve a plan reference against the location of the manifest that names it."""
    scheme = urlsplit(reference).scheme
    if is_http(base):
        joined = urljoin(base, reference)
        if not is_http(joined):
            raise Rejected(
                Check.PAYLOAD,
                f"plan URL {reference!r}: a manifest fetched over "
                "HTTP(S) may only reference HTTP(S) plans",
            )
        return joined
    if scheme in ("http", "https", "file"):
        return reference
    if len(scheme) > 1:  # one letter is a Windows drive, anything longer a scheme
        raise Rejected(Check.PAYLOAD, f"plan URL {reference!r}: unsupported scheme {scheme!r}")
    return str(_local_path(base).parent / reference)


def _local_path(source: str) -> Path:
    parts = urlsplit(source)
    return Path(unquote(parts.path)) if parts.scheme == "file" else Path(source)


def _too_big(what: str, max_bytes: int) -> Rejected:
    return Rejected(Check.SIZE, f"{what} is larger than the cap of {max_bytes} bytes")


class Fetcher:
    """One HTTP connection pool plus the limits; use as a context manager."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._client: httpx.Client | None = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    def fetch(self, source: str, what: str, *, max_bytes: int, etag: str | None = None) -> Fetched:
        if is_http(source):
            return self._fetch_http(source, what, max_bytes, etag)
        return Fetched(self._read_file(_local_path(source), what, max_bytes))

    def _read_file(self, path: Path, what: str, max_bytes: int) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise TransferError(
                Check.TRANSFER, f"cannot open {what} {path}: {exc.strerror}"
            ) from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TransferError(Check.TRANSFER, f"{what} {path} is not a regular file")
            if info.st_size > max_bytes:
                raise _too_big(f"{what} {path} ({info.st_size} bytes)", max_bytes)
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew while we read it
            raise _too_big(f"{what} {path}", max_bytes)
        return data

    def _http(self) -> httpx.Client:
        if self._client is None:
            import httpx

            self._client = httpx.Client(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=True,
                max_redirects=5,
                headers={"Accept-Encoding": "identity", "User-Agent": "oneiric-runtime"},
            )
        return self._client

    def _fetch_http(self, url: str, what: str, max_bytes: int, etag: str | None) -> Fetched:
        import httpx

        deadline = time.monotonic() + self.timeout
        headers = {"If-None-Match": etag} if etag else {}
        try:
            with self._http().stream("GET", url, headers=headers) as response:
                if response.status_code == 304 and etag:
                    return Fetched(b"", etag, not_modified=True)
                if response.status_code != 200:
                    raise TransferError(
                        Check.TRANSFER, f"{what} {url}: HTTP {response.status_code}"
                    )
                if response.headers.get("Content-Encoding", "identity") != "identity":
                    raise TransferError(
                        Check.TRANSFER, f"{what} {url}: compressed although identity was requested"
                    )
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise _too_big(f"{what} {url} (Content-Length {declared})", max_bytes)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_raw():  # as received: no buffering to a chunk size
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_big(f"{what} {url}", max_bytes)
                    if time.monotonic() > deadline:
                        raise TransferError(
                            Check.TIMEOUT, f"{what} {url}: not complete after {self.timeout:g} s"
                        )
                    chunks.append(chunk)
                return Fetched(b"".join(chunks), response.headers.get("ETag"))
        except httpx.TimeoutException:
            raise TransferError(
                Check.TIMEOUT, f"{what} {url}: no data for {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise TransferError(Check.TRANSFER, f"{what} {url}: {exc}") from None
