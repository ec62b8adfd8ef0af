"""The one dead-letter policy: every agent and reader hands a record it cannot process here.

A record that fails goes to `lapverse-dlq` with its original key, bytes and headers, where it
came from, a stable `lapverse-dlq-reason` and its cause; it is counted by agent and reason and
logged. Nothing is skipped silently, and sending a dead letter never raises into the loop that
consumed the record, so one bad record cannot stop a reader that others depend on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lapverse_streams.events.codec import Headers, PoisonMessage

log = logging.getLogger(__name__)

REASON_HEADER = "lapverse-dlq-reason"
# Every reason a dead letter can carry: metric labels take only these values.
REASONS = frozenset(
    {
        "empty",  # no value
        "not_json",
        "wrong_schema",  # JSON, but not the event the topic carries
        "unknown_type",  # a CloudEvent type that does not belong on the topic
        "too_deep",  # nesting beyond the limit
        "too_large",  # a string, array or object beyond its limit
        "key_mismatch",  # record key, subject and data.tenant disagree
        "unknown_task",  # a result for no admitted task
        "unknown_competition",  # a joined round for no admitted round
        "unknown_tenant",  # a champion command for a tenant that is not configured
        "handler_failed",  # a task failed after its retries
        "stage_failed",  # a Kaggle stage failed after its retries
        "processing_error",  # anything else raised while handling the record
    }
)
MAX_DETAIL_CHARS = 1000


@dataclass(frozen=True)
class Consumed:
    """A record as it was consumed: where it came from and its original bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Letter:
    """A dead letter ready to send to `lapverse-dlq` (keyed by the original key)."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str


def reason_of(exc: BaseException) -> tuple[str, str]:
    """A stable reason label and the cause, for any failure while handling a record."""
    if isinstance(exc, PoisonMessage):
        reason = exc.reason if exc.reason in REASONS else "processing_error"
        return reason, exc.detail
    if isinstance(exc, RecursionError):
        return "too_deep", f"RecursionError: {exc}"
    return "processing_error", f"{type(exc).__name__}: {exc}"


def letter(agent: str, record: Consumed, reason: str, detail: str) -> Letter:
    """The original bytes and headers, with where they came from and why they failed."""
    reason = reason if reason in REASONS else "processing_error"
    extra: Headers = [
        ("lapverse-dlq-agent", agent.encode()),
        ("lapverse-dlq-topic", record.topic.encode()),
        ("lapverse-dlq-partition", str(record.partition).encode()),
        ("lapverse-dlq-offset", str(record.offset).encode()),
        (REASON_HEADER, reason.encode()),
        ("lapverse-dlq-error", detail[:MAX_DETAIL_CHARS].encode("utf-8", "replace")),
    ]
    return Letter(record.key, record.value, [*record.headers, *extra], reason)


Send = Callable[[bytes | None, bytes | None, Headers], Awaitable[None]]
Count = Callable[[str, str], None]  # (agent, reason)


class DeadLetters:
    """Sends, counts and logs dead letters; used by every agent and reader of a process."""

    def __init__(self, send: Send, count: Count) -> None:
        self._send = send
        self._count = count

    async def failed(self, agent: str, record: Consumed, exc: BaseException) -> None:
        """Dead-letter a record whose handling raised `exc`."""
        reason, detail = reason_of(exc)
        await self.put(agent, record, reason, detail)

    async def put(self, agent: str, record: Consumed, reason: str, detail: str) -> None:
        """Dead-letter a record for a known reason; never raises."""
        await self.send(letter(agent, record, reason, detail), agent, record)

    async def send(self, dead: Letter, agent: str, record: Consumed) -> None:
        """Send a dead letter built elsewhere (the governor builds its own); never raises."""
        self._count(agent, dead.reason)
        log.error(
            "record dead-lettered",
            extra={
                "agent": agent,
                "reason": dead.reason,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )
        try:
            await self._send(dead.key, dead.value, dead.headers)
        except Exception:  # the broker may be down; the loop must go on all the same
            log.exception(
                "dead letter could not be sent",
                extra={"agent": agent, "topic": record.topic, "offset": record.offset},
            )
