"""Routes of self-compete rounds: POST a round, GET its scores, champion and promotion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from lapverse_streams.domain import idempotency
from lapverse_streams.domain.pricing import usd
from lapverse_streams.domain.self_compete import InvalidCompetition, resolve, variant_cost_micros
from lapverse_streams.events import topics
from lapverse_streams.events.models import CompetitionRequest, CompetitionRequested, TenantConfig
from lapverse_streams.gateway.auth import authenticate_tenant
from lapverse_streams.gateway.bridge import Reply
from lapverse_streams.gateway.inputs import parse_body, read_json
from lapverse_streams.gateway.problems import Problem, json_response
from lapverse_streams.gateway.rate_limits import with_policy
from lapverse_streams.gateway.routes import Routes, decision_response
from lapverse_streams.variants.base import VariantFamily


class SelfCompeteRoutes:
    """POST and GET /api/v2/self-compete, sharing auth and request-reply with tasks."""

    def __init__(self, routes: Routes, families: Mapping[str, VariantFamily]) -> None:
        self.routes = routes
        self.families = families

    async def post(self, request: web.Request) -> web.Response:
        """POST /api/v2/self-compete: write competition.requested and answer with the decision."""
        tenant = authenticate_tenant(request, self.routes.config)
        return await with_policy(self._post(request, tenant), self.routes.policy(tenant))

    async def _post(self, request: web.Request, tenant: TenantConfig) -> web.Response:
        key = self.routes.request_key(request)
        body = await read_json(request, self.routes.limits)
        if isinstance(body, dict):
            body.setdefault("tenant", tenant.tenant_id)
        round_request = parse_body(CompetitionRequest, body)
        if round_request.tenant != tenant.tenant_id:
            raise Problem(403, "wrong-tenant", "body.tenant does not match the API key's tenant")
        try:
            resolved = resolve(round_request, self.families)
        except InvalidCompetition as exc:
            raise Problem(
                exc.http_status, exc.reason.value.replace("_", "-"), exc.detail, fields=[exc.field]
            ) from None
        competition_id = idempotency.competition_id(tenant.tenant_id, key)
        requested = CompetitionRequested(
            **round_request.model_dump(),
            tags=self.routes.tags(tenant, round_request.cost_center),
        )
        reply = await self.routes.submit(
            topics.SELF_COMPETE,
            "competition.requested",
            key,
            tenant.tenant_id,
            competition_id,
            requested,
        )
        location = f"/api/v2/self-compete/{competition_id}"
        if reply is None:
            estimate = variant_cost_micros() * len(resolved.competitors)
            pending = {
                "competitionId": competition_id,
                "status": "pending",
                "costEstimate": usd(estimate),
                "competitors": list(resolved.competitors),
                "tags": requested.tags.model_dump(by_alias=True) if requested.tags else None,
            }
            return json_response(pending, 202, {"Location": location})
        return render_round_decision(reply, location)

    async def get(self, request: web.Request) -> web.Response:
        """GET /api/v2/self-compete/{id}: the round as the gateway's view knows it."""
        tenant = authenticate_tenant(request, self.routes.config)
        state = self.routes.bridge.competitions.get(request.match_info["competition_id"])
        if state is None or state.tenant != tenant.tenant_id:
            raise Problem(404, "not-found", "no such competition for this tenant")
        decision, done = state.decision, state.completed
        if decision["status"] == "rejected":
            status = "rejected"
        else:
            status = "completed" if done else "running"
        return json_response(
            {
                "id": decision["competitionId"],
                "status": status,
                "reason": decision["reason"],
                "family": decision["request"]["family"],
                "competitors": decision["competitors"],
                "scores": done["scores"] if done else {},
                "champion": done.get("champion") if done else None,
                "missing": done["missing"] if done else [],
                "variants": done["variants"] if done else {},
                "championOutput": done.get("championOutput") if done else None,
                "costEstimate": usd(decision["costEstimateMicros"]),
                "cost": usd(done["costMicros"]) if done else None,
                "tags": decision["tags"],
                "promotion": done["promotion"] if done else None,
                "posts": done.get("posts", []) if done else [],
            }
        )


def render_round_decision(reply: Reply, location: str) -> web.Response:
    """The HTTP answer of a round's decision; replays add Idempotent-Replayed."""
    data = reply.data
    accepted: dict[str, Any] = {
        "competitionId": data["competitionId"],
        "status": "running",
        "costEstimate": usd(data["costEstimateMicros"]),
        "competitors": data["competitors"],
        "tags": data["tags"],
    }
    return decision_response(reply, location, accepted, competitionId=data["competitionId"])
