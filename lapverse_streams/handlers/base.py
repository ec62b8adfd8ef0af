"""Task handler plug-ins: one entry point per task type (group lapverse.task_handlers)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from lapverse_streams.clients.news_ai import NewsAI
from lapverse_streams.events.models import TaskRequest

ENTRY_POINT_GROUP = "lapverse.task_handlers"
# Failure drills: loaded only when the operator turns drills on (LAPVERSE_DRILLS_ENABLED).
DRILLS: frozenset[str] = frozenset({"CHAOS"})


@dataclass(frozen=True)
class Outcome:
    """A handler's result; cost_micros None means 'charge the estimate'."""

    result: dict[str, Any]
    cost_micros: int | None = None


@dataclass(frozen=True)
class DrillLimits:
    """Bounds on what a drill may ask for, so a drill cannot hold a slot for long."""

    max_sleep_ms: int = 5_000


@dataclass(frozen=True)
class Services:
    """What a handler is built with: the external services (each with a labelled fallback)."""

    news_ai: NewsAI
    drill_limits: DrillLimits = DrillLimits()


class TaskHandler(Protocol):
    """Runs one task type."""

    async def run(self, request: TaskRequest) -> Outcome:
        """Execute the task or raise to have it retried."""
        ...


def load_handlers(
    services: Services, *, drills_enabled: bool = False, drills: frozenset[str] = DRILLS
) -> dict[str, TaskHandler]:
    """Instantiate every registered handler, keyed by task type; drills only when enabled."""
    handlers: dict[str, TaskHandler] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in drills and not drills_enabled:
            continue
        handlers[entry.name] = entry.load()(services)
    return handlers
