"""Champion promotion per tenant and family: rolling win rates and the rule that promotes.

Test: among rounds won by the challenger or its baseline, H0 is "challenger's share <= 1/2".
The likelihood ratio mixed over a uniform prior on the share in (1/2, 1] is a supermartingale
under H0, so by Ville's inequality it stays valid when checked after every round. One such
e-process starts every `restart_rounds` rounds of the incumbent's tenure, start j weighted
1/((j+1)(j+2)), with Bonferroni over the candidate pairs: the error stays <= alpha per tenure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

TEST_NAME = "one-sided mixture SPRT (uniform prior on share > 1/2), restarts, Bonferroni"
INTERVAL_KIND = "normal-mixture confidence sequence over the window's rounds"
_MAX_STATISTIC = 1e300


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger replaces the incumbent champion."""

    min_delta: float = 0.05
    max_burn_rate: float = 1.0
    min_rounds: int = 30
    window_rounds: int = 200
    alpha: float = 0.05
    restart_rounds: int = 50


@dataclass
class Evolution:
    """One tenant+family's recent winners and champion; `applied` is the last offset applied.

    `window` lists the winners of the latest rounds that had a champion, oldest first;
    `seen` maps each variant that competed in those rounds to the number of its last round;
    `since` is the round count when the incumbent's tenure began.
    Methods mutate in place (the agent loads an Evolution once per batch and writes it once).
    """

    window: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    incumbent: str | None = None
    since: int = 0
    promotions: int = 0
    applied: int = -1
    promoted_ms: int = 0  # when the incumbent was promoted (0: never, or before this was kept)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the table."""
        return {
            "window": list(self.window),
            "seen": dict(self.seen),
            "rounds": self.rounds,
            "incumbent": self.incumbent,
            "since": self.since,
            "promotions": self.promotions,
            "applied": self.applied,
            "promotedMs": self.promoted_ms,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Evolution:
        """Inverse of to_json (copying, so the stored value is never mutated); None is empty."""
        if not raw:
            return cls()
        return cls(
            window=[str(v) for v in raw["window"]],
            seen={str(v): int(n) for v, n in raw["seen"].items()},
            rounds=int(raw["rounds"]),
            incumbent=raw["incumbent"],
            since=int(raw.get("since", 0)),
            promotions=int(raw["promotions"]),
            applied=int(raw["applied"]),
            promoted_ms=int(raw.get("promotedMs", 0)),
        )

    def already_applied(self, offset: int) -> bool:
        """True when the round at this offset is already counted."""
        return offset <= self.applied

    def record_round(
        self, winner: str | None, competitors: Iterable[str], offset: int, window_rounds: int
    ) -> Evolution:
        """Count a completed round; one without a champion only moves `applied`."""
        self.applied = max(offset, self.applied)
        if winner is None:
            return self
        self.rounds += 1
        self.window.append(winner)
        del self.window[:-window_rounds]
        for variant in (*competitors, winner):
            self.seen[variant] = self.rounds
        oldest = self.rounds - window_rounds
        for gone in [v for v, last in self.seen.items() if last <= oldest]:
            del self.seen[gone]
        return self

    def win_rates(self) -> dict[str, float]:
        """Share of the window's rounds won, per variant that competed in the window."""
        wins = Counter(self.window)
        total = len(self.window) or 1
        return {v: wins[v] / total for v in sorted(set(self.seen) | set(wins))}


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote, who, over whom, why (not) and the evidence (JSON-able)."""

    promote: bool
    challenger: str | None
    incumbent: str | None
    reason: str
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the champions topic and the API."""
        return {
            "promote": self.promote,
            "challenger": self.challenger,
            "incumbent": self.incumbent,
            "reason": self.reason,
            "evidence": self.evidence,
        }


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator as a float, capped so it stays JSON-able."""
    try:
        return min(numerator / denominator, _MAX_STATISTIC)
    except OverflowError:
        return _MAX_STATISTIC


def bayes_factor(wins: int, losses: int) -> tuple[int, int]:
    """Mixture likelihood ratio for share > 1/2 vs 1/2, as exact (numerator, denominator).

    2^(n+1) * integral over (1/2, 1] of p^w (1-p)^l dp, which equals
    sum_{k<=w} C(n+1, k) / ((n+1) * C(n, w)) by the beta-binomial identity.
    """
    n = wins + losses
    term, numerator = 1, 0
    for k in range(wins + 1):
        numerator += term
        term = term * (n + 1 - k) // (k + 1)
    return numerator, (n + 1) * math.comb(n, wins)


def delta_radius(rounds: int, alpha: float, tuned_rounds: int) -> float:
    """Half-width of a time-uniform (1 - alpha) confidence sequence for a mean of [-1, 1] steps.

    Normal mixture over the sub-Gaussian supermartingale (variance proxy 1), with the mixing
    precision chosen so the bound is tightest near `tuned_rounds` rounds.
    """
    log_inv = math.log(1 / alpha)
    rho = tuned_rounds / (2 * log_inv + math.log(1 + 2 * log_inv))
    return math.sqrt(2 * (rounds + rho) * (0.5 * math.log1p(rounds / rho) + log_inv)) / rounds


def sequential_test(
    evolution: Evolution, challenger: str, baseline: str, pairs: int, policy: PromotionPolicy
) -> dict[str, Any]:
    """The restarted e-processes of challenger vs baseline; reports the strongest start."""
    alpha = Fraction(repr(policy.alpha))
    first_round = evolution.rounds - len(evolution.window)
    skip = max(0, -(-(first_round - evolution.since) // policy.restart_rounds))
    best: dict[str, Any] = {
        "startRound": None,
        "challengerWins": 0,
        "baselineWins": 0,
        "statistic": 1.0,
        "threshold": pairs / policy.alpha,
    }
    best_margin = -math.inf
    passed = False
    for j in range(skip, (evolution.rounds - 1 - evolution.since) // policy.restart_rounds + 1):
        start = evolution.since + j * policy.restart_rounds
        tail = Counter(evolution.window[start - first_round :])
        won, lost = tail[challenger], tail[baseline]
        bf_num, bf_den = bayes_factor(won, lost)
        threshold = Fraction(pairs * (j + 1) * (j + 2)) / alpha
        passed = passed or bf_num * threshold.denominator >= threshold.numerator * bf_den
        margin = math.log(bf_num) - math.log(bf_den) - math.log(threshold)
        if margin > best_margin:
            best_margin = margin
            best = {
                "startRound": start,
                "challengerWins": won,
                "baselineWins": lost,
                "statistic": _ratio(bf_num, bf_den),
                "threshold": float(threshold),
            }
    return {"name": TEST_NAME, "alpha": policy.alpha, "pairs": pairs, **best, "passed": passed}


def evaluate(evolution: Evolution, burn_rate: float, policy: PromotionPolicy) -> PromotionDecision:
    """Decide whether the best non-incumbent replaces the incumbent (or, with none, leads)."""
    wins = Counter(evolution.window)
    rounds = len(evolution.window)
    incumbent = evolution.incumbent
    rates = evolution.win_rates()
    rivals = sorted(
        (v for v in set(evolution.seen) | set(wins) if v != incumbent),
        key=lambda v: (-wins[v], v),
    )
    if not rounds or not rivals:
        why = "no challenger" if rounds else "no rounds"
        return PromotionDecision(False, None, incumbent, why, {"rounds": rounds})
    challenger = rivals[0]
    if incumbent is not None:
        baseline, pairs = incumbent, len(rivals)
    elif len(rivals) > 1:
        # Without an incumbent any ordered pair could be the one reported.
        baseline, pairs = rivals[1], len(rivals) * (len(rivals) - 1)
    else:
        lone = {"rounds": rounds, "winRates": rates}
        return PromotionDecision(False, challenger, None, "no rival", lone)

    won, lost = wins[challenger], wins[baseline]
    delta = (won - lost) / rounds
    min_delta = Fraction(repr(policy.min_delta))
    sample_ok = rounds >= policy.min_rounds
    # Exact on integers: delta > min_delta <=> (won - lost) * den > num * rounds.
    delta_ok = (won - lost) * min_delta.denominator > min_delta.numerator * rounds
    slo_ok = burn_rate < policy.max_burn_rate
    test = sequential_test(evolution, challenger, baseline, pairs, policy)
    radius = delta_radius(rounds, policy.alpha / pairs, policy.window_rounds)

    reasons = []
    if not sample_ok:
        reasons.append(f"sample {rounds} < {policy.min_rounds}")
    if not delta_ok:
        reasons.append(f"delta {delta:.4g} ≤ {policy.min_delta:g}")
    if not slo_ok:
        reasons.append(f"burn rate {burn_rate:g} ≥ {policy.max_burn_rate:g}")
    if not test["passed"]:
        reasons.append(f"test not significant (BF {test['statistic']:.3g} < {test['threshold']:g})")
    evidence: dict[str, Any] = {
        "challenger": challenger,
        "baseline": baseline,
        "baselineKind": "runner-up" if incumbent is None else "incumbent",
        "sample": {
            "rounds": rounds,
            "minRounds": policy.min_rounds,
            "challengerWins": won,
            "baselineWins": lost,
            "passed": sample_ok,
        },
        "winRates": rates,
        "delta": {
            "value": delta,
            "min": policy.min_delta,
            "interval": [max(-1.0, delta - radius), min(1.0, delta + radius)],
            "intervalLevel": 1 - policy.alpha / pairs,
            "intervalKind": INTERVAL_KIND,
            "passed": delta_ok,
        },
        "test": test,
        "slo": {"burnRate": burn_rate, "maxBurnRate": policy.max_burn_rate, "passed": slo_ok},
    }
    reason = "; ".join(reasons) if reasons else f"{challenger} beats {baseline}"
    return PromotionDecision(not reasons, challenger, incumbent, reason, evidence)


def apply(evolution: Evolution, decision: PromotionDecision) -> Evolution:
    """Make a promoted challenger the incumbent; a stale or repeated decision is a no-op."""
    if decision.promote and decision.incumbent == evolution.incumbent:
        evolution.incumbent = decision.challenger
        evolution.since = evolution.rounds
        evolution.promotions += 1
    return evolution
