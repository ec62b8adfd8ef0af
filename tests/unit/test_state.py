"""The governor's state layer: typed values, derived reservations, one write per dirty key."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from lapverse_streams.domain.state import BatchState, DedupRecord, DedupStore, Reservations


def record(request_id: str, status: str = "accepted", tenant: str = "acme") -> DedupRecord:
    decision = orjson.dumps({"type": "io.lapverse.task.accepted.v1", "data": {"x": 1.5}})
    return DedupRecord(
        kind="task",
        request_id=request_id,
        tenant=tenant,
        key=f"key-{request_id}",
        fingerprint="f",
        status=status,
        decision=decision,
        origin=(3, 17),
        created_ms=1,
        estimate=10_000,
        type="NOOP",
        cost_center="ops",
    )


def test_a_dedup_record_round_trips_with_its_decision_embedded_as_json() -> None:
    done = replace(
        record("t1"),
        status="completed",
        final_offset=9,
        cost=7,
        outputs=(("completions", b"acme", b'{"a":[1,2]}'),),
    )
    raw = done.to_bytes()
    assert b'"decision":{"type"' in raw  # an object, not a string of JSON
    assert DedupRecord.from_bytes(raw) == done


def test_a_record_stored_before_typed_values_still_reads() -> None:
    legacy = {
        "kind": "task",
        "taskId": "t1",
        "tenant": "acme",
        "key": "key-t1",
        "fingerprint": "f",
        "status": "accepted",
        "decision": '{"type":"io.lapverse.task.accepted.v1","data":{"x":1.5}}',
        "origin": [3, 17],
        "createdMs": 1,
        "estimate": 10_000,
        "type": "NOOP",
        "costCenter": "ops",
    }
    assert DedupRecord.from_bytes(orjson.dumps(legacy)) == record("t1")


def test_reservations_follow_every_way_into_the_dedup_store() -> None:
    reservations = Reservations()
    store = DedupStore(reservations)
    store["t1"] = record("t1")
    store.update({"t2": record("t2"), "b1": record("b1", tenant="beta")})  # table recovery
    assert (reservations.total("acme"), reservations.total("beta")) == (20_000, 10_000)
    store["t1"] = record("t1", "completed")  # settled: released
    store["t2"] = record("t2")  # written twice: held once
    assert reservations.of("acme").items == {"t2": 10_000}
    store.pop("t2")
    del store["b1"]
    assert (reservations.total("acme"), reservations.total("beta")) == (0, 0)
    store["t3"] = record("t3", "rejected")
    assert reservations.total("acme") == 0
    store["t4"] = record("t4")
    store.clear()  # partitions revoked
    assert reservations.total("acme") == 0


def test_a_batch_writes_each_changed_key_once_with_its_last_value() -> None:
    stores: dict[str, dict[str, object]] = {"dedup": {}, "ledger": {}}
    state = BatchState(stores)
    for value in ["a", "b", "c"]:
        state.begin(partition=2)
        state.table("dedup")["k"] = value
        state.table("ledger").touch("acme")
        state.commit()
    writes = state.writes()
    assert [(w.table, w.partition, w.key, w.value) for w in writes] == [
        ("dedup", 2, "k", "c"),
        ("ledger", 2, "acme", None),  # touched but absent: a delete
    ]
    assert state.writes() == []  # the next batch starts clean


def test_a_failed_record_leaves_neither_its_values_nor_its_dirty_keys() -> None:
    stores: dict[str, dict[str, object]] = {"dedup": {"old": 1}}
    state = BatchState(stores)
    state.begin(partition=0)
    state.table("dedup")["kept"] = 1
    state.commit()
    state.begin(partition=1)
    state.table("dedup")["new"] = 2
    del state.table("dedup")["old"]
    state.rollback()
    assert stores["dedup"] == {"old": 1, "kept": 1}
    assert [w.key for w in state.writes()] == ["kept"]


@pytest.mark.parametrize("status", ["accepted", "completed"])
def test_a_journaled_hold_and_release_are_undone(status: str) -> None:
    reservations = Reservations()
    state = BatchState({"dedup": DedupStore(reservations)})
    state.begin(0)
    state.table("dedup")["t1"] = record("t1")
    state.commit()
    state.begin(0)
    state.table("dedup")["t1"] = record("t1", status)
    state.table("dedup")["t2"] = record("t2")
    state.rollback()
    assert reservations.of("acme").items == {"t1": 10_000}
    assert reservations.total("acme") == 10_000
