"""Self-compete rounds: the join of variant results and the choice of the round's champion."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

Status = Literal["ok", "failed", "timeout"]
STATUSES: frozenset[str] = frozenset({"ok", "failed", "timeout"})


@dataclass(frozen=True)
class VariantResult:
    """What one variant's run of a round produced."""

    variant: str
    status: Status
    score: float | None = None
    cost_micros: int = 0
    duration_ms: int = 0
    output: dict[str, Any] | None = None
    error: str | None = None

    @property
    def scored(self) -> bool:
        """True when the run succeeded with a finite score, so it can win."""
        return self.status == "ok" and self.score is not None and math.isfinite(self.score)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the table."""
        return {
            "variant": self.variant,
            "status": self.status,
            "score": self.score,
            "cost_micros": self.cost_micros,
            "duration_ms": self.duration_ms,
            "output": self.output,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> VariantResult:
        """Inverse of to_json; an unknown status is a ValueError."""
        status = raw["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown variant status {status!r}")
        score = raw.get("score")
        output = raw.get("output")
        return cls(
            variant=str(raw["variant"]),
            status=cast(Status, status),
            score=None if score is None else float(score),
            cost_micros=int(raw.get("cost_micros", 0)),
            duration_ms=int(raw.get("duration_ms", 0)),
            output=None if output is None else dict(output),
            error=raw.get("error"),
        )


def pick_champion(results: Iterable[VariantResult]) -> str | None:
    """Highest score wins; ties go to the lower cost, then the alphabetically first name."""
    scored = [r for r in results if r.scored]
    if not scored:
        return None
    best = min(scored, key=lambda r: (-cast(float, r.score), r.cost_micros, r.variant))
    return best.variant


@dataclass(frozen=True)
class RoundOutcome:
    """A completed round: scores of the variants that can win, its champion and its cost."""

    competition_id: str
    tenant: str
    family: str
    competitors: tuple[str, ...]
    scores: dict[str, float]
    champion: str | None
    missing: tuple[str, ...]
    cost_micros: int

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the competition-results topic."""
        return {
            "competition_id": self.competition_id,
            "tenant": self.tenant,
            "family": self.family,
            "competitors": list(self.competitors),
            "scores": dict(self.scores),
            "champion": self.champion,
            "missing": list(self.missing),
            "cost_micros": self.cost_micros,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RoundOutcome:
        """Inverse of to_json."""
        return cls(
            competition_id=str(raw["competition_id"]),
            tenant=str(raw["tenant"]),
            family=str(raw["family"]),
            competitors=tuple(raw["competitors"]),
            scores={str(v): float(s) for v, s in raw["scores"].items()},
            champion=raw["champion"],
            missing=tuple(raw["missing"]),
            cost_micros=int(raw["cost_micros"]),
        )


@dataclass
class Round:
    """Join record of one competition: each expected variant's result, recorded once.

    Methods mutate in place (the agent loads a Round once per batch and writes it once).
    Results are accepted until the round is completed, so a redelivered batch sees the same
    outcome; a result of a variant that was not expected is ignored.
    """

    competition_id: str
    tenant: str
    family: str
    expected: tuple[str, ...]
    deadline_ms: int
    results: dict[str, VariantResult] = field(default_factory=dict)
    completed: bool = False

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the table."""
        return {
            "competition_id": self.competition_id,
            "tenant": self.tenant,
            "family": self.family,
            "expected": list(self.expected),
            "deadline_ms": self.deadline_ms,
            "results": {v: r.to_json() for v, r in self.results.items()},
            "completed": self.completed,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Round:
        """Inverse of to_json."""
        results = {str(v): VariantResult.from_json(r) for v, r in raw["results"].items()}
        return cls(
            competition_id=str(raw["competition_id"]),
            tenant=str(raw["tenant"]),
            family=str(raw["family"]),
            expected=tuple(raw["expected"]),
            deadline_ms=int(raw["deadline_ms"]),
            results=results,
            completed=bool(raw["completed"]),
        )

    def record(self, result: VariantResult) -> bool:
        """Store a variant's result; False for duplicates, unknown variants or a closed round."""
        if self.completed or result.variant not in self.expected:
            return False
        if result.variant in self.results:
            return False
        self.results[result.variant] = result
        return True

    def is_ready(self, now_ms: int) -> bool:
        """True when every expected variant reported or the deadline is reached."""
        return now_ms >= self.deadline_ms or all(v in self.results for v in self.expected)

    def outcome(self) -> RoundOutcome:
        """Scores, champion, missing variants and cost of the results recorded so far.

        Cost is what every recorded run reported, failed ones included (they consumed
        resources); a variant with no result by completion is charged nothing.
        """
        recorded = [self.results[v] for v in self.expected if v in self.results]
        scores = {r.variant: cast(float, r.score) for r in recorded if r.scored}
        return RoundOutcome(
            competition_id=self.competition_id,
            tenant=self.tenant,
            family=self.family,
            competitors=self.expected,
            scores=scores,
            champion=pick_champion(recorded),
            missing=tuple(v for v in self.expected if v not in scores),
            cost_micros=sum(r.cost_micros for r in recorded),
        )

    def complete(self) -> RoundOutcome:
        """Close the round (later results are ignored) and return its outcome."""
        self.completed = True
        return self.outcome()
