"""Executor agent: runs accepted tasks through their handler plug-ins, fairly between tenants."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust
from opentelemetry import trace

from agents.records import check_routing, consumed
from agents.transactions import Produce, hand_over
from lapverse_streams.clock import now_ms
from lapverse_streams.domain.batch import REPLAYED, REPLY_ONLY
from lapverse_streams.domain.fair_queue import FairQueue
from lapverse_streams.domain.retry import backoff_ms
from lapverse_streams.events.codec import (
    Headers,
    PoisonMessage,
    decode,
    encode_event,
    header,
    parse_data,
)
from lapverse_streams.events.deadletter import Consumed, DeadLetters
from lapverse_streams.events.models import TaskDecision, TaskResult, TaskStarted
from lapverse_streams.handlers.base import Outcome, TaskHandler
from lapverse_streams.observability.tracing import consumer_span, inject_headers

if TYPE_CHECKING:
    from agents.app import Worker

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lapverse.executor")
SOURCE = "/lapverse/executor"
AGENT = "executor"
# Decisions that are not work for the executor: they share its topic and pass it by.
NOT_WORK = frozenset({"task.rejected", "competition.accepted", "competition.rejected"})

Send = Callable[[bytes, bytes, Headers], Awaitable[None]]  # (key, value, headers)


@dataclass(frozen=True)
class Job:
    """An accepted task waiting for, or holding, an executor slot."""

    decision: TaskDecision
    record: Consumed

    @property
    def tenant(self) -> str:
        """Whose slot the task takes."""
        return self.decision.request.tenant


@dataclass(frozen=True)
class Retries:
    """How often a failing handler is retried, and the base of the exponential backoff."""

    attempts: int
    base_ms: int


class Executor:
    """Takes decision records one by one and runs each accepted task in the background.

    A task takes one of `slots`, at most `per_tenant` per tenant; the rest wait per tenant and
    start round-robin as slots free up (`FairQueue`). A task's offset may be committed before
    it finishes, so one task's retries never hold up the partition. A task still waiting or
    running when the executor stops (a clean stop or a crash) is not lost: the governor keeps
    the reservation of every accepted task without a result and re-sends its decision once the
    result is overdue (`redrive_after_ms`), and the next owner of the partition runs it then.
    """

    def __init__(
        self,
        handlers: Mapping[str, TaskHandler],
        retries: Retries,
        slots: FairQueue[Job],
        send_progress: Send,
        send_result: Send,
        dead_letters: DeadLetters,
    ) -> None:
        self.handlers = handlers
        self.retries = retries
        self.slots = slots
        self.send_progress = send_progress
        self.send_result = send_result
        self.dead_letters = dead_letters
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def take(self, record: Consumed) -> None:
        """Queue the record's task; dead-letter a record that is not a valid decision."""
        try:
            decision = self.accepted(record)
        except Exception as exc:  # any failure of one record is that record's alone
            await self.dead_letters.failed(AGENT, record, exc)
            return
        if decision is not None:
            for job in self.slots.offer(decision.request.tenant, Job(decision, record)):
                self._start(job)

    def accepted(self, record: Consumed) -> TaskDecision | None:
        """The task to run, None for a decision that is not work; raises for a bad record."""
        if header(record.headers, REPLAYED) or header(record.headers, REPLY_ONLY):
            return None  # a reply to a repeated request, not work (the task ran or will run)
        event, short = decode(record.value)
        if short in NOT_WORK:
            return None
        if short != "task.accepted":
            raise PoisonMessage("unknown_type", f"{event.type} does not belong on the decisions")
        decision = parse_data(event, TaskDecision)
        if decision.status != "accepted":
            raise PoisonMessage("wrong_schema", "a task.accepted decision must be accepted")
        tenant = decision.request.tenant
        check_routing(record, event, tenant, tenant, decision.tags)
        return decision

    async def stop(self) -> None:
        """Cancel running tasks and forget waiting ones; the governor's redrive reruns both."""
        self._stopping = True
        waiting = self.slots.drain()
        if waiting or self._running:
            log.warning(
                "executor stopped with tasks left to the redrive",
                extra={"waiting": len(waiting), "running": len(self._running)},
            )
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, job: Job) -> None:
        request = job.decision.request
        attributes = {
            "lapverse.task_id": job.decision.task_id,
            "lapverse.task_type": request.type,
            "lapverse.tenant": request.tenant,
        }
        try:
            with consumer_span(tracer, "execute task", job.record.headers, attributes):
                try:
                    await self.run_and_report(job)
                except Exception as exc:  # e.g. a result that cannot be sent: the redrive reruns it
                    await self.dead_letters.failed(AGENT, job.record, exc)
        finally:
            if not self._stopping:
                for following in self.slots.finished(job.tenant):
                    self._start(following)

    async def run_and_report(self, job: Job) -> None:
        """Announce the task, run it, send its result; dead-letter it when retries ran out."""
        decision, request = job.decision, job.decision.request
        trace_headers = inject_headers()  # what the task causes continues the current span
        started = TaskStarted(
            task_id=decision.task_id,
            type=request.type,
            cost_center=request.cost_center,
            tags=decision.tags,
            started_at_ms=now_ms(),
        )
        note = encode_event(
            "task.started", f"{decision.task_id}:started", request.tenant, started, now_ms(), SOURCE
        )
        await self.send_progress(request.tenant.encode(), note, trace_headers)
        result = await self.execute(decision)
        span = trace.get_current_span()
        span.set_attributes(
            {"lapverse.outcome": result.status, "lapverse.attempts": result.attempts}
        )
        if result.status == "failed":
            span.set_status(trace.StatusCode.ERROR, result.error)
        log.info(
            "task %s",
            result.status,
            extra={
                "taskId": decision.task_id,
                "type": request.type,
                "attempts": result.attempts,
                "durationMs": result.duration_ms,
            },
        )
        short = f"task.{result.status}"
        event = encode_event(
            short, f"{decision.task_id}:result", request.tenant, result, now_ms(), SOURCE
        )
        await self.send_result(request.tenant.encode(), event, trace_headers)
        if result.status == "failed":  # retries exhausted: the decision goes to the DLQ too
            cause = result.error or "failed"
            await self.dead_letters.put(AGENT, job.record, "handler_failed", cause)

    async def execute(self, decision: TaskDecision) -> TaskResult:
        """Run the handler with retries; the result says completed or why it failed."""
        request = decision.request
        handler = self.handlers.get(request.type)
        started = time.monotonic()
        attempts, error = 0, f"no handler for task type {request.type!r}"
        while handler is not None and attempts < self.retries.attempts + 1:
            attempts += 1
            try:
                outcome = await handler.run(request)
                # an outcome that cannot be a result fails the attempt like any handler error
                return _checked(_result(decision, started, attempts, outcome, None))
            except Exception as exc:  # a handler may fail in any way; each failure is retried
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "task attempt failed", extra={"taskId": decision.task_id, "attempt": attempts}
                )
                if attempts <= self.retries.attempts:
                    await asyncio.sleep(backoff_ms(attempts, self.retries.base_ms) / 1000)
        return _result(decision, started, attempts, None, error)


def _result(
    decision: TaskDecision,
    started: float,
    attempts: int,
    outcome: Outcome | None,
    error: str | None,
) -> TaskResult:
    """The task's result: completed with the handler's outcome, or failed with the error."""
    cost = decision.cost_estimate_micros
    if outcome is not None and outcome.cost_micros is not None:
        cost = outcome.cost_micros
    return TaskResult(
        task_id=decision.task_id,
        status="completed" if outcome is not None else "failed",
        type=decision.request.type,
        cost_center=decision.request.cost_center,
        duration_ms=int((time.monotonic() - started) * 1000),
        attempts=attempts,
        cost_micros=cost if outcome is not None else 0,
        result=outcome.result if outcome is not None else None,
        error=error,
        tags=decision.tags,
        finished_at_ms=now_ms(),
    )


def _checked(result: TaskResult) -> TaskResult:
    """The result, once it is known to serialize (a handler may return anything)."""
    result.model_dump(mode="json")
    return result


def _log_failed_delivery(delivery: Any) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("executor output not delivered", exc_info=delivery.exception())


def register(
    worker: Worker,
    decisions: faust.TopicT,
    results: faust.TopicT,
    progress: faust.TopicT,
    handlers: dict[str, TaskHandler],
) -> None:
    """Attach the executor agent to the app (dead letters go through `worker.dead_letters`)."""
    settings = worker.settings

    def sender(topic: faust.TopicT) -> Send:
        """Hand a record straight to the producer (partitioned by key, like Faust's send).

        Delivery is not awaited, as with Faust's `send(force=True)` before: a result that is
        lost is covered by the governor's redrive, and a failed delivery is logged.
        """
        name = topic.get_topic_name()

        async def send(key: bytes, value: bytes, headers: Headers) -> None:
            (delivery,) = await hand_over(worker.app, [Produce(name, key, value, headers)])
            asyncio.ensure_future(delivery).add_done_callback(_log_failed_delivery)

        return send

    send_progress, send_result = sender(progress), sender(results)

    @worker.app.agent(decisions, name=AGENT)
    async def executor_agent(stream: Any) -> None:
        executor = Executor(
            handlers,
            Retries(settings.retry_attempts, settings.retry_base_ms),
            FairQueue(settings.executor_concurrency, settings.executor_tenant_concurrency),
            send_progress,
            send_result,
            worker.dead_letters,
        )
        try:
            async for events in stream.take_events(settings.batch_max, settings.batch_window_s):
                for e in events:
                    await executor.take(consumed(e.message))
        finally:
            await executor.stop()
