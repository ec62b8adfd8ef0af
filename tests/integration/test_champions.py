"""Champions as a product, on a real broker: read them, watch the rollout, operate, consume.

Two tenants each run the 30 demo rounds that promote `conservative` (a 10 % canary). With a
step every 3 rounds, `arena` runs 6 more rounds at good burn and its rollout goes 10 → 50 →
100 %; `shaky` fails a few CHAOS tasks, its burn rate passes 1 and the governor's rollout
timer rolls its canary back. Then an operator pins and rolls back through the admin routes, a
replayed Kaggle merge of the first promotion changes nothing, the example consumer agrees
with the platform's flags, and hostile requests get clear 4xx problems.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from examples.champion_consumer import ChampionConsumer
from lapverse_streams.domain import champions, flags
from lapverse_streams.events import topics
from lapverse_streams.events.champion_models import ChampionCommand
from lapverse_streams.events.codec import header
from lapverse_streams.variants.forecast import demo_input
from tests.conftest import Stack
from tests.integration.helpers import (
    ADMIN,
    create_tenant,
    drain,
    post_task,
    produce_raw,
    read_topic,
    start_round,
    task_body,
    wait_round_completed,
)

pytestmark = pytest.mark.kafka

ROUND = {"content": "Monthly airline passengers", "platforms": [], "input": demo_input()}
PROMOTION_ROUNDS = 30  # the demo series: conservative wins every round, the 30th promotes it
KEYS = [f"request-{n}" for n in range(2000)]


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """A stack whose rollouts step every 3 rounds (never by time), looked at every 300 ms."""
    return stack_factory(
        LAPVERSE_CHAMPION_STEP_ROUNDS="3",
        LAPVERSE_CHAMPION_STEP_AFTER_MS="0",
        LAPVERSE_CHAMPION_TICK_INTERVAL_MS="300",
    ).up()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def auth(api_key: str, tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "X-Tenant-ID": tenant}


async def get_json(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, str, Any]:
    async with session.get(url, headers=headers) as r:
        return r.status, r.content_type, await r.json(content_type=None)


async def run_rounds(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, tenant: str, count: int
) -> None:
    """`count` demo rounds, four at a time, each until completed."""
    parallel = asyncio.Semaphore(4)

    async def one() -> None:
        async with parallel:
            round_id = await start_round(session, stack, api_key, tenant, ROUND)
            await wait_round_completed(session, stack, api_key, tenant, round_id, timeout_s=120)

    await asyncio.gather(*(one() for _ in range(count)))


async def champion_until(
    session: aiohttp.ClientSession,
    stack: Stack,
    api_key: str,
    tenant: str,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float = 60,
) -> dict[str, Any]:
    """Poll GET /api/v2/champions/forecast until `done(body)`."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        url = f"{stack.base_url}/api/v2/champions/forecast"
        status, _, body = await get_json(session, url, auth(api_key, tenant))
        if status == 200 and done(body):
            return dict(body)
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{tenant}: the champion never got there: {body}")


async def burn_until_rolled_back(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, tenant: str
) -> dict[str, Any]:
    """CHAOS tasks (they always fail) until the champion is rolled back by its burn rate."""
    url = f"{stack.base_url}/api/v2/champions/forecast"
    for _ in range(300):
        status, _, body = await get_json(session, url, auth(api_key, tenant))
        if status == 200 and body["state"] == "rolled-back":
            return dict(body)
        code, _, _ = await post_task(
            session, stack, api_key, tenant, task_body(tenant, type="CHAOS")
        )
        assert code in (202, 503)
        await asyncio.sleep(0.05 if code == 202 else 0.5)
    raise TimeoutError(f"{tenant}: never rolled back: {body}")


async def history(
    session: aiohttp.ClientSession, stack: Stack, api_key: str, tenant: str
) -> list[dict[str, Any]]:
    """Every champion event of the tenant's forecast family, oldest first, page by page."""
    items: list[dict[str, Any]] = []
    url: str | None = "/api/v2/champions/forecast/history?limit=2"
    while url is not None:
        status, _, page = await get_json(session, stack.base_url + url, auth(api_key, tenant))
        assert status == 200, page
        items.extend(page["items"])
        url = page["next"]
    return list(reversed(items))


async def admin(
    session: aiohttp.ClientSession, stack: Stack, tenant: str, action: str, **body: Any
) -> tuple[int, str, Any]:
    url = f"{stack.base_url}/admin/v1/tenants/{tenant}/champions/forecast/{action}"
    async with session.post(url, json=body, headers=ADMIN) as r:
        return r.status, r.content_type, await r.json(content_type=None)


async def test_champions_are_read_rolled_out_rolled_back_operated_and_consumed(
    session: aiohttp.ClientSession, stack: Stack
) -> None:
    settings = stack.settings
    consumer = ChampionConsumer(settings.bootstrap_servers, settings.topic_prefix)
    await consumer.start()
    try:
        await scenario(session, stack, consumer)
    finally:
        await consumer.stop()


async def scenario(
    session: aiohttp.ClientSession, stack: Stack, consumer: ChampionConsumer
) -> None:
    arena = await create_tenant(session, stack, "arena")
    shaky = await create_tenant(session, stack, "shaky")
    status, _, body = await get_json(
        session, f"{stack.base_url}/api/v2/champions", auth(arena, "arena")
    )
    assert (status, body) == (200, {"tenantId": "arena", "champions": []})

    # A challenger is promoted: a 10 % canary, with camelCase evidence.
    await asyncio.gather(
        run_rounds(session, stack, arena, "arena", PROMOTION_ROUNDS),
        run_rounds(session, stack, shaky, "shaky", PROMOTION_ROUNDS),
    )
    canary = await champion_until(session, stack, arena, "arena", lambda b: True)
    assert (canary["champion"], canary["state"], canary["rolloutPercent"]) == (
        "conservative",
        "canary",
        10,
    )
    assert canary["sequence"] == 1
    assert canary["links"] == {"history": "/api/v2/champions/forecast/history"}
    evidence = canary["promotion"]["evidence"]
    assert evidence["sample"]["minRounds"] == 30
    assert evidence["slo"]["burnRate"] < 1
    assert "winRates" in evidence
    status, _, listed = await get_json(
        session, f"{stack.base_url}/api/v2/champions", auth(arena, "arena")
    )
    assert [c["family"] for c in listed["champions"]] == ["forecast"]

    # Good burn: every 3 rounds the rollout steps up, to 100 %.
    await run_rounds(session, stack, arena, "arena", 3)
    await champion_until(session, stack, arena, "arena", lambda b: b["rolloutPercent"] == 50)
    await run_rounds(session, stack, arena, "arena", 3)
    full = await champion_until(session, stack, arena, "arena", lambda b: b["state"] == "full")
    assert (full["champion"], full["rolloutPercent"], full["sequence"]) == ("conservative", 100, 3)

    # Bad burn: shaky's failing tasks push its burn rate past 1; the rollout timer rolls back.
    rolled = await burn_until_rolled_back(session, stack, shaky, "shaky")
    assert (rolled["champion"], rolled["previous"], rolled["rolloutPercent"]) == (
        "aggressive",  # a first champion goes back to the variant it beat, the runner-up
        "conservative",
        100,
    )
    assert rolled["actor"] == "governor"
    assert rolled["reason"].startswith("burn rate")
    shaky_history = await history(session, stack, shaky, "shaky")
    assert [(e["type"], e["cause"]) for e in shaky_history] == [
        ("promoted", "promotion"),
        ("rolled-back", "burn-rate"),
    ]

    # The operator pins, then rolls back; both are in the history with who and why.
    status, _, pinned = await admin(
        session, stack, "arena", "pin", variant="balanced", actor="ops@example.com", reason="INC-7"
    )
    assert status == 200, pinned
    assert (pinned["status"], pinned["champion"], pinned["state"]) == (
        "applied",
        "balanced",
        "pinned",
    )
    status, _, back = await admin(
        session, stack, "arena", "rollback", actor="ops@example.com", reason="pin was wrong"
    )
    assert status == 200, back
    assert (back["champion"], back["state"], back["previous"]) == (
        "conservative",
        "rolled-back",
        "balanced",
    )
    status, kind, problem = await admin(session, stack, "arena", "rollback", actor="o", reason="r")
    assert (status, kind, problem["type"]) == (
        409,
        "application/problem+json",
        "https://lapverse.io/problems/nothing-to-roll-back",
    )

    # A replayed Kaggle merge of the first promotion changes nothing.
    stale_merge = ChampionCommand(
        command_id="arena-round-1:merge",
        tenant="arena",
        family="forecast",
        action="merge",
        variant="conservative",
        sequence=1,
        actor="kaggle",
        reason="Kaggle notebook score 0.9 ≥ the merge threshold",
        requested_at_ms=int(time.time() * 1000),
    )
    await produce_raw(
        stack.settings,
        topics.CHAMPION_COMMANDS,
        [champions.command_record(stale_merge, "/replay")] * 2,
    )
    # The pin after it is decided after it (one partition per tenant, in order).
    status, _, barrier = await admin(
        session, stack, "arena", "pin", variant="conservative", actor="ops", reason="barrier"
    )
    assert status == 200, barrier
    arena_history = await history(session, stack, arena, "arena")
    assert [(e["sequence"], e["type"], e["state"], e["rolloutPercent"]) for e in arena_history] == [
        (1, "promoted", "canary", 10),
        (2, "stepped", "ramping", 50),
        (3, "stepped", "full", 100),
        (4, "pinned", "pinned", 100),
        (5, "rolled-back", "rolled-back", 100),
        (6, "pinned", "pinned", 100),  # the barrier: the merges made no event between
    ]
    assert (arena_history[3]["actor"], arena_history[3]["reason"]) == ("ops@example.com", "INC-7")
    assert arena_history[4]["cause"] == "operator"

    # The example consumer follows and routes as the platform's flags do.
    await compare_with_the_platform(stack, consumer, {"arena": arena, "shaky": shaky}, session)

    await hostile_requests(session, stack, arena)


async def compare_with_the_platform(
    stack: Stack,
    consumer: ChampionConsumer,
    keys: dict[str, str],
    session: aiohttp.ClientSession,
) -> None:
    """The consumer's champion is the API's; its routing is the flag's on lapverse-flags."""
    latest: dict[str, dict[str, Any]] = {}
    for record in await drain(stack.settings, stack.settings.topic(topics.FLAGS)):
        event = orjson.loads(record.value)
        latest[event["data"]["flagKey"]] = event["data"]["definition"]
    for tenant, api_key in keys.items():
        current = await champion_until(session, stack, api_key, tenant, lambda b: True)
        flag_key = champions.champion_flag_key(tenant, "forecast")

        def caught_up(tenant: str = tenant, sequence: int = current["sequence"]) -> bool:
            known = consumer.champion(tenant, "forecast")
            return known is not None and known.sequence == sequence

        await consumer.wait_until(caught_up)
        known = consumer.champion(tenant, "forecast")
        assert known is not None
        assert (known.champion, known.state) == (current["champion"], current["state"])
        platform = [
            flags.evaluate(flag_key, latest[flag_key], tenant, targeting_key=key).value
            for key in KEYS
        ]

        def routes_alike(tenant: str = tenant, platform: list[Any] = platform) -> bool:
            return [consumer.variant_for(tenant, "forecast", k) for k in KEYS] == platform

        await consumer.wait_until(routes_alike)
        assert set(platform) == {current["champion"]}


async def hostile_requests(session: aiohttp.ClientSession, stack: Stack, arena: str) -> None:
    """Bad names, unknown tenants and another tenant's key: clear 4xx problems, never 5xx."""
    other = await create_tenant(session, stack, "other")
    base = stack.base_url
    cases = [
        ("GET", "/api/v2/champions/Bad..Family", auth(arena, "arena"), None, 400),
        ("GET", "/api/v2/champions/pricing", auth(arena, "arena"), None, 404),
        ("GET", "/api/v2/champions/forecast/history?limit=0", auth(arena, "arena"), None, 400),
        ("GET", "/api/v2/champions/forecast/history?before=x", auth(arena, "arena"), None, 400),
        ("GET", "/api/v2/champions/forecast", auth(other, "arena"), None, 403),
        ("GET", "/api/v2/champions/forecast", auth(other, "other"), None, 404),
        ("GET", "/api/v2/champions", {"X-Tenant-ID": "arena"}, None, 401),
        ("POST", "/admin/v1/tenants/nobody/champions/forecast/pin", ADMIN, PIN, 404),
        ("POST", "/admin/v1/tenants/..%2Fx/champions/forecast/pin", ADMIN, PIN, 400),
        ("POST", "/admin/v1/tenants/arena/champions/pricing/pin", ADMIN, PIN, 404),
        (
            "POST",
            "/admin/v1/tenants/arena/champions/forecast/pin",
            ADMIN,
            {**PIN, "variant": "x/y"},
            400,
        ),
        (
            "POST",
            "/admin/v1/tenants/arena/champions/forecast/pin",
            ADMIN,
            {**PIN, "variant": "prophet"},
            400,
        ),
        (
            "POST",
            "/admin/v1/tenants/arena/champions/forecast/pin",
            ADMIN,
            {"variant": "balanced"},
            400,
        ),
        ("POST", "/admin/v1/tenants/arena/champions/forecast/pin", auth(arena, "arena"), PIN, 401),
        ("POST", "/admin/v1/tenants/other/champions/forecast/unpin", ADMIN, OPERATOR, 409),
    ]
    for method, path, headers, body, expected in cases:
        async with session.request(method, base + path, headers=headers, json=body) as r:
            answer = await r.json(content_type=None)
            assert (r.status, r.content_type) == (expected, "application/problem+json"), (
                method,
                path,
                answer,
            )

    # A malformed command record goes to the dead-letter topic, by the governor's policy.
    marker = uuid.uuid4().hex.encode()
    await produce_raw(stack.settings, topics.CHAMPION_COMMANDS, [(b"arena", b"{" + marker)])
    dead = await read_topic(
        stack.settings, topics.DLQ, lambda rs: any(marker in (r.value or b"") for r in rs)
    )
    (letter,) = [r for r in dead if marker in (r.value or b"")]
    assert header(list(letter.headers), "lapverse-dlq-agent") == "governor"
    assert header(list(letter.headers), "lapverse-dlq-reason") == "not_json"


PIN = {"variant": "balanced", "actor": "ops", "reason": "test"}
OPERATOR = {"actor": "ops", "reason": "test"}
