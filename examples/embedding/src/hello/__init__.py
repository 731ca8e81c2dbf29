"""The example project's own code: one service using the cache it requires."""
