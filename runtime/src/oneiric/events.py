"""What an event handler sees (public: stacks name `oneiric.events:start_workflow`)."""

from __future__ import annotations

from oneiric._flows.events import Event, EventError, start_workflow

__all__ = ["Event", "EventError", "start_workflow"]
