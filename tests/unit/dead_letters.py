"""An in-memory dead-letter policy for agent unit tests: what was sent and counted."""

from __future__ import annotations

from dataclasses import dataclass, field

from lapverse_streams.events.codec import Headers, header
from lapverse_streams.events.deadletter import Consumed, DeadLetters


@dataclass
class Letters:
    """Dead letters sent through a DeadLetters, as (key, value, headers)."""

    sent: list[tuple[bytes | None, bytes | None, Headers]] = field(default_factory=list)
    counted: list[tuple[str, str]] = field(default_factory=list)

    def policy(self) -> DeadLetters:
        """A DeadLetters that records here."""

        async def send(key: bytes | None, value: bytes | None, headers: Headers) -> None:
            self.sent.append((key, value, headers))

        return DeadLetters(send, lambda agent, reason: self.counted.append((agent, reason)))

    def reasons(self) -> list[str]:
        """The reason of each letter, in order."""
        return [header(h, "lapverse-dlq-reason") or "" for _, _, h in self.sent]


def record(value: bytes | None, key: str | None, topic: str = "t", offset: int = 0) -> Consumed:
    """A consumed record on partition 0."""
    return Consumed(topic, 0, offset, None if key is None else key.encode(), value, [])
