"""POST /api/v2/tasks:batch: up to 100 tasks written as one produce batch, answered with a 207.

Each task carries its own `idempotencyKey` and gets the answer a single POST /api/v2/tasks
would give (status, headers, body), in the order of the request.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry import trace

from lapverse_streams.clock import now_ms
from lapverse_streams.domain import idempotency
from lapverse_streams.domain.batch import REQUEST_ID
from lapverse_streams.events import topics
from lapverse_streams.events.codec import encode_event
from lapverse_streams.events.models import FinOpsTags, TaskRequested, TenantConfig
from lapverse_streams.gateway.auth import authenticate_tenant
from lapverse_streams.gateway.bridge import BrokerUnavailable, Reply, Request
from lapverse_streams.gateway.inputs import read_json
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.gateway.rate_limits import with_policy
from lapverse_streams.gateway.routes import (
    SOURCE,
    Answer,
    Routes,
    broker_unavailable,
    in_progress,
    pending_task,
    task_answer,
    task_location,
)
from lapverse_streams.observability.tracing import inject_headers

MAX_BATCH_TASKS = 100
KEY_FIELD = "idempotencyKey"
REPLAYED_HEADER = "Idempotent-Replayed"
tracer = trace.get_tracer("lapverse.gateway")


def batch_items(body: Any) -> list[Any]:
    """The tasks of a batch body, or the 400 problem of a malformed batch (nothing is sent)."""
    if not isinstance(body, list):
        raise Problem(400, "invalid-batch", "the body must be a JSON array of tasks")
    if not 1 <= len(body) <= MAX_BATCH_TASKS:
        detail = f"a batch holds 1 to {MAX_BATCH_TASKS} tasks, not {len(body)}"
        raise Problem(400, "invalid-batch", detail, maxItems=MAX_BATCH_TASKS)
    keys = Counter(_text(item.get(KEY_FIELD)) for item in body if isinstance(item, dict))
    repeated = sorted(k for k, n in keys.items() if n > 1 and k is not None)
    if repeated:
        shown = ", ".join(repr(k) for k in repeated[:5])
        detail = f"{KEY_FIELD} must be unique within a batch; repeated: {shown}"
        raise Problem(400, "duplicate-idempotency-key", detail, keys=repeated[:100])
    return body


def item_key(item: Any) -> str:
    """A task's own idempotency key, or the 400 problem naming the field."""
    if not isinstance(item, dict):
        raise Problem(400, "invalid-body", "a task must be a JSON object", fields=["body"])
    key: object = item.get(KEY_FIELD)
    if isinstance(key, str):
        problem = idempotency.key_problem(key)
        if problem is None:
            return key
    else:
        problem = f"{KEY_FIELD} is required" if key is None else f"{KEY_FIELD} must be a string"
    detail = problem.replace("Idempotency-Key", KEY_FIELD)
    raise Problem(400, "idempotency-key", detail, fields=[KEY_FIELD])


def decision_wait_s(prefer: str | None, timeout_s: float) -> tuple[float, bool]:
    """How long to wait for decisions under an RFC 7240 `Prefer` header, and whether it was
    `respond-async` (answer once written). `wait=<s>` shortens the wait; the rest is ignored.
    """
    wait_s = timeout_s
    for preference in (prefer or "").split(","):
        name, _, value = preference.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "respond-async":
            return 0.0, True
        if name == "wait" and value.isdecimal() and len(value) < 10:
            wait_s = min(wait_s, float(value))
    return wait_s, False


def item_result(key: str | None, answer: Answer) -> dict[str, Any]:
    """One task's entry in the 207: its key and the answer a single POST would have given."""
    return {
        KEY_FIELD: key,
        "status": answer.status,
        "replayed": answer.headers.get(REPLAYED_HEADER) == "true",
        "headers": answer.headers,
        "body": answer.body,
    }


def problem_answer(problem: Problem) -> Answer:
    """A problem as a task's answer: its status, headers (but the media type) and members."""
    headers = {str(k): v for k, v in problem.headers.items() if k.lower() != "content-type"}
    return Answer(problem.status, headers, problem.details)


@dataclass(frozen=True)
class Prepared:
    """A valid task of the batch, claimed as in progress, ready to write."""

    index: int
    key: str
    task_id: str
    requested: TaskRequested


class BulkRoutes:
    """POST /api/v2/tasks:batch, sharing auth, validation and rendering with single tasks."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes

    async def post(self, request: web.Request) -> web.Response:
        """Write the batch's valid tasks as one produce batch and answer 207, task by task."""
        tenant = authenticate_tenant(request, self.routes.config)
        return await with_policy(self._post(request, tenant), self.routes.policy(tenant))

    async def _post(self, request: web.Request, tenant: TenantConfig) -> web.Response:
        items = batch_items(await read_json(request, self.routes.limits))
        timeout_s = self.routes.settings.decision_timeout_ms / 1000
        wait_s, respond_async = decision_wait_s(request.headers.get("Prefer"), timeout_s)
        results: list[dict[str, Any] | None] = [None] * len(items)
        ready: list[Prepared] = []
        try:
            tags: dict[str, FinOpsTags] = {}
            for index, item in enumerate(items):
                key = item.get(KEY_FIELD) if isinstance(item, dict) else None
                try:
                    prepared = self.prepare(index, item, tenant, tags)
                except Problem as problem:
                    results[index] = item_result(_text(key), problem_answer(problem))
                    continue
                ready.append(prepared)
            answers = await self.submit(tenant.tenant_id, ready, wait_s) if ready else []
            for prepared, answer in zip(ready, answers, strict=True):
                results[prepared.index] = item_result(prepared.key, answer)
        finally:
            self.routes.release(p.task_id for p in ready)
        applied = {"Preference-Applied": "respond-async"} if respond_async else None
        return json_response({"results": results}, 207, applied)

    def prepare(
        self, index: int, item: Any, tenant: TenantConfig, tags: dict[str, FinOpsTags]
    ) -> Prepared:
        """Validate one task and claim its id, or raise the problem it answers (400/403/409)."""
        key = item_key(item)
        fields = {name: value for name, value in item.items() if name != KEY_FIELD}
        task = self.routes.parse_task(fields, tenant.tenant_id)
        cost_center = task.cost_center
        if cost_center not in tags:
            tags[cost_center] = self.routes.tags(tenant, cost_center)
        requested = TaskRequested(**task.model_dump(), tags=tags[cost_center])
        task_id = idempotency.task_id(tenant.tenant_id, key)
        if not self.routes.claim(task_id):
            raise in_progress()
        return Prepared(index, key, task_id, requested)

    async def submit(self, tenant_id: str, ready: list[Prepared], wait_s: float) -> list[Answer]:
        """Write the tasks together, wait up to wait_s for their decisions, answer each."""
        with tracer.start_as_current_span(
            "submit task.requested batch",
            kind=trace.SpanKind.PRODUCER,
            attributes={"lapverse.tenant": tenant_id, "lapverse.batch_size": len(ready)},
        ):
            trace_headers = inject_headers()
            sent_ms = now_ms()
            requests = []
            for p in ready:
                reply_id = uuid.uuid4().hex
                event = encode_event(
                    "task.requested", p.key, tenant_id, p.requested, sent_ms, SOURCE
                )
                headers = [(REQUEST_ID, reply_id.encode()), *trace_headers]
                requests.append(Request(event, headers, reply_id))
            try:
                outcomes = await self.routes.bridge.submit_many(
                    topics.TASKS, tenant_id.encode(), requests, wait_s
                )
            except BrokerUnavailable as exc:
                raise broker_unavailable(exc) from exc
        return [_answer(p, outcome) for p, outcome in zip(ready, outcomes, strict=True)]


def _answer(prepared: Prepared, outcome: Reply | BrokerUnavailable | None) -> Answer:
    if outcome is None:
        return pending_task(prepared.task_id, prepared.requested)
    if isinstance(outcome, BrokerUnavailable):
        return problem_answer(broker_unavailable(outcome))
    try:
        return task_answer(outcome, task_location(prepared.task_id))
    except Problem as problem:  # a rejection: the problem a single POST would raise
        return problem_answer(problem)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
