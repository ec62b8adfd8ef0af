"""The governor against hostile records: one bad record costs nobody else anything."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest

from lapverse_streams.domain.admission import Policy
from lapverse_streams.domain.batch import REPLY_ONLY, Inbound
from lapverse_streams.domain.governor import Governor
from lapverse_streams.events.codec import encode, envelope, header
from lapverse_streams.events.models import FinOpsTags, TaskRequested, TaskResult, TenantConfig
from tests.hostile import nest_deeply

NOW = 1_790_000_000_000
TENANTS = ("acme", "beta", "gamma")


def config(tenant_id: str, **overrides: Any) -> TenantConfig:
    tags = FinOpsTags(
        environment="test", tenant_id=tenant_id, cost_center="platform", owner="o", version="1"
    )
    return TenantConfig(
        **{"tenant_id": tenant_id, "mrr_micros": 10**12, "owner": f"{tenant_id}-team", "tags": tags}
        | overrides
    )


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


class Tenants(Mapping[str, TenantConfig]):
    """Tenant configuration that can be told to fail, like a store that raises mid-record."""

    def __init__(self, tenants: dict[str, TenantConfig]) -> None:
        self.tenants = tenants
        self.fail_after = -1  # fail on the n-th lookup from now (never when negative)

    def __getitem__(self, key: str) -> TenantConfig:
        return self.tenants[key]

    def get(self, key: str, default: Any = None) -> Any:
        if self.fail_after == 0:
            self.fail_after = -1
            raise RuntimeError("store failed")
        self.fail_after -= 1
        return self.tenants.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tenants)

    def __len__(self) -> int:
        return len(self.tenants)


def governor(clock: Clock | None = None, **tenant_overrides: Any) -> Governor:
    return Governor(
        records={},
        ledgers={},
        burns={},
        tenants=Tenants({t: config(t, **tenant_overrides) for t in TENANTS}),
        flag_definitions={},
        policy=Policy(0.7, 3, rate_limit_per_s=1000.0, rate_limit_burst=1000),
        environment="test",
        version="1",
        retention_ms=86_400_000,
        clock_ms=clock or Clock(),
        task_types=frozenset({"ANALYSIS", "NOOP"}),
    )


class Log:
    """Assigns offsets like a partition would."""

    def __init__(self) -> None:
        self.offsets = {"tasks": 0, "results": 0}

    def request(
        self,
        tenant: str,
        key: str,
        *,
        record_key: str | None = None,
        subject: str | None = None,
        **fields: Any,
    ) -> Inbound:
        data = TaskRequested(**{"type": "NOOP", "tenant": tenant, **fields})
        value = encode(envelope("task.requested", key, subject or tenant, data, NOW, "/t"))
        return self.raw("tasks", (record_key or tenant).encode(), value, key)

    def raw(self, source: str, key: bytes, value: bytes, request_id: str = "r") -> Inbound:
        offset = self.offsets[source]
        self.offsets[source] += 1
        return Inbound(
            source, 0, offset, key, value, [("lapverse-request-id", request_id.encode())]
        )

    def result(self, tenant: str, task_id: str, cost: int = 10_000) -> Inbound:
        tags = FinOpsTags(
            environment="t", tenant_id=tenant, cost_center="c", owner="o", version="1"
        )
        data = TaskResult(
            task_id=task_id,
            status="completed",
            type="NOOP",
            cost_center="default",
            duration_ms=5,
            attempts=1,
            cost_micros=cost,
            tags=tags,
            finished_at_ms=NOW,
        )
        value = encode(envelope("task.completed", f"{task_id}:result", tenant, data, NOW, "/e"))
        return self.raw("results", tenant.encode(), value)


def deep_request(log: Log, tenant: str, key: str, depth: int = 251) -> Inbound:
    """task.requested with `requirements` nested `depth` levels, built by hand like an attacker."""
    value = {
        "specversion": "1.0",
        "id": key,
        "source": "/evil",
        "type": "io.lapverse.task.requested.v1",
        "subject": tenant,
        "time": "2026-01-01T00:00:00Z",
        "data": {
            "type": "NOOP",
            "tenant": tenant,
            "requirements": {"complexity": "simple", "x": []},
        },
    }
    return log.raw("tasks", tenant.encode(), nest_deeply(value, depth), key)


def stored(gov: Governor) -> tuple[dict[str, bytes], ...]:
    """Every store's values as the bytes they would be written as, and the reservations."""
    held = {tenant: dict(r.items) for tenant, r in gov.reservations.tenants() if r.items}
    return (
        {k: v.to_bytes() for k, v in gov.records.items()},
        {k: v.to_bytes() for k, v in gov.ledgers.items()},
        {k: v.to_bytes() for k, v in gov.burns.items()},
        {k: orjson.dumps(v) for k, v in held.items()},
    )


def decisions(out: Any) -> list[dict[str, Any]]:
    return [orjson.loads(r.value)["data"] for r in out.records if r.sink == "decisions"]


def dead_letters(out: Any) -> list[Any]:
    return [r for r in out.records if r.sink == "dlq"]


def test_a_deeply_nested_request_is_dead_lettered_and_the_batch_is_decided() -> None:
    gov, log = governor(), Log()
    batch = [log.request(TENANTS[i % 3], f"k{i}") for i in range(30)]
    batch.append(deep_request(log, "acme", "deep"))
    batch += [log.request(TENANTS[i % 3], f"k{i}") for i in range(30, 60)]
    out = gov.process(batch)
    assert [d["status"] for d in decisions(out)] == ["accepted"] * 60
    [dead] = dead_letters(out)
    assert header(dead.headers, "lapverse-dlq-reason") == "too_deep"
    assert header(dead.headers, "lapverse-dlq-agent") == "governor"
    assert dead.value == batch[30].value  # the original bytes
    reserved = sum(len(held.items) for _, held in gov.reservations.tenants())
    assert reserved == 60
    assert len(gov.records) == 60


def test_a_failure_after_writes_leaves_no_write_behind() -> None:
    gov, log = governor(), Log()
    first = gov.process([log.request("acme", "a1"), log.request("beta", "b1")])
    task_id = decisions(first)[0]["taskId"]
    before = stored(gov)
    tenants = gov.tenants
    assert isinstance(tenants, Tenants)
    tenants.fail_after = 0  # the result's tenant lookup, after its record and ledger writes
    out = gov.process([log.result("acme", task_id)])
    [dead] = dead_letters(out)
    assert header(dead.headers, "lapverse-dlq-reason") == "processing_error"
    assert "RuntimeError: store failed" in (header(dead.headers, "lapverse-dlq-error") or "")
    assert stored(gov) == before
    assert out.writes == []
    again = gov.process([log.result("acme", task_id)])  # the next delivery is charged once
    assert not dead_letters(again)
    assert gov.ledgers["acme"].spent("2026-09") == 10_000


@pytest.mark.parametrize(
    ("record_key", "subject"), [("beta", None), (None, "beta"), ("beta", "beta")]
)
def test_key_subject_and_tenant_must_agree(record_key: str | None, subject: str | None) -> None:
    gov, log = governor(), Log()
    out = gov.process([log.request("acme", "k", record_key=record_key, subject=subject)])
    [dead] = dead_letters(out)
    assert header(dead.headers, "lapverse-dlq-reason") == "key_mismatch"
    assert not decisions(out)
    assert not gov.records
    assert not gov.ledgers


def test_a_result_keyed_by_another_tenant_is_not_charged() -> None:
    gov, log = governor(), Log()
    task_id = decisions(gov.process([log.request("beta", "b1")]))[0]["taskId"]
    forged = log.result("beta", task_id)
    forged = Inbound("results", 0, forged.offset, b"acme", forged.value, [])
    out = gov.process([forged])
    assert header(dead_letters(out)[0].headers, "lapverse-dlq-reason") == "key_mismatch"
    assert gov.reservations.of("beta").items == {task_id: 10_000}


def test_producer_tags_are_replaced_by_the_tenants_own() -> None:
    gov, log = governor(), Log()
    forged = FinOpsTags(
        environment="prod", tenant_id="beta", cost_center="free", owner="mallory", version="9"
    )
    [decision] = decisions(gov.process([log.request("acme", "k", tags=forged, cost_center="ops")]))
    assert decision["tags"] == {
        "application": "lapverse-monitoring",
        "environment": "test",
        "tenantId": "acme",
        "costCenter": "ops",
        "owner": "acme-team",
        "version": "1",
    }


def test_an_unknown_task_type_is_invalid_and_remembered_nowhere() -> None:
    gov, log = governor(), Log()
    out = gov.process([log.request("acme", "typo", type="ANALYSYS")])
    [record] = [r for r in out.records if r.sink == "decisions"]
    decision = orjson.loads(record.value)["data"]
    assert (decision["status"], decision["httpStatus"], decision["reason"]) == (
        "rejected",
        400,
        "invalid_request",
    )
    assert "ANALYSIS, NOOP" in decision["detail"]
    assert header(record.headers, REPLY_ONLY) == "true"
    assert not gov.records
    assert not gov.ledgers
    assert not gov.burns
    [observation] = out.observations
    assert observation.task_type == "invalid"  # a caller's typo never becomes a label value


def test_rate_limit_refuses_over_the_burst_and_lets_the_same_key_in_later() -> None:
    clock = Clock()
    gov, log = governor(clock, rate_limit_per_s=1.0, burst=3), Log()
    out = gov.process([log.request("acme", f"k{i}") for i in range(5)] + [log.request("beta", "b")])
    got = [
        (d["tenant"] if "tenant" in d else d["tags"]["tenantId"], d["status"], d["httpStatus"])
        for d in decisions(out)
    ]
    assert got == [("acme", "accepted", 202)] * 3 + [("acme", "rejected", 429)] * 2 + [
        ("beta", "accepted", 202)
    ]
    limited = decisions(out)[3]
    assert limited["reason"] == "rate_limited"
    assert limited["retryAfterS"] == 1
    assert limited["rateLimit"] == {"limit": 3, "remaining": 0, "resetS": 1, "windowS": 3}
    assert [o.kind for o in out.observations].count("rate_limited") == 2
    clock.now += 1_000
    [retry] = decisions(gov.process([log.request("acme", "k3")]))
    assert retry["status"] == "accepted"  # 429s are not remembered: the key is free


def test_an_unknown_tenant_never_becomes_a_metric_label() -> None:
    gov, log = governor(), Log()
    out = gov.process([log.request("mallory-1", "k")])
    assert decisions(out)[0]["reason"] == "unknown_tenant"
    assert {o.tenant for o in out.observations} == {"unknown"}
