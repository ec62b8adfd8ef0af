"""Hostile records straight to the executor's, runners', joiner's and Kaggle agent's topics."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import pytest

from lapverse_streams.events import topics
from lapverse_streams.events.champion_models import KaggleStage
from lapverse_streams.events.codec import encode, envelope, header
from lapverse_streams.events.models import FinOpsTags, Model, TaskDecision, TaskRequest, VariantRun
from lapverse_streams.variants.forecast import demo_input
from tests.conftest import Stack
from tests.hostile import nest_deeply
from tests.integration.helpers import (
    create_tenant,
    post_task,
    produce_raw,
    read_topic,
    start_round,
    task_body,
    wait_round_completed,
    wait_task,
)

pytestmark = pytest.mark.kafka
NOW_MS = int(time.time() * 1000)


def tags(tenant: str) -> FinOpsTags:
    return FinOpsTags(
        environment="test", tenant_id=tenant, cost_center="default", owner="qa", version="1"
    )


def event(short: str, subject: str, data: Model | dict[str, Any], marker: str) -> bytes:
    """A CloudEvent; `marker` makes its bytes unique, so its dead letter can be found."""
    if isinstance(data, dict):
        raw = orjson.loads(encode(envelope(short, marker, subject, tags(subject), NOW_MS, "/x")))
        return orjson.dumps({**raw, "data": data})
    return encode(envelope(short, marker, subject, data, NOW_MS, "/x"))


def deep(short: str, subject: str, marker: str, depth: int = 251) -> bytes:
    """A small event whose data nests `depth` levels."""
    return nest_deeply(orjson.loads(event(short, subject, {"x": []}, marker)), depth)


def decision(tenant: str, task_id: str) -> TaskDecision:
    return TaskDecision(
        task_id=task_id,
        idempotency_key=task_id,
        status="accepted",
        reason="accepted",
        http_status=202,
        detail="",
        cost_estimate_micros=10,
        request=TaskRequest(type="NOOP", tenant=tenant),
        tags=tags(tenant),
        decided_at_ms=NOW_MS,
    )


def run(cid: str, tenant: str) -> VariantRun:
    return VariantRun(
        competition_id=cid,
        tenant=tenant,
        family="forecast",
        variant="balanced",
        competitors=["balanced"],
        input=demo_input(),
        deadline_ms=NOW_MS + 60_000,
        cost_micros=10,
        tags=tags(tenant),
    )


def stage(cid: str, tenant: str) -> KaggleStage:
    return KaggleStage(
        competition_id=cid,
        tenant=tenant,
        family="forecast",
        champion="balanced",
        scores={"balanced": 0.9},
        burn_rate=0.0,
        flag_key="champion.forecast",
        tags=tags(tenant),
        requested_at_ms=NOW_MS,
    )


# (topic, key, value, {(agent, reason) that must dead-letter it})
Hostile = tuple[str, bytes, bytes, set[tuple[str, str]]]


def hostile_records() -> list[Hostile]:
    decisions, runs, results = topics.TASK_DECISIONS, topics.VARIANT_RUNS, topics.VARIANT_RESULTS
    both = {"variant-runner", "joiner"}  # runs are read by the runners and the joiner
    return [
        (decisions, b"mallory", b"\xffnot json (decisions)", {("executor", "not_json")}),
        (decisions, b"mallory", deep("task.accepted", "mallory", "d1"), {("executor", "too_deep")}),
        (
            decisions,
            b"mallory",
            event("task.accepted", "mallory", {"taskId": "d2"}, "d2"),
            {("executor", "wrong_schema")},
        ),
        (  # keyed by mallory, carrying the victim's task
            decisions,
            b"mallory",
            event("task.accepted", "victim", decision("victim", "forged-task"), "d3"),
            {("executor", "key_mismatch")},
        ),
        (runs, b"c-x", b"\xffnot json (runs)", {(a, "not_json") for a in both}),
        (
            runs,
            b"c-y",
            event("variant.run", "mallory", {"competitionId": "c-y"}, "r1"),
            {(a, "wrong_schema") for a in both},
        ),
        (  # keyed by another round than the one it names
            runs,
            b"c-other",
            event("variant.run", "mallory", run("c-z", "mallory"), "r2"),
            {(a, "key_mismatch") for a in both},
        ),
        (results, b"c-x", b"\xffnot json (results)", {("joiner", "not_json")}),
        (results, b"c-x", deep("variant.result", "mallory", "v1"), {("joiner", "too_deep")}),
        (topics.KAGGLE, b"c-x", b"\xffnot json (kaggle)", {("kaggle", "not_json")}),
        (
            topics.KAGGLE,
            b"c-x",
            event("kaggle.sync", "mallory", {"competitionId": "c-x"}, "k1"),
            {("kaggle", "wrong_schema")},
        ),
        (
            topics.KAGGLE,
            b"c-other",
            event("kaggle.sync", "victim", stage("c-k", "victim"), "k2"),
            {("kaggle", "key_mismatch")},
        ),
    ]


def letters_of(dead: list[Any], value: bytes) -> set[tuple[str, str]]:
    """(agent, reason) of each dead letter carrying these original bytes."""
    return {
        (
            header(list(r.headers), "lapverse-dlq-agent") or "",
            header(list(r.headers), "lapverse-dlq-reason") or "",
        )
        for r in dead
        if r.value == value
    }


async def test_every_hostile_record_is_dead_lettered_and_the_agents_live_on(stack: Stack) -> None:
    settings = stack.settings
    records = hostile_records()
    for topic, key, value, _ in records:
        await produce_raw(settings, topic, [(key, value)])

    def all_dead(dead: list[Any]) -> bool:
        return all(expected <= letters_of(dead, value) for _, _, value, expected in records)

    dead = await read_topic(settings, topics.DLQ, all_dead, timeout_s=60)
    for topic, _, value, expected in records:
        assert expected <= letters_of(dead, value), (topic, value[:60])  # other readers too
        letter = next(r for r in dead if r.value == value)
        assert header(list(letter.headers), "lapverse-dlq-topic") == settings.topic(topic)
        assert header(list(letter.headers), "lapverse-dlq-error")

    results = await read_topic(settings, topics.TASK_RESULTS, lambda rs: True, timeout_s=5)
    assert b"forged-task" not in b"".join(r.value for r in results)  # refused, not executed

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{settings.worker_web_port}/metrics") as r:
            metrics = await r.text()
        for _, _, _, expected in records:
            for agent, reason in expected:
                assert f'lapverse_dlq_total{{agent="{agent}",reason="{reason}"}}' in metrics

        # every agent is still alive: a task and a self-compete round complete
        api_key = await create_tenant(session, stack, "survivor")
        status, _, raw = await post_task(
            session, stack, api_key, "survivor", task_body("survivor", type="NOOP")
        )
        assert status == 202, raw
        task_id = orjson.loads(raw)["taskId"]
        done = await wait_task(session, stack, api_key, "survivor", task_id)
        assert done["status"] == "completed"
        body = {"content": "after the garbage", "platforms": [], "input": demo_input()}
        round_id = await start_round(session, stack, api_key, "survivor", body)
        joined = await wait_round_completed(session, stack, api_key, "survivor", round_id)
        assert joined["missing"] == []
