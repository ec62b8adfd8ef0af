"""Kaggle agent: runs each promotion's sync, evaluate and promote stages, apart from the governor.

Every `kaggle.<stage>` request on lapverse-kaggle yields one `kaggle.<stage>.<status>` outcome
there, and possibly the next stage's request; a merged evaluation also sends a `merge` command
for its promotion to lapverse-champion-commands, where the governor decides the rollout.
Kaggle trouble only ever delays this agent, never tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
from opentelemetry import trace

from agents.records import check_routing, consumed
from lapverse_streams.clients.breaker import CircuitBreaker, RequestRefused, ServiceFailure
from lapverse_streams.clients.kaggle import (
    KaggleApiKey,
    KaggleApiPipeline,
    KagglePipeline,
    KaggleTargets,
    Stage,
    StageOutcome,
)
from lapverse_streams.clock import now_ms
from lapverse_streams.domain.batch import Outbound
from lapverse_streams.domain.kaggle_stages import (
    burn_gate,
    requested_stage,
    stage_outputs,
    without_kernel,
)
from lapverse_streams.domain.retry import backoff_ms
from lapverse_streams.events.champion_models import KaggleStage
from lapverse_streams.events.codec import PoisonMessage, decode, parse_data
from lapverse_streams.events.deadletter import Consumed, DeadLetters
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.observability.services import ServiceMetrics
from lapverse_streams.observability.tracing import consumer_span, inject_headers
from lapverse_streams.settings import Settings

if TYPE_CHECKING:
    from agents.app import Worker

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lapverse.kaggle")
SERVICE = "kaggle"  # the service's name, and the agent's
Send = Callable[[Outbound], Awaitable[None]]


def build_pipeline(settings: Settings) -> KaggleApiPipeline:
    """The real pipeline; every stage is skipped while no credentials are set."""
    api_key = KaggleApiKey.parse(settings.kaggle_username, settings.kaggle_key)
    if api_key is not None and not settings.kaggle_kernel:
        log.warning("Kaggle credentials set but no LAPVERSE_KAGGLE_KERNEL: evaluate is skipped")
    return KaggleApiPipeline(
        api_key,
        KaggleTargets(owner_slug=settings.kaggle_owner or settings.kaggle_username),
        environment=settings.kaggle_environment,
        timeout_s=settings.kaggle_timeout_ms / 1000,
    )


def build_breaker(settings: Settings, metrics: Metrics) -> CircuitBreaker:
    """The breaker in front of every Kaggle call, reporting to the service metrics."""
    observer = ServiceMetrics(metrics)
    observer.watch(SERVICE)
    return CircuitBreaker(
        SERVICE,
        failure_threshold=settings.kaggle_failure_threshold,
        reset_timeout_ms=settings.kaggle_reset_timeout_ms,
        observer=observer,
    )


@dataclass(frozen=True)
class StageRunner:
    """Runs one stage through the burn-rate gate, the breaker and the retries; never raises."""

    pipeline: KagglePipeline
    breaker: CircuitBreaker
    kernel: str
    has_credentials: bool
    retry_attempts: int
    retry_base_ms: int

    @classmethod
    def from_settings(
        cls, settings: Settings, pipeline: KagglePipeline, breaker: CircuitBreaker
    ) -> StageRunner:
        """A runner with the kernel and the retry schedule of `settings`."""
        return cls(
            pipeline,
            breaker,
            settings.kaggle_kernel,
            bool(settings.kaggle_username and settings.kaggle_key),
            settings.retry_attempts,
            settings.retry_base_ms,
        )

    async def run(self, stage: Stage, data: KaggleStage) -> tuple[StageOutcome, int]:
        """The stage's outcome and how many calls it took."""
        gate = burn_gate(data.burn_rate)
        if gate is not None:
            return StageOutcome(stage, "skipped", gate), 0
        if stage == "evaluate" and not self.kernel:
            return without_kernel(self.has_credentials), 0
        return await self._attempt(stage, self._call(stage, data))

    def _call(self, stage: Stage, data: KaggleStage) -> Callable[[], Awaitable[StageOutcome]]:
        tags = data.tags.model_dump(mode="json", by_alias=True)
        if stage == "sync":
            competition = data.model_dump(mode="json", by_alias=True)
            return lambda: self.pipeline.sync(competition, tags)
        if stage == "evaluate":
            return lambda: self.pipeline.evaluate(self.kernel)
        return lambda: self.pipeline.promote(
            data.champion, tenant=data.tenant, family=data.family, tags=tags, evidence=data.evidence
        )

    async def _attempt(
        self, stage: Stage, call: Callable[[], Awaitable[StageOutcome]]
    ) -> tuple[StageOutcome, int]:
        """Retry while Kaggle is unavailable or the breaker open; a refusal is final."""
        attempts, cause = 0, ""
        while attempts <= self.retry_attempts:
            attempts += 1
            try:
                outcome, error = await self._guarded(call)
            except Exception as exc:  # neither an answer nor an outage: a bug or bad data
                log.exception("kaggle %s crashed", stage)
                return StageOutcome(stage, "failed", f"{type(exc).__name__}: {exc}"), attempts
            if outcome is not None:
                return outcome, attempts
            if isinstance(error, RequestRefused):
                return StageOutcome(stage, "failed", str(error)), attempts
            cause = str(error) if error else f"the {SERVICE} circuit breaker is open"
            if attempts <= self.retry_attempts:
                await asyncio.sleep(backoff_ms(attempts, self.retry_base_ms) / 1000)
        return StageOutcome(stage, "failed", cause), attempts

    async def _guarded(
        self, call: Callable[[], Awaitable[StageOutcome]]
    ) -> tuple[StageOutcome | None, Exception | None]:
        """One call through the breaker: its outcome, or the service's error (None: rejected)."""
        errors: list[Exception] = []

        async def operation() -> StageOutcome | None:
            try:
                return await call()
            except (ServiceFailure, RequestRefused) as exc:
                errors.append(exc)
                raise

        outcome = await self.breaker.call(operation, lambda: None)
        return outcome, (errors[-1] if errors else None)


def parse_stage(record: Consumed) -> tuple[Stage, KaggleStage] | None:
    """The stage a record requests; None for outcomes (ours, passing by); raises if bad."""
    event, short = decode(record.value)
    stage = requested_stage(short)
    if stage is None:
        if short.startswith("kaggle."):
            return None
        raise PoisonMessage("unknown_type", f"{event.type} is not a stage")
    data = parse_data(event, KaggleStage)
    check_routing(record, event, data.competition_id, data.tenant, data.tags)
    return stage, data


class KaggleAgent:
    """Runs each requested stage and sends what it yields; a record that fails is dead-lettered."""

    def __init__(
        self, runner: StageRunner, send: Send, dead_letters: DeadLetters, metrics: Metrics
    ) -> None:
        self.runner = runner
        self.send = send
        self.dead_letters = dead_letters
        self.metrics = metrics

    async def process(self, records: list[Consumed]) -> None:
        """Run the batch's stages concurrently: one slow stage must not hold up the others."""
        await asyncio.gather(*(self.take(record) for record in records))

    async def take(self, record: Consumed) -> None:
        """Run one record's stage and send its outputs in order, or dead-letter the record."""
        try:
            request = parse_stage(record)
        except Exception as exc:  # one record's failure is that record's alone
            with consumer_span(tracer, "kaggle stage", record.headers) as span:
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                await self.dead_letters.failed(SERVICE, record, exc)
            return
        if request is None:  # an outcome: no span, the stage that sent it has one
            return
        stage, data = request
        attributes = {
            "lapverse.competition_id": data.competition_id,
            "lapverse.tenant": data.tenant,
            "lapverse.family": data.family,
            "lapverse.stage": stage,
        }
        with consumer_span(tracer, f"kaggle {stage}", record.headers, attributes) as span:
            try:
                outcome, outputs = await self.run(stage, data)
                span.set_attribute("lapverse.status", outcome.status)
                for out in outputs:  # the next stage continues this span's trace
                    await self.send(dataclasses.replace(out, headers=inject_headers(out.headers)))
                if outcome.status == "failed":  # retries ran out: the request goes to the DLQ too
                    span.set_status(trace.StatusCode.ERROR, outcome.reason)
                    cause = outcome.reason or "failed"
                    await self.dead_letters.put(SERVICE, record, "stage_failed", cause)
            except Exception as exc:  # one record's failure is that record's alone
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                await self.dead_letters.failed(SERVICE, record, exc)

    async def run(self, stage: Stage, data: KaggleStage) -> tuple[StageOutcome, list[Outbound]]:
        """The stage's outcome, and what it yields."""
        outcome, attempts = await self.runner.run(stage, data)
        self.metrics.kaggle_stages.labels(stage, outcome.status).inc()
        log.log(
            logging.WARNING if outcome.status == "failed" else logging.INFO,
            "kaggle stage %s %s",
            stage,
            outcome.status,
            extra={"competitionId": data.competition_id, "reason": outcome.reason},
        )
        return outcome, stage_outputs(stage, data, outcome, attempts, now_ms())


def register(
    worker: Worker,
    requests: faust.TopicT,
    commands: faust.TopicT,
    pipeline: KagglePipeline,
    breaker: CircuitBreaker,
) -> None:
    """Attach the Kaggle agent; it reads stage requests from and writes outcomes to `requests`.

    Records it cannot handle go through `worker.dead_letters`.
    """
    settings = worker.settings
    sinks = {"kaggle": requests, "commands": commands}

    async def send(out: Outbound) -> None:
        await sinks[out.sink].send(key=out.key, value=out.value, headers=out.headers, force=True)

    agent = KaggleAgent(
        StageRunner.from_settings(settings, pipeline, breaker),
        send,
        worker.dead_letters,
        worker.metrics,
    )

    @worker.app.agent(requests, name=SERVICE)
    async def kaggle_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_window_s):
            await agent.process([consumed(e.message) for e in events])
