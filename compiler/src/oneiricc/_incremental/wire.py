"""The build server's wire format, shared by the caller (`_cli.launcher`) and the
server (`_incremental.server`): which requests a server may run and for which
project (`served_root`), where its socket lives, who may connect, and how a
message is framed.

A message is a length-prefixed dict in `marshal`'s format.  The socket lives
in a directory only this user can enter (`private_directory`) and each side
checks the other's user id (`SO_PEERCRED`), because a request carries the
caller's environment.  A forwarded build imports this module, so it stays
small: no `socket`, no `typing`, no json.
"""

from __future__ import annotations

import _socket  # socket.py's own imports (enum, selectors) would cost each forward ~4 ms
import hashlib
import marshal
import os
import stat
import struct
import sys

from oneiricc._build.projectroot import MixedProjects, root_of

TYPE_CHECKING = False  # `typing` costs a forwarded build ~5 ms
if TYPE_CHECKING:
    from typing import Any

PROTOCOL = 1
SERVED_COMMANDS = frozenset({"build", "check"})
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_LENGTH = struct.Struct("!I")


class ProtocolError(Exception):
    """A message that is not one of this protocol's."""


def command_line(argv: list[str]) -> tuple[str | None, str | None]:
    """The command (the first argument after the global options) and `--root`, if given.

    Mirrors the command line's own reading: global options (`--root`,
    `--format`) come before the command.  The command is None when there is
    none or an option lacks its value.
    """
    root: str | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--root":
            root = next(args, None)
            if root is None:
                return None, None
        elif arg.startswith("--root="):
            root = arg.partition("=")[2]
        elif arg == "--format":
            if next(args, None) is None:
                return None, None
        elif not arg.startswith("--format="):
            return arg, root
    return None, root


def served_root(argv: list[str], cwd: str) -> str | None:
    """The project root of a `build` or `check` request; None for any other command.

    The root is `--root`, else the one found from the command's paths (see
    `projectroot.root_of`); None also when the paths span several projects.
    """
    command, root = command_line(argv)
    if command not in SERVED_COMMANDS:
        return None
    if root is not None:
        return os.path.realpath(os.path.join(cwd, root))
    try:
        return root_of(path_arguments(argv[argv.index(command) + 1 :]), cwd)
    except MixedProjects:
        return None


# The options of `build` and `check` that take a value (their value is no path argument).
_VALUE_OPTIONS = frozenset({"-t", "--target", "-o", "--out", "--module-path", "--format"})


def path_arguments(args: list[str]) -> list[str]:
    """The positional arguments of a command's arguments `args` (its paths)."""
    paths: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--":
            continue
        elif arg.startswith("-"):
            skip = arg in _VALUE_OPTIONS
        else:
            paths.append(arg)
    return paths


def server_address(root: str) -> str:
    """The socket of the build server for `root` (short: sockets have a path limit)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:32]
    return os.path.join(base, f"oneiricc-{os.getuid()}", f"{digest}.sock")


def private_directory(path: str) -> bool:
    """`path` is a real directory, this user's, that nobody else may enter."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and stat.S_IMODE(info.st_mode) & 0o077 == 0
    )


def peer_uid(sock: _socket.socket) -> int | None:
    """The user id of the process at the other end (Linux), or None when unknown."""
    if not hasattr(_socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def code_identity() -> str:
    """Which compiler this is: the interpreter and where the package lives."""
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    return f"{sys.executable}\0{package}\0{PROTOCOL}"


def encode(message: dict[str, Any]) -> bytes:
    """A length-prefixed message.

    In `marshal`'s format: the interpreter's own for its own values, built in
    (json would cost a forwarded build ~4 ms of imports), and it carries any
    string the environment holds, undecodable bytes included.  Its loader is
    not meant for hostile input; the peer is this very user (`SO_PEERCRED`,
    a private directory), the size is capped, and every field is checked.
    """
    try:
        payload = marshal.dumps(message)
    except ValueError as exc:  # (a value marshal cannot write)
        raise ProtocolError(str(exc)) from None
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return _LENGTH.pack(len(payload)) + payload


def receive(sock: _socket.socket, received: bytes = b"") -> dict[str, Any]:
    """One length-prefixed message (a dict); `received`: bytes already read from `sock`."""
    data = bytearray(received)
    _fill(sock, data, _LENGTH.size)
    (length,) = _LENGTH.unpack_from(data)
    if length > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {length} bytes exceeds {MAX_MESSAGE_BYTES}")
    end = _LENGTH.size + length
    _fill(sock, data, end)
    try:
        message = marshal.loads(bytes(data[_LENGTH.size : end]))
    except (EOFError, TypeError, ValueError) as exc:
        raise ProtocolError(f"not a message: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message is a dict")
    return message


def _fill(sock: _socket.socket, data: bytearray, size: int) -> None:
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProtocolError("the connection closed in the middle of a message")
        data += chunk


def connect(address: str) -> _socket.socket | None:
    """A connection to the build server at `address`, or None when none can be trusted."""
    if not private_directory(os.path.dirname(address)):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(address)
        if peer_uid(sock) not in (None, os.getuid()):
            raise ConnectionRefusedError("the server runs as another user")
    except OSError:
        sock.close()
        return None
    return sock


def ask(root: str, control: str, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """The answer of the build server for `root` to a control message (`status`,
    `stop`), or None when none answers."""
    sock = connect(server_address(root))
    if sock is None:
        return None
    try:
        sock.settimeout(timeout_s)
        sock.sendall(encode({"control": control}))
        return receive(sock)
    except (OSError, ProtocolError):
        return None
    finally:
        sock.close()
