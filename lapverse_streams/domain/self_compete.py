"""Self-compete requests: validation against the installed families, pricing and fan-out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lapverse_streams.domain.pricing import task_estimate_micros
from lapverse_streams.events.models import (
    CompetitionDecision,
    CompetitionRequest,
    Complexity,
    DecisionReason,
    VariantRun,
)
from lapverse_streams.variants.base import FamilyInputError, VariantFamily

VARIANT_COMPLEXITY = Complexity.INTERMEDIATE  # $0.02 per variant


class InvalidCompetition(Exception):
    """A round that can never run: unknown family, unknown competitors or unusable input."""

    def __init__(self, reason: DecisionReason, http_status: int, field: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.http_status = http_status
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class Resolved:
    """A valid round: the competitors it will run and the family's normalized input."""

    competitors: tuple[str, ...]
    input: dict[str, Any]


def resolve(request: CompetitionRequest, families: Mapping[str, VariantFamily]) -> Resolved:
    """Check the round against its family, or raise InvalidCompetition saying why."""
    family = families.get(request.family)
    if family is None:
        known = ", ".join(sorted(families)) or "none"
        raise InvalidCompetition(
            DecisionReason.UNKNOWN_FAMILY,
            404,
            "family",
            f"competition family {request.family!r} is not installed (known: {known})",
        )
    competitors = tuple(request.competitors or family.variants)
    unknown = [name for name in competitors if name not in family.variants]
    if unknown:
        raise InvalidCompetition(
            DecisionReason.INVALID_REQUEST,
            400,
            "competitors",
            f"unknown competitors for family {family.name!r}: {', '.join(unknown)} "
            f"(known: {', '.join(family.variants)})",
        )
    try:
        normalized = family.validate_input(request.input)
    except FamilyInputError as exc:
        raise InvalidCompetition(DecisionReason.INVALID_REQUEST, 400, exc.field, str(exc)) from None
    return Resolved(competitors, normalized)


def variant_cost_micros() -> int:
    """Price of one competitor's run."""
    return task_estimate_micros(VARIANT_COMPLEXITY)


def variant_runs(decision: CompetitionDecision) -> list[VariantRun]:
    """One variant.run per competitor of an accepted round (runners validate the input again)."""
    request = decision.request
    return [
        VariantRun(
            competition_id=decision.competition_id,
            tenant=request.tenant,
            family=request.family,
            variant=variant,
            competitors=decision.competitors,
            input=dict(request.input or {}),
            deadline_ms=decision.deadline_ms,
            cost_micros=decision.variant_cost_micros,
            content=request.content,
            platforms=request.platforms,
            tags=decision.tags,
        )
        for variant in decision.competitors
    ]
