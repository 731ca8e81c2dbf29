"""A component holding a secret (for the secret-rotation tests); it never shows the value."""

from __future__ import annotations

import hashlib


class Client:
    made: list[Client] = []

    def __init__(self, *, password: str, user: str = "app") -> None:
        self.password = password
        self.user = user
        self.closed = False
        Client.made.append(self)

    def fingerprint(self) -> str:
        """Which value this instance holds, as a short digest (tests compare these)."""
        if self.closed:
            raise RuntimeError("closed")
        return hashlib.sha256(self.password.encode()).hexdigest()[:12]

    def health(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True
