"""The worker's external-service clients (News AI, Share API), their breakers and lifecycle."""

from __future__ import annotations

from dataclasses import dataclass, field

import faust
from opentelemetry import trace

from lapverse_streams.clients.breaker import CircuitBreaker
from lapverse_streams.clients.news_ai import SERVICE as NEWS_AI
from lapverse_streams.clients.news_ai import NewsAIClient, Sentiment
from lapverse_streams.clients.share_api import SERVICE as SHARE_API
from lapverse_streams.clients.share_api import ShareAPIClient
from lapverse_streams.observability.metrics import Metrics
from lapverse_streams.observability.services import ServiceMetrics
from lapverse_streams.settings import Settings

tracer = trace.get_tracer("lapverse.services")


class TracedNewsAI(NewsAIClient):
    """The News AI client with a client span per call: a child of the task that asked."""

    async def sentiment(self, text: str) -> Sentiment:
        """The sentiment of `text`, or the neutral fallback (the span then fails)."""
        with tracer.start_as_current_span(
            "news_ai sentiment", kind=trace.SpanKind.CLIENT, attributes={"peer.service": NEWS_AI}
        ) as span:
            answer = await super().sentiment(text)
            span.set_attributes(
                {"lapverse.fallback": answer.fallback, "lapverse.label": answer.label}
            )
            if answer.fallback:
                span.set_status(trace.StatusCode.ERROR, "no answer: the neutral fallback")
            return answer


@dataclass
class ExternalServices:
    """One shared client per service, each behind its breaker, reporting to metrics."""

    news_ai: NewsAIClient
    share: ShareAPIClient
    observer: ServiceMetrics
    breakers: list[CircuitBreaker] = field(default_factory=list)  # other services' (Kaggle)

    async def start(self) -> None:
        """Open the HTTP sessions."""
        await self.news_ai.start()
        await self.share.start()

    async def stop(self) -> None:
        """Close the HTTP sessions."""
        await self.news_ai.stop()
        await self.share.stop()

    def breaker_states(self) -> dict[str, str]:
        """Each breaker's current state (reading it lets open turn half-open on time)."""
        states: dict[str, str] = {NEWS_AI: self.news_ai.state, SHARE_API: self.share.state}
        return states | {breaker.service: breaker.state for breaker in self.breakers}


def build_services(settings: Settings, metrics: Metrics) -> ExternalServices:
    """Clients configured from settings (spec: News AI 3 s / 50 failures, Share API 2 s / 30)."""
    observer = ServiceMetrics(metrics)
    news_ai = TracedNewsAI(
        settings.news_ai_url,
        settings.news_ai_key or None,
        timeout_ms=settings.news_ai_timeout_ms,
        failure_threshold=settings.news_ai_failure_threshold,
        reset_timeout_ms=settings.breaker_reset_timeout_ms,
        observer=observer,
    )
    share = ShareAPIClient(
        settings.share_api_url,
        settings.share_api_key or None,
        timeout_ms=settings.share_api_timeout_ms,
        failure_threshold=settings.share_api_failure_threshold,
        reset_timeout_ms=settings.breaker_reset_timeout_ms,
        observer=observer,
    )
    for service in (NEWS_AI, SHARE_API):
        observer.watch(service)
    return ExternalServices(news_ai, share, observer)


def own(app: faust.App, services: ExternalServices) -> None:
    """Start the clients with the worker and close them when it stops."""

    class ServicesOwner(faust.Service):
        """Owns the external clients' sessions inside the worker."""

        async def on_start(self) -> None:
            await services.start()

        async def on_stop(self) -> None:
            await services.stop()

    app.service(ServicesOwner)
