"""The CloudEvents codec's one-step encoder matches the two-step one."""

from __future__ import annotations

from lapverse_streams.events.codec import encode, encode_event, envelope
from lapverse_streams.events.models import TaskRequested


def test_encode_event_is_encode_of_envelope_byte_for_byte() -> None:
    request = TaskRequested(type="NOOP", tenant="acme", cost_center="ops")
    for subject in ("acme", "flag.key"):
        one = encode_event("task.requested", "k-1", subject, request, 1_764_000_000_123, "/s")
        two = encode(envelope("task.requested", "k-1", subject, request, 1_764_000_000_123, "/s"))
        assert one == two
