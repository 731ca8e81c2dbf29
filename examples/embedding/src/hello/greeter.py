"""A service that remembers whom it greeted, in the cache the plan chose."""

from __future__ import annotations

from typing import Any


class Greeter:
    def __init__(self, deps: Any) -> None:
        self.cache = deps["adapter:cache"]

    def greet(self, name: str) -> str:
        seen = self.cache.get(name) is not None
        self.cache.set(name, b"1")
        return f"welcome back, {name}" if seen else f"hello, {name}"
