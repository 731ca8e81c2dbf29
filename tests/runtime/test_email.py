"""The SMTP email adapter against a real SMTP server (aiosmtpd) on 127.0.0.1: STARTTLS with a
certificate made for the test, AUTH with a password that comes from secret()."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from oneiric._lifecycle.runtime import Runtime
from oneiric.adapters.pool import Unavailable
from oneiric.adapters.smtp import SmtpEmail
from planbuild import component, plan
from servers import free_port

pytestmark = pytest.mark.slow

USER, PASSWORD = "shop", "s3cret-smtp-password"


def certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content or b"")))
        return "250 OK"


def authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    """aiosmtpd on 127.0.0.1:port, STARTTLS required before AUTH; stoppable, restartable."""

    def __init__(self, directory: Path, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self.cert, key = certificate(directory)
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(self.cert, key)
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=self.tls,
            require_starttls=True,
            authenticator=authenticate,
            auth_require_tls=True,
        )
        self.controller.start()

    def stop(self) -> None:
        assert self.controller is not None
        self.controller.stop()
        self.controller = None


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path, free_port())
    server.start()
    yield server
    if server.controller is not None:
        server.stop()


def mailer(server: SmtpServer, **overrides: Any) -> SmtpEmail:
    settings: dict[str, Any] = {
        "port": server.port,
        "sender": "shop@example.org",
        "username": USER,
        "password": PASSWORD,
        "ca_file": str(server.cert),
        "timeout": timedelta(seconds=2),
    }
    settings.update(overrides)
    return SmtpEmail(**settings)


def test_sends_over_starttls_with_auth_and_reuses_the_session(smtp: SmtpServer) -> None:
    email = mailer(smtp)
    assert email.health()
    first = email.send(["a@example.org"], "Order 1", "Thanks!", html="<b>Thanks!</b>")
    email.send(["b@example.org"], "Order 2", "Thanks again", cc=["c@example.org"])
    assert first.startswith("<")
    assert first.endswith("@example.org>")
    [(to1, raw1), (to2, _)] = smtp.inbox.messages
    assert to1 == ["a@example.org"]
    assert to2 == ["b@example.org", "c@example.org"]
    parsed = message_from_bytes(raw1)
    assert parsed["Subject"] == "Order 1"
    assert parsed.is_multipart()
    assert email._pool.idle == 1  # one session, reused
    email.close()


def test_wrong_password_and_untrusted_certificate_are_clear_errors(smtp: SmtpServer) -> None:
    wrong = mailer(smtp, password="not-it")
    with pytest.raises(PermissionError, match="login refused for 'shop'") as caught:
        wrong.send(["a@example.org"], "x", "y")
    assert "not-it" not in str(caught.value)
    assert wrong.health() is False
    untrusted = mailer(smtp, ca_file=None)
    with pytest.raises(Unavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
        untrusted.send(["a@example.org"], "x", "y")
    with pytest.raises(ValueError, match="at least one recipient"):
        mailer(smtp).send([], "x", "y")
    assert smtp.inbox.messages == []


def test_server_going_away_and_coming_back(smtp: SmtpServer) -> None:
    email = mailer(smtp)
    email.send(["a@example.org"], "before", "x")
    smtp.stop()
    try:
        assert email.health() is False
        started = time.monotonic()
        with pytest.raises(Unavailable, match=r"SMTP at 127\.0\.0\.1:\d+"):
            email.send(["a@example.org"], "lost", "x")
        assert time.monotonic() - started < 2
    finally:
        smtp.start()
    assert email.health()
    email.send(["a@example.org"], "after", "x")
    assert [message_from_bytes(m)["Subject"] for _, m in smtp.inbox.messages] == [
        "before",
        "after",
    ]
    email.close()


@pytest.mark.anyio
async def test_live_swap_between_two_smtp_servers_under_load(tmp_path: Path, callers: Any) -> None:
    servers = [
        SmtpServer(tmp_path / n, free_port()) for n in ("a", "b") if (tmp_path / n).mkdir() is None
    ]
    for server in servers:
        server.start()
    first, second = (
        component(
            "adapter:email",
            name,
            impl="oneiric.adapters.smtp:SmtpEmail",
            config={
                "port": server.port,
                "sender": "shop@example.org",
                "username": USER,
                "password": PASSWORD,
                "ca_file": str(server.cert),
            },
        )
        for name, server in zip(("a", "b"), servers, strict=True)
    )
    for c in (first, second):
        del c["config"]["tag"]
    runtime = Runtime()
    await runtime.apply(plan(first))
    email = runtime.handle("adapter:email")
    with callers(4, lambda: email.send(["x@example.org"], "load", "x")) as calls:
        await anyio.sleep(0.5)
        await runtime.apply(plan(second))
        await anyio.sleep(0.5)
    assert calls.failures == []
    assert servers[0].inbox.messages
    assert servers[1].inbox.messages
    assert len(servers[0].inbox.messages) + len(servers[1].inbox.messages) == calls.total
    await runtime.stop()
    for server in servers:
        server.stop()
