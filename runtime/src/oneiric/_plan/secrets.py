"""Secret providers, chosen by the reference's scheme, with a TTL cache per provider.

    secret("db/password")          file: $ONEIRIC_CONFIG/secrets/db/password (no scheme)
    secret("file:db/password")     the same, explicitly
    secret("env:DB_PASSWORD")      the environment variable
    secret("aws-sm:shop/db")       AWS Secrets Manager; "aws-sm:shop/db#password" picks
                                   one field of a JSON secret
    secret("aws-ssm:/shop/db")     AWS SSM Parameter Store (SecureString decrypted)
    secret("cmd:db")               the configured helper's stdout (e.g. `pass show db`)

The plan holds only the reference (`{"$secret": "aws-sm:shop/db"}`); values are read
at activation.  Provider settings live in `$ONEIRIC_CONFIG/secrets.toml`:

    [cmd]
    command = ["pass", "show", "{name}"]   # argv; "{name}" is replaced, no shell
    timeout_s = 5
    [aws]
    region = "eu-west-1"                   # else AWS_REGION / AWS_DEFAULT_REGION
    endpoint_url = "http://127.0.0.1:5000" # else AWS_ENDPOINT_URL (emulators, VPC endpoints)
    [ttl]                                  # seconds a value is reused (per provider)
    aws-sm = 300
    cmd = 60

Defaults: `env` and `file` are read every time (ttl 0), the others are cached 300 s.
`invalidate()` (used by `oneiric secrets rotate` and the periodic refresh) forgets cached
values so the next read goes to the provider.  A provider's error names the reference
and the provider, never a value.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

CONFIG_ENV = "ONEIRIC_CONFIG"
SETTINGS_FILE = "secrets.toml"
SCHEMES = ("file", "env", "aws-sm", "aws-ssm", "cmd")
DEFAULT_TTL_S = {"file": 0.0, "env": 0.0, "aws-sm": 300.0, "aws-ssm": 300.0, "cmd": 300.0}
DEFAULT_COMMAND_TIMEOUT_S = 10.0


class SecretError(Exception):
    """A secret cannot be read; the message names the reference, never a value."""


def config_dir() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or "config")


def split(reference: str) -> tuple[str, str]:
    """(scheme, name); a reference without a known scheme is a file name (today's default)."""
    scheme, sep, name = reference.partition(":")
    if sep and scheme in SCHEMES:
        if not name:
            raise SecretError(f"secret {reference!r}: nothing after {scheme}:")
        return scheme, name
    return "file", reference


class Secrets:
    """The providers and their caches; one per process (`SECRETS`)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, float]] = {}  # reference -> (value, read at)
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        path = config_dir() / SETTINGS_FILE
        try:
            with path.open("rb") as handle:
                return tomllib.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SecretError(f"{path}: {exc}") from None

    def read(self, reference: str) -> str:
        scheme, name = split(reference)
        settings = self.settings()
        ttl = float(settings.get("ttl", {}).get(scheme, DEFAULT_TTL_S[scheme]))
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(reference)
        if cached is not None and now - cached[1] < ttl:
            return cached[0]
        value = READERS[scheme](self, name, reference, settings)
        if ttl > 0:
            with self._lock:
                self._cache[reference] = (value, now)
        return value

    def invalidate(self, references: Iterable[str] = ()) -> None:
        """Forget cached values: of `references`, or all of them."""
        wanted = list(references)
        with self._lock:
            if not wanted:
                self._cache.clear()
            for reference in wanted:
                self._cache.pop(reference, None)

    # -- providers ---------------------------------------------------------------------
    def _file(self, name: str, reference: str, settings: dict[str, Any]) -> str:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise SecretError(f"secret path {reference!r} must be relative, without '..'")
        path = config_dir() / "secrets" / relative
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(
                f"secret {reference!r} not readable at {path} ({exc.strerror}); "
                f"set {CONFIG_ENV} to the directory holding secrets/"
            ) from None

    def _env(self, name: str, reference: str, settings: dict[str, Any]) -> str:
        value = os.environ.get(name)
        if value is None:
            raise SecretError(f"secret {reference!r}: environment variable {name} is not set")
        return value

    def _aws(self, service: str, settings: dict[str, Any]) -> Any:
        aws = settings.get("aws", {})
        key = f"{service}|{aws.get('region')}|{aws.get('endpoint_url')}"
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise SecretError(
                    "aws-sm:/aws-ssm: secrets need boto3: pip install 'oneiric-runtime[aws]'"
                ) from None
            session: Any = boto3.session.Session()
            client = session.client(
                service,
                region_name=aws.get("region") or None,
                endpoint_url=aws.get("endpoint_url") or None,
                config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3}),
            )
            with self._lock:
                self._clients[key] = client
        return client

    def _aws_sm(self, name: str, reference: str, settings: dict[str, Any]) -> str:
        secret_id, _, field = name.partition("#")
        try:
            answer = self._aws("secretsmanager", settings).get_secret_value(SecretId=secret_id)
        except Exception as exc:
            raise SecretError(
                f"secret {reference!r}: AWS Secrets Manager: {_aws_error(exc)}"
            ) from None
        value = answer.get("SecretString")
        if value is None:
            raise SecretError(f"secret {reference!r}: a binary secret; store it as a string")
        if not field:
            return str(value)
        try:
            found = json.loads(value)[field]
        except (ValueError, KeyError, TypeError):
            raise SecretError(f"secret {reference!r}: no JSON field {field!r}") from None
        return str(found)

    def _aws_ssm(self, name: str, reference: str, settings: dict[str, Any]) -> str:
        try:
            answer = self._aws("ssm", settings).get_parameter(Name=name, WithDecryption=True)
        except Exception as exc:
            raise SecretError(f"secret {reference!r}: AWS SSM: {_aws_error(exc)}") from None
        return str(answer["Parameter"]["Value"])

    def _cmd(self, name: str, reference: str, settings: dict[str, Any]) -> str:
        cmd = settings.get("cmd", {})
        command = cmd.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(part, str) for part in command)
        ):
            raise SecretError(
                f"secret {reference!r}: no helper configured; set [cmd] command = "
                f'["prog", "arg", "{{name}}"] in {config_dir() / SETTINGS_FILE}'
            )
        argv = [part.replace("{name}", name) for part in command]
        timeout = float(cmd.get("timeout_s", DEFAULT_COMMAND_TIMEOUT_S))
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise SecretError(
                f"secret {reference!r}: {argv[0]} gave no answer within {timeout:g}s"
            ) from None
        except OSError as exc:
            raise SecretError(f"secret {reference!r}: {argv[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            # stderr is not shown: a helper may echo what it was asked for or more.
            raise SecretError(f"secret {reference!r}: {argv[0]} exited with {done.returncode}")
        return done.stdout.decode("utf-8", errors="replace").strip()


def _aws_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".strip()
    return type(exc).__name__


READERS: dict[str, Callable[[Secrets, str, str, dict[str, Any]], str]] = {
    "file": Secrets._file,
    "env": Secrets._env,
    "aws-sm": Secrets._aws_sm,
    "aws-ssm": Secrets._aws_ssm,
    "cmd": Secrets._cmd,
}

SECRETS = Secrets()
