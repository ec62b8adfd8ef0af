"""Self-compete rounds end to end: admission, fan-out, variant runners, join, settlement."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.domain import idempotency
from lapverse_streams.domain.pricing import billing_period
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import CompetitionRequested
from lapverse_streams.variants.forecast import demo_input
from tests.conftest import Stack
from tests.integration.helpers import (
    ADMIN,
    create_tenant,
    drain,
    ledger_of,
    read_topic,
    wait_round_completed,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def headers(api_key: str, tenant: str, key: str | None = None) -> dict[str, str]:
    """Tenant auth headers, with an Idempotency-Key when given."""
    out = {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": tenant}
    if key:
        out["Idempotency-Key"] = key
    return out


async def post_round(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, tenant: str, body: Any, key: str
) -> tuple[int, dict[str, Any]]:
    """POST /api/v2/self-compete; returns status and JSON body."""
    async with session.post(
        f"{stack.base_url}/api/v2/self-compete", json=body, headers=headers(api_key, tenant, key)
    ) as r:
        return r.status, await r.json(content_type=None)


async def test_demo_round_names_a_champion_with_four_scores_and_charges_once(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    api_key = await create_tenant(session, stack, "arena", mrr=1000.0)
    body = {
        "content": "Monthly airline passengers",
        "platforms": ["twitter"],
        "input": demo_input(),
    }
    status, submitted = await post_round(session, stack, api_key, "arena", body, "round-1")
    assert status == 202, submitted
    assert submitted["status"] == "running"
    assert submitted["costEstimate"] == 0.08
    assert submitted["competitors"] == ["aggressive", "conservative", "balanced", "experimental"]
    round_id = submitted["competitionId"]
    assert round_id == idempotency.competition_id("arena", "round-1")

    done = await wait_round_completed(session, stack, api_key, "arena", round_id)
    assert set(done["scores"]) == {"aggressive", "conservative", "balanced", "experimental"}
    assert all(0 < s <= 1 for s in done["scores"].values())
    assert done["champion"] == "conservative"  # seasonal naive wins on AirPassengers
    assert done["missing"] == []
    assert done["cost"] == 0.08
    assert done["tags"]["tenantId"] == "arena"
    assert done["promotion"]["decision"] == "kept"
    assert "sample" in done["promotion"]["reason"]
    assert len(done["championOutput"]["forecast"]) == 12
    (post,) = done["posts"]  # published through the Share API stand-in
    assert post["platform"] == "twitter"
    assert post["fallback"] is False
    assert not post["postId"].startswith("fallback-")

    worker = f"http://127.0.0.1:{stack.settings.worker_web_port}/metrics"
    async with session.get(worker) as r:
        metrics = await r.text()
    assert 'lapverse_competitions_total{tenant="arena"} 1.0' in metrics
    assert 'lapverse_cost_per_competition{tenant="arena"} 0.08' in metrics
    assert 'lapverse_win_rate{tenant="arena",variant="conservative"} 1.0' in metrics
    assert (
        'lapverse_variant_wins_total{family="forecast",tenant="arena",variant="conservative"} 1.0'
        in metrics
    )
    assert 'lapverse_variant_score_count{family="forecast",variant="aggressive"}' in metrics

    # the same key and body replays the decision; a different body is a 422
    status, replay = await post_round(session, stack, api_key, "arena", body, "round-1")
    assert (status, replay["competitionId"]) == (202, round_id)
    status, conflict = await post_round(
        session, stack, api_key, "arena", {**body, "content": "other"}, "round-1"
    )
    assert status == 422, conflict

    # redelivered variant results never count twice: replay every result of the round
    results = await drain(stack.settings, stack.settings.topic(topics.VARIANT_RESULTS))
    mine = [r for r in results if r.key == round_id.encode()]
    assert len(mine) == 4
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.bootstrap_servers)
    await producer.start()
    try:
        for r in mine:
            await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers))
        await producer.flush()
    finally:
        await producer.stop()
    await asyncio.sleep(2)
    completions = await drain(stack.settings, stack.settings.topic(topics.COMPETITION_RESULTS))
    ids = [orjson.loads(r.value)["data"]["competitionId"] for r in completions]
    assert ids.count(round_id) == 1
    ledger = await ledger_of(stack.settings, "arena")
    period = billing_period(int(time.time() * 1000))
    assert ledger["spend"][period] == {"default": 80_000}
    assert ledger["reserved"] == {}


async def test_rounds_that_cannot_run_are_rejected_with_clear_reasons(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    api_key = await create_tenant(session, stack, "picky")
    short = {"input": {"series": [1, 2, 3], "horizon": 2}}
    status, problem = await post_round(session, stack, api_key, "picky", short, "k1")
    assert (status, problem["fields"]) == (400, ["input.series"])
    assert "2 x horizon" in problem["detail"]
    unknown = {"competitors": ["aggressive", "psychic"], "input": demo_input()}
    status, problem = await post_round(session, stack, api_key, "picky", unknown, "k2")
    assert status == 400
    assert "psychic" in problem["detail"]
    status, problem = await post_round(
        session, stack, api_key, "picky", {"family": "poetry", "input": {}}, "k3"
    )
    assert status == 404
    assert "poetry" in problem["detail"]

    flag = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    async with session.put(
        f"{stack.base_url}/admin/v1/flags/family.forecast", json=flag, headers=ADMIN
    ) as r:
        assert r.status == 200
    try:
        deadline = time.monotonic() + 20
        status, attempt, problem = 0, 0, {}
        while status != 404 and time.monotonic() < deadline:  # the worker reads flags async
            attempt += 1
            status, problem = await post_round(
                session, stack, api_key, "picky", {"input": demo_input()}, f"k4-{attempt}"
            )
        assert status == 404, problem
        assert problem["type"].endswith("flag-disabled")
    finally:
        on = {**flag, "defaultVariant": "on"}
        async with session.put(
            f"{stack.base_url}/admin/v1/flags/family.forecast", json=on, headers=ADMIN
        ) as r:
            assert r.status == 200


async def test_round_produced_straight_to_kafka_is_decided_and_completed(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    await create_tenant(session, stack, "direct")
    settings = stack.settings
    key = f"direct-{uuid.uuid4().hex}"
    request = CompetitionRequested(
        tenant="direct", competitors=["aggressive", "balanced"], input=demo_input()
    )
    event = envelope("competition.requested", key, "direct", request, int(time.time() * 1000), "/x")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(topics.SELF_COMPETE), encode(event), key=b"direct"
        )
    finally:
        await producer.stop()
    round_id = idempotency.competition_id("direct", key)

    def decided(records: list[Any]) -> bool:
        return any(orjson.loads(r.value)["data"].get("competitionId") == round_id for r in records)

    decisions = await read_topic(settings, topics.TASK_DECISIONS, decided)
    decision = next(
        orjson.loads(r.value)
        for r in decisions
        if orjson.loads(r.value)["data"].get("competitionId") == round_id
    )
    assert decision["type"] == "io.lapverse.competition.accepted.v1"
    assert decision["data"]["costEstimateMicros"] == 40_000
    completions = await read_topic(settings, topics.COMPETITION_RESULTS, decided)
    completed = next(
        orjson.loads(r.value)["data"]
        for r in completions
        if orjson.loads(r.value)["data"]["competitionId"] == round_id
    )
    assert set(completed["scores"]) == {"aggressive", "balanced"}
    assert completed["champion"] in {"aggressive", "balanced"}
    assert completed["costMicros"] == 40_000
