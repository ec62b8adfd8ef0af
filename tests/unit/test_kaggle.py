"""The Kaggle stages on the real `kaggle` client against the local stand-in of the Kaggle API.

In the TEST environment the client calls http://localhost:7777. Each test starts the stand-in
on a free port and routes the client there with HTTP_PROXY (requests honours it), so nothing
binds 7777. The client reads its environment when first imported and on every call, so each
test gives it a fresh HOME and the same key in KAGGLE_USERNAME/KAGGLE_KEY.
"""

from __future__ import annotations

import re
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lapverse_streams.clients.kaggle import (
    NO_CREDENTIALS,
    InMemoryKagglePipeline,
    KaggleApiKey,
    KaggleApiPipeline,
    KaggleRefused,
    KaggleTargets,
    KaggleUnavailable,
    results_csv,
    results_rows,
)
from lapverse_streams.standins.kaggle import RunningKaggleStandin, start_kaggle_standin

USERNAME, KEY = "lapverse", "test-kaggle-key"
TARGETS = KaggleTargets(owner_slug=USERNAME)
KERNEL = f"{USERNAME}/forecast-notebook"
TAGS = {
    "application": "lapverse-monitoring",
    "environment": "test",
    "tenantId": "acme",
    "costCenter": "marketing",
    "owner": "team-forecast",
    "version": "0.1.0",
}


def competition(competition_id: str = "c1", champion: str = "balanced") -> dict[str, Any]:
    """A competition.completed in wire form."""
    return {
        "competitionId": competition_id,
        "tenant": "acme",
        "family": "forecast",
        "scores": {"balanced": 0.91, "aggressive": 0.84},
        "variants": {
            "balanced": {"status": "ok", "score": 0.91, "costMicros": 1200, "durationMs": 40},
            "aggressive": {"status": "ok", "score": 0.84, "costMicros": 1100, "durationMs": 35},
            "experimental": {"status": "timeout", "costMicros": 900, "durationMs": 3000},
        },
        "champion": champion,
    }


@pytest.fixture(autouse=True)
def kaggle_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private HOME, config dir and temp dir, the key in the environment, no token, no proxy."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home))
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_API_ENVIRONMENT", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def route_client_to(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    """Send the client's http://localhost:7777 requests to `base_url`."""
    monkeypatch.setenv("HTTP_PROXY", base_url)
    monkeypatch.setenv("http_proxy", base_url)


@pytest.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningKaggleStandin]:
    """The stand-in on a free port, accepting only our key, with the client routed to it."""
    async with await start_kaggle_standin(credentials={USERNAME: KEY}) as running:
        route_client_to(monkeypatch, running.base_url)
        yield running


def pipeline(api_key: KaggleApiKey | None = None, timeout_s: float = 10) -> KaggleApiPipeline:
    """The real pipeline in the TEST environment."""
    key = api_key or KaggleApiKey(USERNAME, KEY)
    return KaggleApiPipeline(key, TARGETS, environment="TEST", timeout_s=timeout_s)


async def control(standin: RunningKaggleStandin, method: str, path: str, **body: Any) -> Any:
    """Call the stand-in's control API."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, standin.base_url + path, json=body or None) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def test_without_credentials_every_stage_is_skipped_and_nothing_is_sent(
    standin: RunningKaggleStandin,
) -> None:
    stages = KaggleApiPipeline(None, TARGETS, environment="TEST")

    outcomes = [
        await stages.sync(competition(), TAGS),
        await stages.evaluate(KERNEL),
        await stages.promote("balanced", tenant="acme", family="forecast", tags=TAGS),
    ]

    assert [(o.stage, o.status, o.reason) for o in outcomes] == [
        ("sync", "skipped", NO_CREDENTIALS),
        ("evaluate", "skipped", NO_CREDENTIALS),
        ("promote", "skipped", NO_CREDENTIALS),
    ]
    assert (await control(standin, "GET", "/control/state"))["requests"] == []


async def test_sync_creates_the_dataset_then_versions_it_with_csv_and_finops_tags(
    standin: RunningKaggleStandin,
) -> None:
    stages = pipeline()

    first = await stages.sync(competition("c1", "balanced"), TAGS)
    second = await stages.sync(competition("c2", "aggressive"), TAGS)

    ref = f"{USERNAME}/lapverse-results-acme"
    assert (first.status, first.detail["dataset"], first.detail["created"]) == (
        "completed",
        ref,
        True,
    )
    assert (second.status, second.detail["created"]) == ("completed", False)
    dataset = (await control(standin, "GET", "/control/state"))["datasets"][ref]
    assert dataset["isPrivate"] is True
    notes = [version["notes"] for version in dataset["versions"]]
    assert notes == ["Initial release", "competition c2: champion aggressive"]
    csv_text = dataset["versions"][-1]["files"]["results.csv"]["text"]
    assert csv_text == results_csv(results_rows(competition("c2", "aggressive")))
    assert csv_text.splitlines()[:2] == [
        "competition_id,tenant,family,variant,status,score,cost_micros,duration_ms,champion",
        "c2,acme,forecast,aggressive,ok,0.84,1100,35,True",
    ]
    for version in dataset["versions"]:
        for key, value in TAGS.items():
            assert f"- {key}: {value}" in version["metadata"]["description"]


@pytest.mark.parametrize(("score", "merge"), [(0.9, True), (0.85, True), (0.8, False)])
async def test_evaluate_reads_the_notebook_score_and_merges_from_0_85(
    standin: RunningKaggleStandin, score: float, merge: bool
) -> None:
    await control(standin, "PUT", f"/control/kernels/{KERNEL}", score=score)

    outcome = await pipeline().evaluate(KERNEL)

    assert outcome.status == "completed"
    assert outcome.detail == {
        "kernel": KERNEL,
        "kernelStatus": "complete",
        "score": score,
        "merge": merge,
        "threshold": 0.85,
    }


async def test_evaluate_fails_while_the_notebook_runs_and_is_refused_for_unknown_ones(
    standin: RunningKaggleStandin,
) -> None:
    await control(standin, "PUT", f"/control/kernels/{KERNEL}", status="RUNNING")

    running = await pipeline().evaluate(KERNEL)

    assert (running.status, running.reason) == ("failed", "notebook status is running")
    with pytest.raises(KaggleRefused, match=r"HTTP 404 .*not found"):
        await pipeline().evaluate(f"{USERNAME}/no-such-notebook")


async def test_promote_creates_model_and_instance_then_adds_versions(
    standin: RunningKaggleStandin,
) -> None:
    stages = pipeline()

    first = await stages.promote("balanced", tenant="acme", family="forecast", tags=TAGS)
    second = await stages.promote(
        "aggressive", tenant="acme", family="forecast", tags=TAGS, evidence={"test": "msprt"}
    )

    instance = f"{USERNAME}/lapverse-champion/other/acme-forecast"
    assert (first.status, first.detail["instance"], first.detail["created"]) == (
        "completed",
        instance,
        True,
    )
    assert (second.detail["version"], second.detail["created"]) == (f"{instance}/2", False)
    model = (await control(standin, "GET", "/control/state"))["models"][
        f"{USERNAME}/lapverse-champion"
    ]
    assert "- tenantId: acme" in model["description"]
    versions = model["instances"]["MODEL_FRAMEWORK_OTHER/acme-forecast"]["versions"]
    assert [v["notes"] for v in versions] == ["Initial version", "champion aggressive"]
    assert '"champion": "aggressive"' in versions[1]["files"]["champion.json"]["text"]


async def test_a_failing_kaggle_raises_unavailable_at_once_in_every_stage(
    standin: RunningKaggleStandin,
) -> None:
    await control(standin, "PUT", f"/control/kernels/{KERNEL}", score=0.9)
    await control(standin, "PUT", "/control", failureRate=1.0)
    stages = pipeline()

    with pytest.raises(KaggleUnavailable, match=r"HTTP 503 .*injected failure"):
        await stages.sync(competition(), TAGS)
    with pytest.raises(KaggleUnavailable, match=r"HTTP 503 .*injected failure"):
        await stages.evaluate(KERNEL)
    with pytest.raises(KaggleUnavailable, match=r"HTTP 503 .*injected failure"):
        await stages.promote("balanced", tenant="acme", family="forecast", tags=TAGS)

    assert (await control(standin, "GET", "/control/state"))["requests"] == [
        "POST /api/v1/datasets.DatasetApiService/GetDatasetStatus",
        "POST /api/v1/kernels.KernelsApiService/GetKernelSessionStatus",
        "POST /api/v1/models.ModelApiService/GetModelInstance",
    ]


async def test_a_slow_kaggle_raises_unavailable_at_the_deadline(
    standin: RunningKaggleStandin,
) -> None:
    await control(standin, "PUT", "/control", latencyMs=3_000)

    with pytest.raises(KaggleUnavailable, match=re.escape("no answer within 0.3 s")):
        await pipeline(timeout_s=0.3).evaluate(KERNEL)


async def test_an_unreachable_kaggle_raises_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    route_client_to(monkeypatch, f"http://127.0.0.1:{port}")

    # the client's own retries would sleep for minutes and hit the deadline instead
    with pytest.raises(KaggleUnavailable, match=r"ConnectionError"):
        await pipeline(timeout_s=5).evaluate(KERNEL)


async def test_a_wrong_key_is_refused(standin: RunningKaggleStandin) -> None:
    with pytest.raises(KaggleRefused, match=r"HTTP 401 .*wrong key"):
        await pipeline(KaggleApiKey(USERNAME, "wrong")).sync(competition(), TAGS)


async def test_the_in_memory_pipeline_skips_scores_and_goes_down() -> None:
    offline = InMemoryKagglePipeline(has_credentials=False)
    assert (await offline.sync(competition(), TAGS)).reason == NO_CREDENTIALS

    fake = InMemoryKagglePipeline(scores={KERNEL: 0.86})
    assert (await fake.evaluate(KERNEL)).detail["merge"] is True
    assert (await fake.sync(competition(), TAGS)).detail == {"version": 1}
    promoted = await fake.promote("balanced", tenant="acme", family="forecast", tags=TAGS)
    assert promoted.status == "completed"

    fake.available = False
    with pytest.raises(KaggleUnavailable):
        await fake.evaluate(KERNEL)
