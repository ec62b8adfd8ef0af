"""Task handler plug-ins: one entry point per task type (group lapverse.task_handlers)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from lapverse_streams.clients.news_ai import NewsAI
from lapverse_streams.events.models import TaskRequest

ENTRY_POINT_GROUP = "lapverse.task_handlers"


@dataclass(frozen=True)
class Outcome:
    """A handler's result; cost_micros None means 'charge the estimate'."""

    result: dict[str, Any]
    cost_micros: int | None = None


@dataclass(frozen=True)
class Services:
    """The external services a handler may call; each answers with a labelled fallback."""

    news_ai: NewsAI


class TaskHandler(Protocol):
    """Runs one task type."""

    async def run(self, request: TaskRequest) -> Outcome:
        """Execute the task or raise to have it retried."""
        ...


def load_handlers(services: Services) -> dict[str, TaskHandler]:
    """Instantiate every registered handler with the services, keyed by task type."""
    handlers: dict[str, TaskHandler] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        handlers[entry.name] = entry.load()(services)
    return handlers
