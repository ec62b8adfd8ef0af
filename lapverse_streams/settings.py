"""One frozen settings object, read from the environment in exactly one place."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

PREFIX = "LAPVERSE_"
# fields that fall back to the variable the Kaggle client documents
KAGGLE_ENV = {
    "kaggle_username": "KAGGLE_USERNAME",
    "kaggle_key": "KAGGLE_KEY",
    "kaggle_environment": "KAGGLE_API_ENVIRONMENT",
}


@dataclass(frozen=True)
class Settings:
    """Runtime configuration; every field maps to LAPVERSE_<FIELD_NAME_UPPER>."""

    broker_url: str = "kafka://127.0.0.1:9092"
    embedded_broker: str = "tansu"  # or "kafka": what `make run` and the tests start
    processing_guarantee: str = "at_least_once"  # or exactly_once (Apache Kafka only, ADR 0004)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = 6066
    parent_pid: int = 0  # set by `lapverse run`: its children exit when it dies
    admin_token: str = field(default="", repr=False)
    topic_partitions: int = 4
    topic_retention_ms: int = 7 * 24 * 3600 * 1000  # requests, decisions, results, ...
    dlq_retention_ms: int = 30 * 24 * 3600 * 1000
    environment: str = "dev"
    topic_prefix: str = ""
    app_id: str = "lapverse-streams"
    version: str = "0.1.0"
    idempotency_retention_s: int = 24 * 3600
    slo_window_days: int = 30
    default_slo_target: float = 0.99
    default_latency_objective_ms: int = 30_000
    margin_ratio: float = 0.70
    budget_min_events: int = 10
    decision_timeout_ms: int = 3_000
    gateway_uvloop: bool = True  # serve the gateway on uvloop (bench/README.md: lower latency)
    max_body_bytes: int = 64 * 1024
    max_json_depth: int = 32
    max_string_chars: int = 16_384
    max_array_items: int = 10_000
    rate_limit_per_s: float = 100.0
    rate_limit_burst: int = 500
    drills_enabled: bool = False
    drill_max_sleep_ms: int = 5_000
    executor_tenant_concurrency: int = 50
    gateway_view_max_tasks: int = 50_000
    gateway_view_max_rounds: int = 10_000
    gateway_view_max_champions: int = 10_000  # tenant families; their history is on disk only
    health_window_s: int = 300  # the health score's window of finished tasks
    health_interval_s: float = 10.0  # how often the gateway records a health snapshot
    prometheus_url: str = ""  # firing alerts for the score and `lapverse status`; long history
    batch_max: int = 500
    # How long a batch may wait to fill; 0: 5 ms at least once, 20 ms exactly once, where
    # every batch is a transaction per partition (bench/README.md measured both).
    batch_within_ms: int = 0
    # At least once: batches whose writes may be on their way while the next one is decided.
    batches_in_flight: int = 4
    retry_attempts: int = 3
    executor_concurrency: int = 500
    retry_base_ms: int = 1_000
    redrive_after_ms: int = 120_000
    competition_deadline_ms: int = 30_000
    champion_rollout_steps: str = "10,50,100"  # percent of keys at each step; the first: canary
    champion_step_rounds: int = 20  # rounds at a step before the next (0: never by rounds)
    champion_step_after_ms: int = 3_600_000  # time at a step before the next (0: never by time)
    champion_tick_interval_ms: int = 5_000  # how often the governor looks at active rollouts
    news_ai_url: str = "http://127.0.0.1:8091"
    news_ai_key: str = field(default="", repr=False)
    news_ai_timeout_ms: int = 3_000
    news_ai_failure_threshold: int = 50
    share_api_url: str = "http://127.0.0.1:8092"
    share_api_key: str = field(default="", repr=False)
    share_api_timeout_ms: int = 2_000
    share_api_failure_threshold: int = 30
    breaker_reset_timeout_ms: int = 30_000
    heartbeat_interval_ms: int = 5_000
    kaggle_username: str = ""
    kaggle_key: str = field(default="", repr=False)
    kaggle_environment: str = "PROD"
    kaggle_owner: str = ""
    kaggle_kernel: str = ""
    kaggle_timeout_ms: int = 60_000
    kaggle_failure_threshold: int = 5
    kaggle_reset_timeout_ms: int = 30_000
    rebalance_timeout_s: float = 6.0
    fetch_max_wait_ms: int = 100  # longest a worker's fetch waits for data (Faust: 1500)
    # Static group membership: a worker restarted under the same id takes its partitions back
    # at once instead of waiting out a rebalance. Unique per worker, and a restarted worker
    # keeps its web host and port (Faust checks its URL against the kept assignment).
    worker_instance_id: str = ""
    standby_replicas: int = 0
    otlp_endpoint: str = ""
    trace_sample_ratio: float = 1.0
    log_level: str = "INFO"
    # Python's cyclic GC thresholds (gen0, gen1, gen2) in the worker and the gateway. With
    # tables of many objects, a full collection at the default (700,10,10) stalled the loop for
    # tens of ms every few seconds: most of the gateway's p99 at 500 req/s (bench/README.md).
    gc_thresholds: str = "100000,50,100"
    data_dir: str = ".lapverse"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from LAPVERSE_* variables (and OTEL_EXPORTER_OTLP_ENDPOINT, KAGGLE_*)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind: Any = type(f.default)
            values[f.name] = kind(raw) if kind is not bool else raw.lower() in {"1", "true"}
        if "otlp_endpoint" not in values and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            values["otlp_endpoint"] = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        for name, standard in KAGGLE_ENV.items():
            if name not in values and env.get(standard):
                values[name] = env[standard]
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject settings that cannot work, naming the variable."""
        if not self.broker_url.startswith("kafka://"):
            raise ValueError("LAPVERSE_BROKER_URL must look like kafka://host:port")
        if self.embedded_broker not in ("tansu", "kafka"):
            raise ValueError("LAPVERSE_EMBEDDED_BROKER must be tansu or kafka")
        if self.processing_guarantee not in ("at_least_once", "exactly_once"):
            raise ValueError("LAPVERSE_PROCESSING_GUARANTEE must be at_least_once or exactly_once")
        if self.batch_within_ms < 0:
            raise ValueError("LAPVERSE_BATCH_WITHIN_MS must be 0 (the default) or more")
        if self.batches_in_flight < 1:
            raise ValueError("LAPVERSE_BATCHES_IN_FLIGHT must be at least 1")
        if self.topic_partitions < 1:
            raise ValueError("LAPVERSE_TOPIC_PARTITIONS must be at least 1")
        if not 0 < self.default_slo_target < 1:
            raise ValueError("LAPVERSE_DEFAULT_SLO_TARGET must be between 0 and 1")
        if not 0 <= self.trace_sample_ratio <= 1:
            raise ValueError("LAPVERSE_TRACE_SAMPLE_RATIO must be between 0 and 1")
        try:
            steps = self.rollout_steps
        except ValueError:
            steps = ()
        rising = all(0 < a < b for a, b in itertools.pairwise(steps))
        if not steps or steps[0] <= 0 or steps[-1] != 100 or not rising:
            raise ValueError(
                "LAPVERSE_CHAMPION_ROLLOUT_STEPS must be increasing percentages ending at 100"
            )
        try:
            gc_ok = all(n > 0 for n in self.gc_threshold_values)
        except ValueError:
            gc_ok = False
        if not gc_ok:
            raise ValueError("LAPVERSE_GC_THRESHOLDS must be three positive integers, a,b,c")
        if self.champion_tick_interval_ms < 100:
            raise ValueError("LAPVERSE_CHAMPION_TICK_INTERVAL_MS must be at least 100")

    @property
    def rollout_steps(self) -> tuple[int, ...]:
        """LAPVERSE_CHAMPION_ROLLOUT_STEPS as numbers, e.g. (10, 50, 100)."""
        return tuple(int(step) for step in self.champion_rollout_steps.split(",") if step.strip())

    @property
    def batch_window_s(self) -> float:
        """The batch window in seconds (LAPVERSE_BATCH_WITHIN_MS, or the guarantee's default)."""
        if self.batch_within_ms > 0:
            return self.batch_within_ms / 1000
        return 0.020 if self.processing_guarantee == "exactly_once" else 0.005

    @property
    def gc_threshold_values(self) -> tuple[int, int, int]:
        """LAPVERSE_GC_THRESHOLDS as the three numbers of `gc.set_threshold`."""
        first, second, third = (int(part) for part in self.gc_thresholds.split(","))
        return first, second, third

    @property
    def isolation_level(self) -> str:
        """How readers read: only committed transactions' records under exactly once."""
        return (
            "read_committed" if self.processing_guarantee == "exactly_once" else "read_uncommitted"
        )

    @property
    def bootstrap_servers(self) -> str:
        """host:port list for aiokafka, from the kafka:// URL."""
        return ",".join(part.removeprefix("kafka://") for part in self.broker_url.split(";"))

    @property
    def broker_host_port(self) -> tuple[str, int]:
        """First broker's host and port."""
        parsed = urlparse(self.broker_url.split(";")[0])
        return parsed.hostname or "127.0.0.1", parsed.port or 9092

    @property
    def recorded_trace_ratio(self) -> float:
        """The share of new traces recorded: none without an OTLP endpoint to send them to.

        Unrecorded spans still carry ids to logs and `traceparent` headers, and a caller's
        sampled trace is still followed; recording nobody exports cost 10-25 % of the
        gateway's CPU (bench/README.md).
        """
        return self.trace_sample_ratio if self.otlp_endpoint else 0.0

    def topic(self, name: str) -> str:
        """Full topic name with the deployment's prefix."""
        return f"{self.topic_prefix}{name}"
