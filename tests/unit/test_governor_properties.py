"""Property: whatever mix of valid, duplicate, poisoned and forged records arrives, in any
batching, every valid request is decided once, reserved once, charged once, and no tenant's
ledger holds another tenant's money."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lapverse_streams.domain.batch import REPLAYED, REPLY_ONLY, Inbound
from lapverse_streams.domain.idempotency import task_id
from lapverse_streams.domain.ledger import Ledger
from lapverse_streams.events.codec import header
from tests.unit.test_governor_trust import TENANTS, Log, deep_request, governor

POISON = (
    b"not json",
    b"[1, 2]",
    b'{"specversion": "1.0"}',
    orjson.dumps(
        {
            "specversion": "1.0",
            "id": "x",
            "source": "/",
            "type": "io.lapverse.nope.v1",
            "time": "t",
            "data": {},
        }
    ),
)

op = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(TENANTS), st.integers(0, 5), st.integers(0, 1)),
    st.tuples(st.just("poison"), st.sampled_from(TENANTS), st.integers(0, len(POISON)), st.just(0)),
    st.tuples(st.just("forged"), st.sampled_from(TENANTS), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("result"), st.sampled_from(TENANTS), st.integers(0, 5), st.integers(1, 9)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=60), cuts=st.lists(st.integers(1, 20), max_size=8))
def test_every_valid_request_is_decided_reserved_and_charged_once(
    ops: list[tuple[str, str, int, int]], cuts: list[int]
) -> None:
    gov, log = governor(), Log()
    records: list[Inbound] = []
    expected_dead = 0
    payloads: dict[tuple[str, int], int] = {}  # the first payload sent with each key
    for kind, tenant, n, variant in ops:
        if kind == "request":
            payloads.setdefault((tenant, n), variant)
            records.append(log.request(tenant, f"key-{n}", description=f"v{variant}"))
        elif kind == "poison":
            expected_dead += 1
            records.append(
                deep_request(log, tenant, "deep")
                if n == len(POISON)
                else log.raw("tasks", tenant.encode(), POISON[n])
            )
        elif kind == "forged":  # keyed by another tenant: would split that tenant's ledger
            expected_dead += 1
            other = TENANTS[(TENANTS.index(tenant) + 1) % len(TENANTS)]
            records.append(log.request(tenant, f"key-{n}", record_key=other))
        else:
            records.append(log.result(tenant, task_id(tenant, f"key-{n}"), cost=variant * 1_000))
            if (tenant, n) not in payloads:
                expected_dead += 1  # a result for no admitted task

    outputs: list[Any] = []
    start = 0
    for size in [*cuts, len(records)]:
        outputs.extend(gov.process(records[start : start + size]).records)
        start += size
        if start >= len(records):
            break

    first_decisions: dict[str, int] = {}
    for out in outputs:
        replied = header(out.headers, REPLAYED) or header(out.headers, REPLY_ONLY)
        if out.sink == "decisions" and not replied:
            data = orjson.loads(out.value)["data"]
            first_decisions[data["taskId"]] = first_decisions.get(data["taskId"], 0) + 1
    requested = {task_id(t, f"key-{n}"): t for t, n in payloads}
    assert first_decisions == dict.fromkeys(requested, 1)
    assert sum(1 for out in outputs if out.sink == "dlq") == expected_dead

    charged: dict[str, int] = {}
    for tid, tenant in requested.items():
        record = gov.records[tid]
        assert record.tenant == tenant
        if record.status == "completed":
            charged[tenant] = charged.get(tenant, 0) + record.cost
    for tenant in TENANTS:
        for reserved in gov.reservations.of(tenant).items:
            assert requested.get(reserved) == tenant  # only the tenant's own work
            assert gov.records[reserved].status == "accepted"
        unfinished = {t for t, r in gov.records.items() if r.tenant == tenant} - {
            t for t, r in gov.records.items() if r.status == "completed"
        }
        assert set(gov.reservations.of(tenant).items) == unfinished  # each reserved once
        ledger = gov.ledgers.get(tenant) or Ledger()
        spent = sum(sum(centers.values()) for centers in ledger.spend.values())
        assert spent == charged.get(tenant, 0)  # each completion charged once
