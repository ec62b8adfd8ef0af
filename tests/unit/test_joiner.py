"""The joiner on an in-memory table: one bad record or round never costs the others."""

from __future__ import annotations

from typing import Any

import orjson

from agents.joiner import InMemoryRounds, Joiner
from lapverse_streams.clients.share_api import InMemoryShareAPI
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.deadletter import Consumed
from lapverse_streams.events.models import FinOpsTags, VariantResultEvent, VariantRun
from tests.unit.dead_letters import Letters, record

NOW_MS = 1_000_000
COMPETITORS = ["a", "b"]


def tags(tenant: str) -> FinOpsTags:
    return FinOpsTags(
        environment="test", tenant_id=tenant, cost_center="default", owner="qa", version="1"
    )


def run(cid: str, tenant: str, variant: str, platforms: tuple[str, ...] = ()) -> bytes:
    data = VariantRun(
        competition_id=cid,
        tenant=tenant,
        family="forecast",
        variant=variant,
        competitors=COMPETITORS,
        input={},
        deadline_ms=NOW_MS + 60_000,
        cost_micros=10,
        tags=tags(tenant),
        platforms=list(platforms),
    )
    return encode(envelope("variant.run", f"{cid}:{variant}", tenant, data, NOW_MS, "/t"))


def result(cid: str, tenant: str, variant: str, score: float, subject: str = "") -> bytes:
    data = VariantResultEvent(
        competition_id=cid,
        tenant=tenant,
        family="forecast",
        variant=variant,
        competitors=COMPETITORS,
        deadline_ms=NOW_MS + 60_000,
        status="ok",
        score=score,
        cost_micros=10,
        duration_ms=1,
        output={"forecast": [1.0]},
        tags=tags(tenant),
        finished_at_ms=NOW_MS,
    )
    event = envelope("variant.result", f"{cid}:{variant}:r", subject or tenant, data, NOW_MS, "/t")
    return encode(event)


def whole_round(cid: str, tenant: str) -> list[Consumed]:
    return [
        record(run(cid, tenant, "a"), cid),
        record(result(cid, tenant, "a", 0.5), cid),
        record(result(cid, tenant, "b", 0.9), cid),
    ]


class Joins:
    """Sent joins; refuses to send those of `failing` tenants."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.sent: list[dict[str, Any]] = []
        self.failing = failing

    async def send(self, key: bytes, value: bytes) -> None:
        if key.decode() in self.failing:
            raise ConnectionError("broker away")
        self.sent.append(orjson.loads(value)["data"])


def joiner(
    rounds: InMemoryRounds, joins: Joins, letters: Letters, share: InMemoryShareAPI | None = None
) -> Joiner:
    share = InMemoryShareAPI() if share is None else share
    return Joiner(rounds, joins.send, share, letters.policy(), 1_000, clock_ms=lambda: NOW_MS)


async def test_a_round_with_every_result_is_joined_once_and_stored_completed() -> None:
    rounds, joins, letters = InMemoryRounds(), Joins(), Letters()
    await joiner(rounds, joins, letters).process(whole_round("c1", "acme"))
    assert [(j["competitionId"], j["champion"]) for j in joins.sent] == [("c1", "b")]
    assert rounds.data["c1"]["completedMs"] == NOW_MS
    assert letters.sent == []


async def test_a_round_replayed_after_a_lost_commit_posts_once_per_platform() -> None:
    share, joins, letters = InMemoryShareAPI(), Joins(), Letters()
    batch = [
        record(run("c1", "acme", "a", ("twitter", "mastodon")), "c1"),
        *whole_round("c1", "acme")[1:],
    ]
    for _ in range(2):  # the worker died before its commit: the round is joined from scratch
        await joiner(InMemoryRounds(), joins, letters, share).process(batch)
    assert sorted(share.by_key) == ["c1:mastodon", "c1:twitter"]
    assert len(share.posts) == 2
    first, again = (j["posts"] for j in joins.sent)
    assert again == first
    assert [p["platform"] for p in first] == ["twitter", "mastodon"]


async def test_bad_records_are_dead_lettered_and_the_rest_of_the_batch_goes_on() -> None:
    rounds, joins, letters = InMemoryRounds(), Joins(), Letters()
    batch = [
        record(b"\xff not json", "c0"),
        record(result("c2", "acme", "a", 0.5), "c1"),  # keyed by another round
        record(result("c3", "acme", "a", 0.5, subject="evil"), "c3"),  # subject disagrees
        record(b'{"data": {"deep": ' + b"[" * 200 + b"]" * 200 + b"}}", "c4"),
        *whole_round("c1", "acme"),
    ]
    await joiner(rounds, joins, letters).process(batch)
    assert letters.reasons() == ["not_json", "key_mismatch", "key_mismatch", "too_deep"]
    assert [letter[1] for letter in letters.sent] == [r.value for r in batch[:4]]
    assert [j["competitionId"] for j in joins.sent] == ["c1"]
    assert set(rounds.data) == {"c1"}  # rounds touched only by failed records are not stored
    assert ("joiner", "key_mismatch") in letters.counted


async def test_a_result_carrying_another_tenants_data_cannot_join_a_stored_round() -> None:
    rounds, joins, letters = InMemoryRounds(), Joins(), Letters()
    first = joiner(rounds, joins, letters)
    await first.process([record(run("c1", "acme", "a"), "c1")])
    before = dict(rounds.data["c1"])
    await first.process([record(result("c1", "other", "a", 1.0), "c1")])
    assert letters.reasons() == ["key_mismatch"]
    assert rounds.data["c1"] == before
    assert joins.sent == []


async def test_a_malformed_stored_round_fails_its_records_only_and_is_swept_out() -> None:
    rounds, joins, letters = InMemoryRounds(), Joins(), Letters()
    rounds.data["bad"] = {"partition": 0, "tags": {"nope": 1}}
    rounds.data["worse"] = ["not", "a", "round"]
    batch = [record(result("bad", "acme", "a", 0.5), "bad"), *whole_round("c1", "acme")]
    j = joiner(rounds, joins, letters)
    await j.process(batch)
    assert letters.reasons() == ["processing_error"]  # the record is fine, its round is not
    assert [x["competitionId"] for x in joins.sent] == ["c1"]
    assert rounds.data["bad"] == {"partition": 0, "tags": {"nope": 1}}  # no write from it

    await j.close_overdue({0})
    assert letters.reasons()[1:] == ["processing_error", "wrong_schema"]
    assert [letter[0] for letter in letters.sent[1:]] == [b"bad", b"worse"]
    assert set(rounds.data) == {"c1"}


async def test_a_round_that_cannot_be_emitted_fails_its_records_not_the_other_rounds() -> None:
    rounds, joins, letters = InMemoryRounds(), Joins(failing=frozenset({"down"})), Letters()
    batch = [*whole_round("c1", "down"), *whole_round("c2", "up")]
    await joiner(rounds, joins, letters).process(batch)
    assert [j["competitionId"] for j in joins.sent] == ["c2"]
    assert letters.reasons() == ["processing_error"] * 3
    assert {letter[0] for letter in letters.sent} == {b"c1"}


async def test_a_redelivered_result_of_a_done_round_emits_the_join_again_and_changes_nothing() -> (
    None
):
    rounds, joins, letters = InMemoryRounds(), Joins(), Letters()
    j = joiner(rounds, joins, letters)
    await j.process(whole_round("c1", "acme"))
    stored = dict(rounds.data["c1"])
    await j.process([record(result("c1", "acme", "b", 0.1), "c1")])
    assert [x["champion"] for x in joins.sent] == ["b", "b"]
    assert rounds.data["c1"] == stored
    assert letters.sent == []
