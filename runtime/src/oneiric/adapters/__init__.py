"""Built-in adapters, usable from stacks as `impl "oneiric.adapters.<module>:<Class>"`.

Caches share one interface: `get(key) -> bytes | None`, `set(key, value: bytes,
ttl=None)`, `delete(key) -> bool`, `health()`, `close()`.  Redis and Memcached
need the `redis` / `memcached` extras of oneiric-runtime; each module imports
its client only when the component is loaded.
"""
