"""Variant runners: one variant.result per variant.run, within its deadline (joiner: joiner.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import faust
from opentelemetry import trace

from agents.joiner import register_joiner
from agents.records import check_routing, consumed
from lapverse_streams.clock import now_ms
from lapverse_streams.events.codec import (
    Headers,
    PoisonMessage,
    decode,
    encode_event,
    parse_data,
)
from lapverse_streams.events.deadletter import Consumed, DeadLetters
from lapverse_streams.events.models import VariantResultEvent, VariantRun
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.observability.tracing import consumer_span, inject_headers
from lapverse_streams.variants.base import FamilyInputError, VariantFamily

if TYPE_CHECKING:
    from agents.app import Worker

__all__ = ["VariantRunner", "parse_run", "register_joiner", "register_runner"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lapverse.tournament")
SOURCE = "/lapverse/tournament"
AGENT = "variant-runner"
UNKNOWN = "unknown"  # the metric label of a family or variant that is not installed

SendResult = Callable[[bytes, bytes, Headers], Awaitable[None]]  # (key, value, headers)


def parse_run(record: Consumed) -> VariantRun:
    """A variant.run whose key, subject and tenant agree; raises PoisonMessage otherwise."""
    event, short = decode(record.value)
    if short != "variant.run":
        raise PoisonMessage("unknown_type", f"{event.type} is not a variant.run")
    run = parse_data(event, VariantRun)
    check_routing(record, event, run.competition_id, run.tenant, run.tags)
    if run.variant not in run.competitors:
        raise PoisonMessage("wrong_schema", f"variant {run.variant!r} is not a competitor")
    return run


class VariantRunner:
    """Runs each variant of a batch concurrently; a record that fails is dead-lettered."""

    def __init__(
        self,
        families: Mapping[str, VariantFamily],
        send_result: SendResult,
        dead_letters: DeadLetters,
        metrics: Metrics,
    ) -> None:
        self.families = families
        self.send_result = send_result
        self.dead_letters = dead_letters
        self.metrics = metrics

    async def process(self, records: list[Consumed]) -> None:
        """Run the batch's variants concurrently; no record's failure touches the others."""
        await asyncio.gather(*(self.take(record) for record in records))

    async def take(self, record: Consumed) -> None:
        """Run one record's variant and send its result, or dead-letter the record."""
        with consumer_span(tracer, "run variant", record.headers) as span:
            try:
                run = parse_run(record)
                span.set_attributes(
                    {
                        "lapverse.competition_id": run.competition_id,
                        "lapverse.tenant": run.tenant,
                        "lapverse.family": run.family,
                        "lapverse.variant": run.variant,
                    }
                )
                await self.run_one(run, inject_headers())
            except Exception as exc:  # one record's failure is that record's alone
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                await self.dead_letters.failed(AGENT, record, exc)

    async def run_one(self, run: VariantRun, trace_headers: Headers) -> None:
        """Run the variant (a failing variant is a `failed` result) and send its result."""
        started = time.monotonic()
        status, score, output, error = "failed", None, None, None
        family = self.families.get(run.family)
        try:
            if family is None:
                raise FamilyInputError("family", f"family {run.family!r} is not installed")
            remaining_s = (run.deadline_ms - now_ms()) / 1000
            if remaining_s <= 0:
                raise TimeoutError
            normalized = family.validate_input(run.input)
            outcome = await asyncio.wait_for(family.run(run.variant, normalized), remaining_s)
            status, score, output = "ok", outcome.score, outcome.output
        except TimeoutError:
            status, error = "timeout", "deadline passed before the variant finished"
        except Exception as exc:  # a variant may fail in any way; the round goes on without it
            error = f"{type(exc).__name__}: {exc}"
            log.warning("variant failed", extra={"competitionId": run.competition_id})
        result = VariantResultEvent(
            competition_id=run.competition_id,
            tenant=run.tenant,
            family=run.family,
            variant=run.variant,
            competitors=run.competitors,
            deadline_ms=run.deadline_ms,
            status=status,  # type: ignore[arg-type]
            score=score,
            cost_micros=run.cost_micros if status != "timeout" else 0,
            duration_ms=int((time.monotonic() - started) * 1000),
            output=output,
            error=error,
            tags=run.tags,
            finished_at_ms=now_ms(),
        )
        span = trace.get_current_span()
        span.set_attribute("lapverse.status", status)
        if status != "ok":
            span.set_status(trace.StatusCode.ERROR, error)
        event_id = f"{run.competition_id}:{run.variant}:result"
        event = encode_event("variant.result", event_id, run.tenant, result, now_ms(), SOURCE)
        await self.send_result(run.competition_id.encode(), event, trace_headers)
        family_label, variant_label = self.labels(run)
        self.metrics.variant_runs.labels(family_label, variant_label, status).inc()
        if score is not None:
            self.metrics.variant_score.labels(family_label, variant_label).observe(score)

    def labels(self, run: VariantRun) -> tuple[str, str]:
        """Metric labels of a run: only installed families and their variants name a series."""
        family = self.families.get(run.family)
        if family is None:
            return UNKNOWN, UNKNOWN
        return run.family, run.variant if run.variant in family.variants else UNKNOWN


def register_runner(
    worker: Worker,
    runs: faust.TopicT,
    results: faust.TopicT,
    families: dict[str, VariantFamily],
) -> None:
    """Attach the variant runner: one variant.result per variant.run, within its deadline."""
    settings = worker.settings

    async def send_result(key: bytes, value: bytes, headers: Headers) -> None:
        await results.send(key=key, value=value, headers=headers, force=True)

    runner = VariantRunner(families, send_result, worker.dead_letters, worker.metrics)

    @worker.app.agent(runs, name=AGENT)
    async def runner_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_window_s):
            await runner.process([consumed(e.message) for e in events])
