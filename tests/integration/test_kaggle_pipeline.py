"""The Kaggle agent in a real worker: skipped stages offline, the burn-rate gate, and the real
`kaggle` client against the stand-in (sync, evaluate with merge, promote; an outage retried).

The worker reaches the stand-in as the client does in the TEST environment: it calls
http://localhost:7777, and HTTP_PROXY routes that to the stand-in's free port. Kafka is plain
TCP, so the proxy does not touch the broker.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from lapverse_streams.clients.kaggle import NO_CREDENTIALS
from lapverse_streams.events import topics
from lapverse_streams.events.champion_models import KaggleStage
from lapverse_streams.events.codec import encode, envelope
from lapverse_streams.events.models import FinOpsTags
from lapverse_streams.settings import Settings
from lapverse_streams.standins.kaggle import start_kaggle_standin
from tests.conftest import Stack
from tests.integration.helpers import create_tenant, drain, post_task, read_topic, task_body

pytestmark = pytest.mark.kafka
USERNAME, KEY = "lapverse", "test-kaggle-key"
KERNEL = f"{USERNAME}/forecast-notebook"
FAST_RETRIES = {"LAPVERSE_RETRY_BASE_MS": "100"}
# what the worker must not inherit from the machine running the tests
KAGGLE_ENV = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_API_ENVIRONMENT")
PROXY_ENV = ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(scope="module")
def offline(stack_factory: Callable[..., Stack]) -> Stack:
    """A worker without Kaggle credentials."""
    stack = stack_factory(**FAST_RETRIES)
    for name in KAGGLE_ENV:
        stack.env.pop(name, None)
    stack.start("worker")
    stack.wait_ready("worker")
    return stack


@pytest.fixture(scope="module")
def kaggle_standin() -> Iterator[str]:
    """The Kaggle stand-in on a free port, served from its own thread for the whole module."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kaggle-standin", daemon=True)
    thread.start()
    standin = asyncio.run_coroutine_threadsafe(
        start_kaggle_standin(credentials={USERNAME: KEY}), loop
    ).result(10)
    try:
        yield standin.base_url
    finally:
        asyncio.run_coroutine_threadsafe(standin.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def online(
    stack_factory: Callable[..., Stack],
    kaggle_standin: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Stack:
    """A worker and a gateway with Kaggle credentials, the client routed to the stand-in."""
    home = tmp_path_factory.mktemp("kaggle-home")
    stack = stack_factory(
        **FAST_RETRIES,
        LAPVERSE_KAGGLE_KERNEL=KERNEL,
        KAGGLE_USERNAME=USERNAME,
        KAGGLE_KEY=KEY,
        KAGGLE_API_ENVIRONMENT="TEST",
        HOME=str(home),
        KAGGLE_CONFIG_DIR=str(home),
        HTTP_PROXY=kaggle_standin,
        http_proxy=kaggle_standin,
    )
    for name in (*PROXY_ENV, "KAGGLE_API_TOKEN"):
        stack.env.pop(name, None)
    stack.up()
    return stack


@pytest.fixture
async def standin(kaggle_standin: str) -> AsyncIterator[Callable[..., Any]]:
    """Calls the stand-in's control API; puts its faults back afterwards."""
    async with aiohttp.ClientSession() as session:

        async def control(method: str, path: str, **body: Any) -> Any:
            async with session.request(
                method, kaggle_standin + path, json=body or None
            ) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        try:
            yield control
        finally:
            await control("PUT", "/control", failureRate=0.0, latencyMs=0.0)


def stage_request(tenant: str, burn_rate: float = 0.4) -> KaggleStage:
    """A promotion's first stage, as the governor queues it."""
    tags = FinOpsTags(
        environment="test", tenant_id=tenant, cost_center="marketing", owner="qa", version="0.1.0"
    )
    return KaggleStage(
        competition_id=f"{tenant}-{uuid.uuid4().hex[:8]}",
        tenant=tenant,
        family="forecast",
        champion="balanced",
        scores={"balanced": 0.93, "aggressive": 0.81},
        evidence={"test": "msprt", "baseline": "aggressive"},
        burn_rate=burn_rate,
        flag_key=f"champion.{tenant}.forecast",
        sequence=1,
        tags=tags,
        requested_at_ms=int(time.time() * 1000),
    )


async def queue(settings: Settings, *stages: KaggleStage) -> None:
    """Produce `kaggle.sync` requests straight to lapverse-kaggle."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for stage in stages:
            cid = stage.competition_id
            event = envelope("kaggle.sync", f"{cid}:kaggle.sync", stage.tenant, stage, 0, "/test")
            await producer.send_and_wait(
                settings.topic(topics.KAGGLE), encode(event), key=cid.encode()
            )
    finally:
        await producer.stop()


def events_of(records: list[Any], competition_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(short type, data) of a competition's events, in order."""
    out = []
    for record in records:
        event = orjson.loads(record.value)
        if event["data"].get("competitionId") == competition_id:
            short = event["type"].removeprefix("io.lapverse.").removesuffix(".v1")
            out.append((short, event["data"]))
    return out


def seen(competition_id: str, short: str) -> Callable[[list[Any]], bool]:
    """Whether the records hold that competition's event of type `short`."""
    return lambda records: short in dict(events_of(records, competition_id))


async def test_without_credentials_each_stage_records_skipped(offline: Stack) -> None:
    request = stage_request("offline")
    await queue(offline.settings, request)

    cid = request.competition_id
    records = await read_topic(offline.settings, topics.KAGGLE, seen(cid, "kaggle.promote.skipped"))

    events = events_of(records, cid)
    assert [short for short, _ in events] == [
        "kaggle.sync",
        "kaggle.sync.skipped",
        "kaggle.evaluate",
        "kaggle.evaluate.skipped",
        "kaggle.promote",
        "kaggle.promote.skipped",
    ]
    outcomes = [data for short, data in events if short.count(".") == 2]
    assert [(o["stage"], o["reason"]) for o in outcomes] == [
        ("sync", NO_CREDENTIALS),
        ("evaluate", NO_CREDENTIALS),
        ("promote", NO_CREDENTIALS),
    ]
    assert all(o["tags"]["tenantId"] == "offline" for o in outcomes)


async def test_a_burn_rate_of_one_stops_the_pipeline_at_sync(offline: Stack) -> None:
    burning, barrier = stage_request("burning", burn_rate=1.25), stage_request("calm")
    await queue(offline.settings, burning, barrier)

    # the other promotion's three stages take three trips through the topic: by then a
    # wrongly queued evaluate of the burning one would have been answered too
    records = await read_topic(
        offline.settings, topics.KAGGLE, seen(barrier.competition_id, "kaggle.promote.skipped")
    )

    events = events_of(records, burning.competition_id)
    assert [short for short, _ in events] == ["kaggle.sync", "kaggle.sync.skipped"]
    assert events[1][1]["reason"] == "burn rate 1.25 ≥ 1"
    assert events[1][1]["attempts"] == 0


async def test_with_credentials_the_stand_in_stores_evaluates_and_the_merge_is_sent_on(
    online: Stack, standin: Callable[..., Any]
) -> None:
    await standin("PUT", f"/control/kernels/{KERNEL}", score=0.9)
    request = stage_request("acme")
    await queue(online.settings, request)

    cid = request.competition_id
    records = await read_topic(
        online.settings, topics.KAGGLE, seen(cid, "kaggle.promote.completed")
    )

    events = dict(events_of(records, cid))
    assert (
        events["kaggle.sync.completed"]["detail"]["dataset"] == f"{USERNAME}/lapverse-results-acme"
    )
    evaluated = events["kaggle.evaluate.completed"]
    assert evaluated["detail"] | {"attempts": evaluated["attempts"]} == {
        "kernel": KERNEL,
        "kernelStatus": "complete",
        "score": 0.9,
        "merge": True,
        "threshold": 0.85,
        "attempts": 1,
    }
    promoted = events["kaggle.promote.completed"]["detail"]
    assert promoted["instance"] == f"{USERNAME}/lapverse-champion/other/acme-forecast"

    # the merge is a command for the governor, which owns the champion flag (domain/rollout.py)
    merge_id = f"{cid}:merge"
    commands = await read_topic(
        online.settings,
        topics.CHAMPION_COMMANDS,
        lambda rs: any(orjson.loads(r.value)["id"] == merge_id for r in rs),
    )
    merge = next(orjson.loads(r.value) for r in commands if orjson.loads(r.value)["id"] == merge_id)
    assert merge["data"] | {"requestedAtMs": 0} == {
        "commandId": merge_id,
        "tenant": "acme",
        "family": "forecast",
        "action": "merge",
        "variant": "balanced",
        "sequence": 1,
        "actor": "kaggle",
        "reason": "Kaggle notebook score 0.9 ≥ the merge threshold",
        "requestedAtMs": 0,
    }

    state = await standin("GET", "/control/state")
    dataset = state["datasets"][f"{USERNAME}/lapverse-results-acme"]
    results_csv = dataset["versions"][-1]["files"]["results.csv"]["text"]
    assert f"{cid},acme,forecast,balanced,ok,0.93" in results_csv
    assert "- tenantId: acme" in dataset["versions"][-1]["metadata"]["description"]
    model = state["models"][f"{USERNAME}/lapverse-champion"]
    versions = model["instances"]["MODEL_FRAMEWORK_OTHER/acme-forecast"]["versions"]
    assert '"champion": "balanced"' in versions[-1]["files"]["champion.json"]["text"]


async def test_a_kaggle_outage_is_retried_then_failed_while_tasks_go_on(
    online: Stack, standin: Callable[..., Any]
) -> None:
    async with aiohttp.ClientSession() as session:
        api_key = await create_tenant(session, online, "busy")
        before = await standin("PUT", "/control", failureRate=1.0, latencyMs=1_500.0)
        request = stage_request("busy")
        await queue(online.settings, request)
        cid = request.competition_id

        # the sync keeps failing for over six seconds; a task is decided and run meanwhile
        status, _, raw = await post_task(
            session, online, api_key, "busy", task_body("busy", type="NOOP")
        )
        assert status == 202, raw
        task_id = orjson.loads(raw)["taskId"]
        await read_topic(
            online.settings,
            topics.TASK_RESULTS,
            lambda rs: any(orjson.loads(r.value)["data"]["taskId"] == task_id for r in rs),
        )
        so_far = await drain(online.settings, online.settings.topic(topics.KAGGLE))
        assert "kaggle.sync.failed" not in dict(events_of(so_far, cid))

    records = await read_topic(online.settings, topics.KAGGLE, seen(cid, "kaggle.sync.failed"))

    events = events_of(records, cid)
    assert [short for short, _ in events] == ["kaggle.sync", "kaggle.sync.failed"]
    failed = events[1][1]
    assert failed["attempts"] == 4
    assert "HTTP 503" in failed["reason"]
    assert "injected failure" in failed["reason"]
    after = await standin("GET", "/control")
    assert after["failures"] - before["failures"] == 4


async def test_an_undecodable_request_is_dead_lettered(offline: Stack) -> None:
    settings = offline.settings
    key = f"junk-{uuid.uuid4().hex[:8]}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topics.KAGGLE), b"{not json", key=key)
    finally:
        await producer.stop()

    dead = await read_topic(settings, topics.DLQ, lambda rs: any(r.key == key for r in rs))

    record = next(r for r in dead if r.key == key)
    assert record.value == b"{not json"
    headers = dict(record.headers)
    assert (headers["lapverse-dlq-agent"], headers["lapverse-dlq-reason"]) == (
        b"kaggle",
        b"not_json",
    )
