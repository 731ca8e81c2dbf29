"""Email over SMTP (the standard library's smtplib): pooled connections, TLS, authentication.

Extra: none.  `tls` is "starttls" (upgrade on the submission port, the default),
"implicit" (TLS from the first byte, port 465) or "none" (loopback and tests only); the
server's certificate is verified against the system store or `ca_file`.  `password` should
come from `secret()`; it is never part of a message or an error.  At most
`max_connections` sessions are open; an idle one is checked with NOOP before reuse, and a
session that failed is dropped.  An unreachable server raises
`oneiric.adapters.pool.Unavailable`; a refused login, `PermissionError`.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal

from oneiric.adapters.pool import Pool, Unavailable

TLS = Literal["starttls", "implicit", "none"]


class SmtpEmail:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 587,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        tls: TLS = "starttls",
        ca_file: str | None = None,
        timeout: timedelta = timedelta(seconds=10),
        max_connections: int = 4,
    ) -> None:
        if tls not in ("starttls", "implicit", "none"):
            raise ValueError(f'tls must be "starttls", "implicit" or "none", not {tls!r}')
        self.name = f"SMTP at {host}:{port}"
        self.sender = sender
        self._host, self._port, self._tls = host, port, tls
        self._username, self._password = username, password
        self._context = ssl.create_default_context(cafile=ca_file)
        self._timeout = timeout.total_seconds()
        self._pool: Pool[smtplib.SMTP] = Pool(
            self._connect,
            close=_quit,
            alive=_alive,
            size=max_connections,
            timeout=self._timeout,
            name=self.name,
        )

    def _connect(self) -> smtplib.SMTP:
        session: smtplib.SMTP
        if self._tls == "implicit":
            session = smtplib.SMTP_SSL(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        else:
            session = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        try:
            if self._tls == "starttls":
                session.starttls(context=self._context)
            if self._username is not None:
                session.login(self._username, self._password or "")
        except BaseException:
            _quit(session)
            raise
        return session

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        try:
            with self._pool.connection() as session:
                yield session
        except smtplib.SMTPAuthenticationError as exc:
            raise PermissionError(
                f"{self.name}: login refused for {self._username!r} ({exc.smtp_code})"
            ) from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
            if isinstance(exc, Unavailable):
                raise
            raise Unavailable(f"{self.name}: {type(exc).__name__}: {exc}") from None

    def send(
        self,
        to: Sequence[str],
        subject: str,
        body: str,
        *,
        html: str | None = None,
        cc: Sequence[str] = (),
        reply_to: str | None = None,
    ) -> str:
        """Send one message; its Message-ID.  Refused recipients raise `SMTPRecipientsRefused`."""
        if not to:
            raise ValueError("an email needs at least one recipient")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        if reply_to:
            message["Reply-To"] = reply_to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
        with self._session() as session:
            session.send_message(message, to_addrs=[*to, *cc])
        return str(message["Message-ID"])

    def health(self) -> bool:
        """A real session: connect (TLS, login) or NOOP on a pooled one."""
        try:
            with self._session() as session:
                return session.noop()[0] == 250
        except (Unavailable, PermissionError, smtplib.SMTPException):
            return False

    def close(self) -> None:
        self._pool.close()


def _alive(session: smtplib.SMTP) -> bool:
    try:
        return session.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _quit(session: smtplib.SMTP) -> None:
    try:
        session.quit()
    except (smtplib.SMTPException, OSError):
        session.close()
