"""Executor agent: runs accepted tasks through their handler plug-ins, with retries."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import faust

from lapverse_streams.clock import now_ms
from lapverse_streams.domain.batch import REPLAYED, REPLY_ONLY, Inbound
from lapverse_streams.domain.governor import dead_letter
from lapverse_streams.domain.retry import backoff_ms
from lapverse_streams.events.codec import (
    Headers,
    PoisonMessage,
    decode,
    encode,
    envelope,
    header,
    parse_data,
    trace_of,
)
from lapverse_streams.events.models import TaskDecision, TaskResult, TaskStarted
from lapverse_streams.handlers.base import TaskHandler

if TYPE_CHECKING:
    from agents.app import Worker

log = logging.getLogger(__name__)
SOURCE = "/lapverse/executor"


def register(
    worker: Worker,
    decisions: faust.TopicT,
    results: faust.TopicT,
    progress: faust.TopicT,
    dlq: faust.TopicT,
    handlers: dict[str, TaskHandler],
) -> None:
    """Attach the executor agent to the app."""
    settings = worker.settings

    async def execute(decision: TaskDecision) -> tuple[bytes, bytes]:
        request = decision.request
        handler = handlers.get(request.type)
        started = time.monotonic()
        attempts, error, outcome = 0, None, None
        while attempts < settings.retry_attempts + 1 and handler is not None:
            attempts += 1
            try:
                outcome = await handler.run(request)
                break
            except Exception as exc:  # a handler may fail in any way; each failure is retried
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "task attempt failed", extra={"taskId": decision.task_id, "attempt": attempts}
                )
                if attempts <= settings.retry_attempts:
                    await asyncio.sleep(backoff_ms(attempts, settings.retry_base_ms) / 1000)
        if handler is None:
            error = f"no handler for task type {request.type!r}"
        duration = int((time.monotonic() - started) * 1000)
        completed = outcome is not None
        cost = decision.cost_estimate_micros
        if outcome is not None and outcome.cost_micros is not None:
            cost = outcome.cost_micros
        result = TaskResult(
            task_id=decision.task_id,
            status="completed" if completed else "failed",
            type=request.type,
            cost_center=request.cost_center,
            duration_ms=duration,
            attempts=attempts,
            cost_micros=cost if completed else 0,
            result=outcome.result if outcome else None,
            error=None if completed else error,
            tags=decision.tags,
            finished_at_ms=now_ms(),
        )
        short = "task.completed" if completed else "task.failed"
        event = envelope(
            short, f"{decision.task_id}:result", request.tenant, result, now_ms(), SOURCE
        )
        return request.tenant.encode(), encode(event)

    async def run_and_report(decision: TaskDecision, trace: Headers, message: Any) -> None:
        request = decision.request
        started = TaskStarted(
            task_id=decision.task_id,
            type=request.type,
            cost_center=request.cost_center,
            tags=decision.tags,
            started_at_ms=now_ms(),
        )
        note = envelope(
            "task.started", f"{decision.task_id}:started", request.tenant, started, now_ms(), SOURCE
        )
        await progress.send(
            key=request.tenant.encode(),
            value=encode(note),
            headers=trace,
            force=True,
        )
        key, value = await execute(decision)
        await results.send(key=key, value=value, headers=trace, force=True)
        event, short = decode(value)
        if short == "task.failed":  # retries exhausted: the decision goes to the DLQ too
            cause = str(event.data.get("error") or "failed")
            inbound = Inbound(
                "executor",
                message.partition,
                message.offset,
                message.key,
                message.value,
                list(message.headers or ()),
            )
            letter = dead_letter(inbound, "handler_failed", cause)
            await dlq.send(key=letter.key, value=letter.value, headers=letter.headers, force=True)
            worker.metrics.dlq.labels("executor", "handler_failed").inc()

    @worker.app.agent(decisions, name="executor")
    async def executor_agent(stream: Any) -> None:
        # Tasks run in the background so one task's retries never hold up the partition. A
        # task in flight when the worker dies is not lost: its offset may be committed, but
        # the governor re-sends the decision of any accepted task whose result is overdue.
        running: set[asyncio.Task[None]] = set()
        try:
            async for events in stream.take_events(
                settings.batch_max, settings.batch_within_ms / 1000
            ):
                for e in events:
                    hdrs = list(e.message.headers or ())
                    if header(hdrs, REPLAYED) or header(hdrs, REPLY_ONLY):
                        continue
                    try:
                        event, short = decode(e.message.value)
                        if short != "task.accepted":
                            continue
                        decision = parse_data(event, TaskDecision)
                    except PoisonMessage as exc:
                        log.error("undecodable decision skipped", extra={"reason": exc.reason})
                        continue
                    while len(running) >= settings.executor_concurrency:
                        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    task = asyncio.create_task(run_and_report(decision, trace_of(hdrs), e.message))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
