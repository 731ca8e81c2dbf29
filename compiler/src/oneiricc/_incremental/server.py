"""The build server: one warm compiler for one project (`oneiricc server ...`).

A build in a fresh process pays, before any work, for the interpreter, the
imports and lark's tables, then reads every checked file back from the cache,
and makes every component of every plan again.  The server pays for those
once: it keeps what its builds made (`memos.WarmState`: checked files,
candidates, components) and runs each `build` or `check` that `launcher`
forwards as that process would have run it (`_as_caller`): same
arguments, working directory, environment, import path and umask, writing to
the caller's own standard output and error.  Output, files and exit codes are
those of a build in the caller's process.

Requests are served one at a time.  The server stops after `--idle-timeout`
seconds without one, on `oneiricc server stop`, on SIGTERM or SIGINT, and
when code it runs changed on disk (an upgrade, an edit of an editable
install): it declines that request, which the caller then builds itself.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import importlib
import os
import resource
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO, TypeGuard

from oneiricc._incremental.memos import WarmState
from oneiricc._incremental.wire import (
    PROTOCOL,
    ProtocolError,
    code_identity,
    connect,
    encode,
    private_directory,
    receive,
    served_root,
    server_address,
)
from oneiricc._language.parser import GRAMMAR_FILE

# What the server runs for a request: the command line (argv, program name) with the
# warm state, as the caller's process would (it exits by SystemExit, like click).
Runner = Callable[[list[str], str, WarmState], object]

REQUEST_TIMEOUT_S = 10.0  # to receive a request once connected
COLLECT_AFTER_S = 1.0  # without a request, then collect garbage


class ServerError(Exception):
    """The server cannot start or listen (exit 2)."""


class _Stopped(BaseException):
    """SIGTERM: unwinds even a running build (whose caller then builds itself)."""


@dataclass(frozen=True, slots=True)
class Request:
    """A forwarded command: everything a build reads from its process."""

    argv: list[str]
    prog: str
    cwd: str
    env: dict[str, str]
    path: list[str]
    umask: int
    encoding: tuple[str, str, str]  # stdout's encoding and errors, stderr's encoding

    @classmethod
    def parse(cls, message: dict[str, Any]) -> Request:
        fields = ("argv", "prog", "cwd", "env", "path", "umask", "encoding")
        argv, prog, cwd, env, path, umask, encoding = (message.get(name) for name in fields)
        if not (
            _strings(argv)
            and isinstance(prog, str)
            and isinstance(cwd, str)
            and isinstance(env, dict)
            and _strings([*env, *env.values()])
            and _strings(path)
            and type(umask) is int
            and 0 <= umask <= 0o777
            and _strings(encoding)
            and len(encoding) == 3
        ):
            raise ProtocolError("a malformed build request")
        try:
            codecs.lookup(encoding[0])
            codecs.lookup_error(encoding[1])
            codecs.lookup(encoding[2])
        except LookupError as exc:
            raise ProtocolError(f"unknown stream encoding: {exc}") from None
        return cls(argv, prog, cwd, env, path, umask, (encoding[0], encoding[1], encoding[2]))


def _strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class _CodeFiles:
    """The files of the code this process runs, to notice when one changes on disk."""

    def __init__(self, *extra: Path) -> None:
        self._extra = [str(path) for path in extra]
        self._seen: dict[str, tuple[int, int] | None] = {}
        self.changed()

    def changed(self) -> str | None:
        """A file that changed since it was first seen, or None; records files loaded since."""
        files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
        for path in [*self._extra, *(f for f in files if isinstance(f, str))]:
            try:
                info = os.stat(path)
                current: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
            except OSError:
                current = None
            previous = self._seen.setdefault(path, current)
            if previous != current:
                return path
        return None


class BuildServer:
    def __init__(self, root: Path, idle_timeout_s: float | None, run: Runner) -> None:
        self.root = root
        self.runner = run
        self.address = server_address(str(root))
        self.idle_timeout_s = idle_timeout_s
        self.warm = WarmState()
        self.started = time.time()
        self.builds = 0
        self._stopping = False
        self._log = sys.stderr
        self._code = _CodeFiles(Path(GRAMMAR_FILE))

    def run(self) -> None:
        """Listen and serve until stopped; the socket is gone when this returns."""
        listener, inode = _listen(self.address)

        def stop(signum: int, frame: FrameType | None) -> NoReturn:
            raise _Stopped

        signal.signal(signal.SIGTERM, stop)
        self.log(f"serving {self.root} on {self.address} (pid {os.getpid()})")
        try:
            with listener:
                self._serve(listener)
        except (KeyboardInterrupt, _Stopped):
            pass
        finally:
            with contextlib.suppress(OSError):
                if os.stat(self.address).st_ino == inode:  # still ours, not a successor's
                    os.unlink(self.address)
            self.log("stopped")

    def _serve(self, listener: socket.socket) -> None:
        """Serve until stopped, or idle (no build) for `idle_timeout_s`.

        Builds run with the cyclic collector paused (`_cli.main`); it runs when
        requests pause for `COLLECT_AFTER_S`, since a full collection over the
        kept files costs as much as a small build.
        """
        last_build = time.monotonic()
        garbage = False
        while not self._stopping:
            if garbage:
                listener.settimeout(COLLECT_AFTER_S)
            elif self.idle_timeout_s is None:
                listener.settimeout(None)
            else:  # (a timeout of 0 would make the socket non-blocking instead)
                left = last_build + self.idle_timeout_s - time.monotonic()
                listener.settimeout(max(0.001, left))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if garbage:
                    gc.collect()
                    garbage = False
                    continue
                self.log(f"no build for {self.idle_timeout_s:.0f} s: stopping")
                return
            builds = self.builds
            with conn:
                self._serve_one(conn)
            if self.builds != builds:
                last_build = time.monotonic()
                garbage = True

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT_S)
        fds: list[int] = []
        try:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 2)
            reply = self._answer(receive(conn, data), fds)
        except ProtocolError as exc:
            reply = {"declined": f"the build server refused the request: {exc}"}
        except OSError as exc:
            self.log(f"request failed: {exc}")
            return
        except Exception:  # a bug: the caller builds itself, the server keeps serving
            self.log(f"request failed:\n{traceback.format_exc()}")
            reply = {"declined": "the build server failed on the request (see its log)"}
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        with contextlib.suppress(OSError):
            conn.settimeout(REQUEST_TIMEOUT_S)
            conn.sendall(encode(reply))
        self.warm.settle()  # once the caller has its answer

    def _answer(self, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        control = message.get("control")
        if control == "status":
            return self.status()
        if control == "stop":
            self._stopping = True
            return {"stopped": os.getpid()}
        if message.get("protocol") != PROTOCOL or message.get("identity") != code_identity():
            return {"declined": "the build server runs another compiler installation"}
        changed = self._code.changed()
        if changed is not None:
            self._stopping = True
            return {"declined": f"the build server stopped: {changed} changed since it started"}
        request = Request.parse(message)
        if len(fds) != 2:
            raise ProtocolError("a build request passes standard output and error")
        if served_root(request.argv, request.cwd) != str(self.root):
            return {"declined": "the build server serves another project"}
        began = time.perf_counter()
        code = self._run(request, fds)
        self.builds += 1
        elapsed = time.perf_counter() - began
        self.log(f"{' '.join(request.argv)}: exit {code} in {elapsed:.3f} s")
        return {"exit": code}

    def _run(self, request: Request, fds: list[int]) -> int:
        try:
            with _as_caller(request, fds):
                try:
                    self.runner(request.argv, request.prog, self.warm)
                except SystemExit as exc:
                    return _exit_code(exc.code)
                except Exception:  # what the caller's own process would have shown
                    with contextlib.suppress(OSError):
                        traceback.print_exc()
                    return 1
                finally:
                    self.warm.next_build()
        except OSError as exc:  # e.g. the caller's working directory is gone
            raise ProtocolError(f"cannot run as the caller: {exc}") from None
        return 0

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "root": str(self.root),
            "started": self.started,
            "builds": self.builds,
            "kept_files": len(self.warm.files),
            "idle_timeout_s": self.idle_timeout_s,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with contextlib.suppress(OSError, ValueError):
            print(f"{stamp} oneiricc server: {line}", file=self._log, flush=True)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    with contextlib.suppress(OSError):
        print(code, file=sys.stderr)
    return 1


@contextlib.contextmanager
def _as_caller(request: Request, fds: list[int]) -> Iterator[None]:
    """Run as the caller's process would: its standard streams, directory, umask,
    environment and import path; everything is put back after."""
    out_encoding, out_errors, err_encoding = request.encoding
    with contextlib.ExitStack() as restore:
        # Buffered as CPython buffers them: by line on a terminal, and stderr always.
        out = restore.enter_context(
            _text_stream(fds[0], out_encoding, out_errors, line_buffered=os.isatty(fds[0]))
        )
        err = restore.enter_context(
            _text_stream(fds[1], err_encoding, "backslashreplace", line_buffered=True)
        )
        restore.callback(os.chdir, os.getcwd())
        os.chdir(request.cwd)
        restore.callback(os.umask, os.umask(request.umask))
        restore.callback(_replace_environ, dict(os.environ))
        _replace_environ(request.env)
        restore.callback(sys.path.__setitem__, slice(None), list(sys.path))
        sys.path[:] = request.path
        importlib.invalidate_caches()
        restore.enter_context(contextlib.redirect_stdout(out))
        restore.enter_context(contextlib.redirect_stderr(err))
        yield


@contextlib.contextmanager
def _text_stream(fd: int, encoding: str, errors: str, *, line_buffered: bool) -> Iterator[TextIO]:
    """A text stream on the caller's descriptor, left open (`_serve_one` closes it)."""
    stream = open(  # noqa: SIM115 - closed below
        fd, "w", buffering=1 if line_buffered else -1, encoding=encoding, errors=errors,
        closefd=False,
    )  # fmt: skip
    try:
        yield stream
    finally:
        with contextlib.suppress(OSError, ValueError):  # the caller may be gone
            stream.close()


def _replace_environ(values: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(values)


def _listen(address: str) -> tuple[socket.socket, int]:
    """A listening socket at `address` (only this user may reach it) and its inode."""
    directory = os.path.dirname(address)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    if not private_directory(directory):
        raise ServerError(
            f"{directory} must be a directory of this user that nobody else may enter"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(address)
        except OSError:
            existing = connect(address)
            if existing is not None:
                existing.close()
                raise ServerError(f"a build server is already listening on {address}") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)  # left behind by a server that was killed
            sock.bind(address)
        os.chmod(address, 0o600)
        sock.listen(16)
        return sock, os.stat(address).st_ino
    except BaseException:
        sock.close()
        raise
