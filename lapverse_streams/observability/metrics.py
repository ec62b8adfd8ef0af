"""Prometheus metrics of one process, in its own registry; fed by hooks, never by domain code."""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

DURATION_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class Metrics:
    """Every metric the product exposes (spec section 7)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)  # process_*, python_info, python_gc_*: about this process
        self.tasks = Counter(
            "lapverse_tasks",
            "Tasks by type, tenant and outcome",
            ["type", "tenant", "outcome"],
            registry=r,
        )
        self.decisions = Counter(
            "lapverse_admission_decisions", "Admission decisions by reason", ["reason"], registry=r
        )
        self.replays = Counter(
            "lapverse_idempotent_replays", "Idempotent replays", ["tenant"], registry=r
        )
        self.duplicates = Counter(
            "lapverse_duplicate_results", "Redelivered results ignored", ["tenant"], registry=r
        )
        self.task_duration = Histogram(
            "lapverse_task_duration_ms",
            "Task duration in ms",
            ["type"],
            buckets=DURATION_BUCKETS_MS,
            registry=r,
        )
        self.dlq = Counter(
            "lapverse_dlq",
            "Dead letters by the agent or reader that gave up on the record, and why",
            ["agent", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "lapverse_rate_limited",
            "Requests refused because the tenant was over its rate limit",
            ["tenant"],
            registry=r,
        )
        self.burn_rate = Gauge(
            "lapverse_budget_burn_rate", "Error-budget burn rate", ["tenant", "window"], registry=r
        )
        self.budget_remaining = Gauge(
            "lapverse_budget_remaining_ratio", "Error budget left", ["tenant"], registry=r
        )
        self.spend = Gauge(
            "lapverse_spend_usd", "Spend this billing period", ["tenant", "cost_center"], registry=r
        )
        self.reserved = Gauge(
            "lapverse_reserved_usd", "Reserved cost of unfinished work", ["tenant"], registry=r
        )
        self.mrr = Gauge("lapverse_mrr_usd", "Tenant MRR", ["tenant"], registry=r)
        self.champion = Gauge(
            "lapverse_champion_info",
            "The current champion of a tenant's family (1 for the champion variant)",
            ["tenant", "family", "variant"],
            registry=r,
        )
        self.champion_promoted = Gauge(
            "lapverse_champion_promoted_timestamp_seconds",
            "When the current champion was promoted (Unix time)",
            ["tenant", "family"],
            registry=r,
        )
        self.champion_rollout = Gauge(
            "lapverse_champion_rollout_ratio",
            "Share of targeting keys the champion's rollout serves it (0-1: 10 % is 0.1)",
            ["tenant", "family"],
            registry=r,
        )
        self.champion_state = Gauge(
            "lapverse_champion_rollout_state",
            "The rollout state of a tenant's family champion (1 for the current state)",
            ["tenant", "family", "state"],
            registry=r,
        )
        self.champion_rollbacks = Counter(
            "lapverse_champion_rollbacks",
            "Champion rollbacks by reason (burn-rate, lost-lead, operator)",
            ["tenant", "family", "reason"],
            registry=r,
        )
        self.health_score = Gauge(
            "lapverse_health_score", "Health score 0-100 over the recent window", registry=r
        )
        self.workers_live = Gauge(
            "lapverse_workers_live", "Workers heard from in the last 30 s", registry=r
        )
        self.broker_connected = Gauge(
            "lapverse_broker_connected", "1 while the broker answers, else 0", registry=r
        )
        self.table_keys = Gauge("lapverse_table_keys", "Keys per table", ["table"], registry=r)
        self.consumer_lag = Gauge(
            "lapverse_consumer_lag", "Consumer lag", ["topic", "partition"], registry=r
        )
        self.http_requests = Counter(
            "lapverse_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "lapverse_http_request_duration_seconds", "HTTP latency", ["route"], registry=r
        )
        self.breaker_state = Gauge(
            "lapverse_breaker_state",
            "Breaker state (0 closed, 1 half-open, 2 open)",
            ["breaker"],
            registry=r,
        )
        self.service_calls = Counter(
            "lapverse_service_calls",
            "Calls to external services by outcome (fallback: the service failed and a "
            "fallback was served; rejected: the breaker was open)",
            ["service", "outcome"],
            registry=r,
        )
        self.service_duration = Histogram(
            "lapverse_service_call_duration_ms",
            "External service call duration in ms, fallbacks included",
            ["service"],
            buckets=DURATION_BUCKETS_MS,
            registry=r,
        )
        self.breaker_transitions = Counter(
            "lapverse_breaker_transitions",
            "Breaker state changes by the state entered",
            ["breaker", "state"],
            registry=r,
        )
        self.kaggle_stages = Counter(
            "lapverse_kaggle_stages",
            "Kaggle pipeline stages by outcome",
            ["stage", "status"],
            registry=r,
        )
        self.competitions = Counter(
            "lapverse_competitions", "Competitions completed", ["tenant"], registry=r
        )
        self.cost_per_competition = Gauge(
            "lapverse_cost_per_competition", "Cost of the last competition", ["tenant"], registry=r
        )
        self.win_rate = Gauge(
            "lapverse_win_rate", "Win rate per variant", ["tenant", "variant"], registry=r
        )
        self.variant_runs = Counter(
            "lapverse_variant_runs",
            "Variant runs by family, variant and status",
            ["family", "variant", "status"],
            registry=r,
        )
        self.variant_score = Histogram(
            "lapverse_variant_score",
            "Backtest score of variant runs (1 - sMAPE/200)",
            ["family", "variant"],
            buckets=(0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0),
            registry=r,
        )
        self.variant_wins = Counter(
            "lapverse_variant_wins",
            "Rounds won per variant",
            ["tenant", "family", "variant"],
            registry=r,
        )
        self.promotions = Counter(
            "lapverse_champion_promotions",
            "Champion promotions",
            ["tenant", "family"],
            registry=r,
        )
        self.redrives = Counter(
            "lapverse_redrives",
            "Accepted tasks re-sent because their result was overdue",
            registry=r,
        )
        self.batch_size = Histogram(
            "lapverse_batch_size",
            "Records per agent batch",
            ["agent"],
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000),
            registry=r,
        )

    def exposition(self) -> bytes:
        """Prometheus text format."""
        return generate_latest(self.registry)
