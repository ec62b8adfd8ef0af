"""What every agent does with a consumed record before its own work: where it came from, routing."""

from __future__ import annotations

from typing import Any

from lapverse_streams.events.codec import PoisonMessage
from lapverse_streams.events.deadletter import Consumed
from lapverse_streams.events.models import CloudEvent, FinOpsTags


def consumed(message: Any) -> Consumed:
    """A Faust message as the dead-letter policy needs it: its origin and original bytes."""
    return Consumed(
        str(message.topic),
        int(message.partition),
        int(message.offset),
        message.key,
        message.value,
        list(message.headers or ()),
    )


def check_routing(
    record: Consumed, event: CloudEvent, key: str, tenant: str, tags: FinOpsTags | None = None
) -> None:
    """The record key must be `key`; the CloudEvent subject and the tags must name `tenant`.

    A record whose key, subject and data disagree would land where another tenant's state
    lives (or take another tenant's tags); it is dead-lettered as `key_mismatch` instead.
    """
    if record.key != key.encode() or event.subject != tenant:
        raise PoisonMessage(
            "key_mismatch", "the record key, the CloudEvent subject and data.tenant must agree"
        )
    if tags is not None and tags.tenant_id != tenant:
        raise PoisonMessage("key_mismatch", "tags.tenantId is not data.tenant")
