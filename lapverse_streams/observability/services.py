"""Service-call hooks into Prometheus: calls by outcome, their latency, breaker states."""

from __future__ import annotations

from lapverse_streams.clients.breaker import BreakerState, CallOutcome
from lapverse_streams.observability.metrics import Metrics

STATE_VALUE: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}


class ServiceMetrics:
    """A ServiceObserver that counts every call and tracks each breaker's state."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.states: dict[str, BreakerState] = {}

    def watch(self, service: str) -> None:
        """Show a breaker as closed before its first call."""
        self.states[service] = "closed"
        self.metrics.breaker_state.labels(service).set(STATE_VALUE["closed"])

    def on_call(self, service: str, outcome: CallOutcome, duration_ms: float) -> None:
        """Count the call; a fallback or rejection is never counted as a success."""
        self.metrics.service_calls.labels(service, outcome).inc()
        self.metrics.service_duration.labels(service).observe(duration_ms)

    def on_state(self, service: str, state: BreakerState) -> None:
        """Record the state the breaker entered."""
        self.states[service] = state
        self.metrics.breaker_state.labels(service).set(STATE_VALUE[state])
        self.metrics.breaker_transitions.labels(service, state).inc()
