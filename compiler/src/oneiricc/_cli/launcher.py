"""The `oneiricc` entry point: hand `build` and `check` to a running build server.

`oneiricc server start` keeps a compiler warm for one project
(`_incremental.server`).  When one runs for the project a `build` or `check`
is asked in, this process sends it the request (arguments, working directory,
environment, import path, umask) together with its own standard output and
error, the descriptors themselves over the Unix socket (`_incremental.wire`),
so the server's build writes exactly where this process would have; then it
exits with the server's exit code.  Any other command, or any trouble reaching
the server, runs in this process instead: a server can make a build faster,
never different.  This module is what a forwarded build imports, so it stays
small.
"""

from __future__ import annotations

import _socket  # socket.py's own imports (enum, selectors) would cost each forward ~4 ms
import array
import gc
import os
import sys

from oneiricc._incremental.wire import (
    PROTOCOL,
    SERVED_COMMANDS,
    ProtocolError,
    code_identity,
    command_line,
    connect,
    encode,
    receive,
    served_root,
    server_address,
)

NO_SERVER_ENV = "ONEIRICC_NO_SERVER"  # set (to anything) to never use a build server


def main() -> None:
    argv = sys.argv[1:]
    command, _ = command_line(argv)
    if command in SERVED_COMMANDS:
        # A one-shot build frees nothing before it exits: the cyclic collector would
        # only scan its imports and syntax trees again and again (~4 ms at start-up).
        gc.disable()
        if NO_SERVER_ENV not in os.environ:
            code = forward(argv)
            if code is not None:
                sys.exit(code)
    from oneiricc._cli.main import main as cli_main

    cli_main()


def program_name() -> str:
    """How this process was started, as `click` names it in usage lines."""
    package = getattr(sys.modules["__main__"], "__package__", None)
    return f"python -m {package}" if package else os.path.basename(sys.argv[0])


def forward(argv: list[str]) -> int | None:
    """Run `argv` on the project's build server: its exit code, or None to run it here."""
    cwd = os.getcwd()
    root = served_root(argv, cwd) if hasattr(_socket, "AF_UNIX") else None
    if root is None:
        return None
    try:
        streams = [sys.stdout.fileno(), sys.stderr.fileno()]
        umask = os.umask(0o022)
        os.umask(umask)
        request = encode(
            {
                "protocol": PROTOCOL,
                "identity": code_identity(),
                "argv": argv,
                "prog": program_name(),
                "cwd": cwd,
                "env": dict(os.environ),
                "path": sys.path,
                "umask": umask,
                "encoding": [sys.stdout.encoding, sys.stdout.errors, sys.stderr.encoding],
            }
        )
    except (AttributeError, OSError, ValueError, ProtocolError):
        return None  # no real standard streams, or a request too large to send
    sock = connect(server_address(root))
    if sock is None:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        descriptors = array.array("i", streams)
        sent = sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, descriptors)])
        if sent < len(request):
            sock.sendall(request[sent:])
        reply = receive(sock)
    except (OSError, ProtocolError):
        reply = {"declined": "the build server stopped without answering"}
    except KeyboardInterrupt:  # as click says it in-process (the server's build goes on)
        print("Aborted!", file=sys.stderr, flush=True)
        return 1
    finally:
        sock.close()
    code = reply.get("exit")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    notice = reply.get("declined")
    if isinstance(notice, str) and notice:
        print(f"oneiricc: {notice}; running in this process", file=sys.stderr, flush=True)
    return None
