"""The governor's rules over plain dict stores: replay, conflicts, redelivery, charging once."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from lapverse_streams.domain.admission import Policy
from lapverse_streams.domain.batch import REPLAYED, REPLY_ONLY, Inbound
from lapverse_streams.domain.governor import Governor
from lapverse_streams.domain.idempotency import task_id
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events.codec import encode, envelope, header
from lapverse_streams.events.models import FinOpsTags, TaskRequested, TaskResult, TenantConfig

NOW = 1_790_000_000_000
TAGS = FinOpsTags(environment="test", tenant_id="acme", cost_center="ops", owner="o", version="1")


def tenant(**overrides: Any) -> TenantConfig:
    return TenantConfig(
        **{"tenant_id": "acme", "mrr_micros": 1_000_000_000, "tags": TAGS, **overrides}
    )


@pytest.fixture
def gov() -> Governor:
    return Governor(
        records={},
        ledgers={},
        burns={},
        tenants={"acme": tenant()},
        flag_definitions={},
        policy=Policy(0.7, 3),
        environment="test",
        version="1",
        retention_ms=86_400_000,
        clock_ms=lambda: NOW,
    )


class Log:
    """Assigns offsets like a partition would."""

    def __init__(self) -> None:
        self.offsets = {"tasks": 0, "results": 0}

    def request(self, key: str, description: str = "x", type_: str = "ANALYSIS") -> Inbound:
        data = TaskRequested(type=type_, tenant="acme", description=description, cost_center="ops")
        value = encode(envelope("task.requested", key, "acme", data, NOW, "/t"))
        return self.raw("tasks", value, [("lapverse-request-id", key.encode())])

    def result(
        self,
        decision: dict[str, Any],
        status: str = "completed",
        cost: int = 10_000,
        duration_ms: int = 5,
    ) -> Inbound:
        data = TaskResult(
            task_id=decision["taskId"],
            status=status,
            type="ANALYSIS",
            cost_center="ops",
            duration_ms=duration_ms,
            attempts=1,
            cost_micros=cost,
            tags=TAGS,
            finished_at_ms=NOW,
        )
        return self.raw(
            "results", encode(envelope(f"task.{status}", "r", "acme", data, NOW, "/t")), []
        )

    def raw(self, source: str, value: bytes | None, headers: list[tuple[str, bytes]]) -> Inbound:
        offset = self.offsets[source]
        self.offsets[source] += 1
        return Inbound(source, 0, offset, b"acme", value, headers)


def decision_of(value: bytes | None) -> dict[str, Any]:
    assert value is not None
    data: dict[str, Any] = orjson.loads(value)["data"]
    return data


def test_accepts_and_reserves_the_estimate(gov: Governor) -> None:
    out = gov.process([Log().request("k1")])
    [record] = out.records
    data = decision_of(record.value)
    assert (data["status"], data["httpStatus"], data["costEstimateMicros"]) == (
        "accepted",
        202,
        10_000,
    )
    assert gov.reservations.of("acme").items == {data["taskId"]: 10_000}
    assert [(w.table, w.key, w.partition) for w in out.writes] == [("dedup", data["taskId"], 0)]


def test_the_decision_carries_the_request_id_and_the_trace_of_the_request(gov: Governor) -> None:
    request = Log().request("k1")
    trace = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    traced = Inbound(request.source, 0, 0, request.key, request.value,
                     [*request.headers, ("other", b"x"), trace])  # fmt: skip
    [record] = gov.process([traced]).records
    assert record.headers == [("lapverse-request-id", b"k1"), trace]


def test_same_key_same_body_replays_the_first_decision_byte_for_byte(gov: Governor) -> None:
    log = Log()
    first = gov.process([log.request("k1")]).records[0]
    again = gov.process([log.request("k1")]).records[0]
    assert again.value == first.value
    assert header(again.headers, REPLAYED) == "true"
    assert len(gov.reservations.of("acme").items) == 1


def stored(gov: Governor) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The dedup and ledger stores' values, as the bytes they would be written as."""
    records = {k: v.to_bytes() for k, v in gov.records.items()}
    return records, {k: v.to_bytes() for k, v in gov.ledgers.items()}


def test_same_key_different_body_is_a_422_that_changes_nothing(gov: Governor) -> None:
    log = Log()
    gov.process([log.request("k1", "first")])
    before = stored(gov)
    out = gov.process([log.request("k1", "second")])
    data = decision_of(out.records[0].value)
    assert (data["httpStatus"], data["reason"]) == (422, "fingerprint_mismatch")
    assert header(out.records[0].headers, REPLY_ONLY) == "true"
    assert stored(gov) == before


def test_redelivered_request_repeats_the_decision_without_reserving_twice(gov: Governor) -> None:
    event = Log().request("k1")
    first = gov.process([event]).records[0]
    again = gov.process([event]).records[0]
    assert again.value == first.value
    assert header(again.headers, REPLAYED) is None
    assert len(gov.reservations.of("acme").items) == 1


def test_a_reservation_is_its_accepted_record_whoever_writes_the_store(gov: Governor) -> None:
    event = Log().request("k1")
    gov.process([event])
    [(task, record)] = list(gov.records.items())
    del gov.records[task]  # its changelog write did not survive the crash
    assert gov.reservations.total("acme") == 0
    gov.records.update({task: record})  # as table recovery writes it back
    assert gov.reservations.of("acme").items == {task: 10_000}
    gov.process([event])  # the redelivery reserves nothing more
    assert gov.reservations.total("acme") == 10_000


def test_result_charges_once_and_releases_the_reservation(gov: Governor) -> None:
    log = Log()
    decision = decision_of(gov.process([log.request("k1")]).records[0].value)
    gov.process([log.result(decision, cost=12_345)])
    gov.process([log.result(decision, cost=12_345)])  # the executor ran it twice
    ledger = gov.ledgers["acme"]
    assert ledger.reserved == {}
    assert ledger.spend == {billing_period(NOW): {"ops": 12_345}}
    assert gov.records[decision["taskId"]].status == "completed"


def test_redelivered_result_is_charged_once_even_if_only_the_record_survived(gov: Governor) -> None:
    log = Log()
    decision = decision_of(gov.process([log.request("k1")]).records[0].value)
    ledger_before = copy.deepcopy(gov.ledgers)
    result = log.result(decision)
    gov.process([result])
    gov.ledgers.clear()
    gov.ledgers.update(ledger_before)  # crash: the record's write landed, the ledger's did not
    gov.process([result])
    gov.process([result])
    assert gov.ledgers["acme"].spent(billing_period(NOW)) == 10_000


def test_failed_task_charges_nothing_and_burns_budget(gov: Governor) -> None:
    log = Log()
    decision = decision_of(gov.process([log.request("k1")]).records[0].value)
    gov.process([log.result(decision, status="failed", cost=0)])
    ledger = gov.ledgers["acme"]
    assert (ledger.reserved, ledger.spent(billing_period(NOW))) == ({}, 0)
    assert gov.burns["acme"].buckets


def test_exhausted_budget_answers_503_with_retry_after(gov: Governor) -> None:
    log = Log()
    for i in range(3):
        decision = decision_of(gov.process([log.request(f"f{i}")]).records[0].value)
        gov.process([log.result(decision, status="failed", cost=0)])
    data = decision_of(gov.process([log.request("next")]).records[0].value)
    assert (data["httpStatus"], data["reason"]) == (503, "budget_exhausted")
    assert data["retryAfterS"] >= 60


def test_slow_task_counts_as_bad(gov: Governor) -> None:
    gov.tenants = {"acme": tenant(latency_objective_ms=10)}
    log = Log()
    for i in range(3):
        decision = decision_of(gov.process([log.request(f"s{i}")]).records[0].value)
        gov.process([log.result(decision, duration_ms=11)])
    assert decision_of(gov.process([log.request("next")]).records[0].value)["httpStatus"] == 503


def test_margin_guardrail_counts_spend_reservations_and_the_estimate(gov: Governor) -> None:
    gov.tenants = {"acme": tenant(mrr_micros=30_000)}  # 70 % = 21_000 micros
    log = Log()
    statuses = [
        decision_of(gov.process([log.request(f"m{i}")]).records[0].value)["httpStatus"]
        for i in range(3)
    ]
    assert statuses == [202, 202, 402]


def test_disabled_task_type_is_404(gov: Governor) -> None:
    off = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    gov.flag_definitions = {"task-type.ANALYSIS": off}
    assert decision_of(gov.process([Log().request("k1")]).records[0].value)["httpStatus"] == 404


def test_unknown_tenant_is_rejected(gov: Governor) -> None:
    gov.tenants = {}
    assert (
        decision_of(gov.process([Log().request("k1")]).records[0].value)["reason"]
        == "unknown_tenant"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not_json"),
        (b"[1, 2]", "wrong_schema"),
        (b'{"specversion": "1.0"}', "wrong_schema"),
        (
            encode(
                envelope(
                    "task.completed", "x", "acme", TaskRequested(type="A", tenant="acme"), NOW, "/t"
                )
            ),
            "unknown_type",
        ),
        (
            b'{"specversion":"1.0","id":"1","source":"s","type":"com.other.v1","time":"t","data":{}}',
            "unknown_type",
        ),
        (None, "empty"),
    ],
)
def test_poison_goes_to_the_dead_letter_topic_and_the_batch_carries_on(
    gov: Governor, value: bytes | None, reason: str
) -> None:
    log = Log()
    poison = log.raw("tasks", value, [("h", b"v")])
    out = gov.process([poison, log.request("k1")])
    dlq, decision = out.records
    assert dlq.sink == "dlq"
    assert dlq.value == value
    assert ("h", b"v") in dlq.headers
    assert header(dlq.headers, "lapverse-dlq-reason") == reason
    assert header(dlq.headers, "lapverse-dlq-offset") == "0"
    assert decision.sink == "decisions"


def test_keys_expire_after_the_retention(gov: Governor) -> None:
    log = Log()
    decision = decision_of(gov.process([log.request("k1", "first")]).records[0].value)
    gov.process([log.result(decision)])
    gov.clock_ms = lambda: NOW + 86_400_001
    data = decision_of(gov.process([log.request("k1", "second")]).records[0].value)
    assert data["httpStatus"] == 202


def test_finished_and_rejected_records_are_forgotten_after_the_retention(gov: Governor) -> None:
    log = Log()
    done = decision_of(gov.process([log.request("done")]).records[0].value)
    gov.process([log.result(done)])
    gov.process([log.request("running")])
    gov.tenants = {}
    gov.process([log.request("rejected")])
    later = NOW + 86_400_001
    assert gov.forget_expired(NOW + 86_400_000, {0}) == []
    assert gov.forget_expired(later, {1}) == []  # another worker's partition
    forgotten = gov.forget_expired(later, {0})
    assert {w.key for w in forgotten} == {done["taskId"], task_id("acme", "rejected")}
    assert {(w.table, w.value) for w in forgotten} == {("dedup", None)}  # tombstones
    assert {w.partition for w in forgotten} == {0}
    assert set(gov.records) == {task_id("acme", "running")}  # unfinished work stays


def test_overdue_accepted_tasks_are_redriven_once_per_interval(gov: Governor) -> None:
    log = Log()
    first = gov.process([log.request("k1")]).records[0]
    done = decision_of(gov.process([log.request("k2")]).records[0].value)
    gov.process([log.result(done)])
    assert gov.redrive(NOW + 999, 1000, {0}) == []
    [again] = gov.redrive(NOW + 1000, 1000, {0})
    assert again.value == first.value
    assert gov.redrive(NOW + 1500, 1000, {0}) == []
    assert len(gov.redrive(NOW + 2000, 1000, {0})) == 1
    assert gov.redrive(NOW + 5000, 1000, {1}) == []
