"""``GET /metrics``: Prometheus text, per model, through ``prometheus_client`` (a registry per app,
so two apps in one process count apart)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..generator import Completion

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The routes counted by path; any other path is counted as "other" (a scan of random paths must
#: not grow the label set without bound).
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    """The counters one app keeps; ``state()`` is read at each scrape: per model, whether it is
    loaded, the requests the server holds for it, and the scheduler's running and waiting calls."""

    def __init__(self, state: Callable[[], Mapping[str, tuple[bool, int, int, int]]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = Counter(
            "phi_backends_http_requests", "HTTP requests answered, by route and status", ("route", "status"),
            registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "phi_backends_requests", "Generation requests admitted, by model and kind", ("model", "kind"),
            registry=self.registry,
        )  # fmt: skip
        self.finished = Counter(
            "phi_backends_choices", "Choices generated, by model and finish reason", ("model", "finish_reason"),
            registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "phi_backends_prompt_tokens", "Prompt tokens read", ("model",), registry=self.registry
        )
        self.completion_tokens = Counter(
            "phi_backends_completion_tokens", "Tokens generated", ("model",), registry=self.registry
        )
        self.ttft = Histogram(
            "phi_backends_time_to_first_token_seconds", "Time to the first token, queueing included", ("model",),
            buckets=_SECONDS, registry=self.registry,
        )  # fmt: skip
        self.decode = Histogram(
            "phi_backends_decode_tokens_per_second", "Decode speed of each choice", ("model",),
            buckets=_RATES, registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "phi_backends_request_duration_seconds", "Wall time of each choice", ("model",),
            buckets=_SECONDS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_Live(state))

    def answered(self, path: str, status: int) -> None:
        self.http.labels(path if path in ROUTES else "other", str(status)).inc()

    def admitted(self, model: str, kind: str) -> None:
        self.requests.labels(model, kind).inc()

    def completed(self, model: str, out: Completion, *, prompt: bool) -> None:
        """One choice's figures (``prompt``: count its prompt, which the request's choices share)."""
        if prompt:
            self.prompt_tokens.labels(model).inc(out.usage.prompt_tokens)
        self.completion_tokens.labels(model).inc(out.usage.completion_tokens)
        self.finished.labels(model, out.finish_reason).inc()
        self.duration.labels(model).observe(out.timings.total)
        if out.usage.completion_tokens:
            self.ttft.labels(model).observe(out.timings.time_to_first_token)
            self.decode.labels(model).observe(out.timings.decode_tokens_per_second)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Live:
    """The gauges read when scraped, so they are never stale."""

    def __init__(self, state: Callable[[], Mapping[str, tuple[bool, int, int, int]]]) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily("phi_backends_model_ready", "1 once the model is loaded", labels=["model"])
        held = GaugeMetricFamily(
            "phi_backends_requests_in_flight",
            "Requests the server holds (the queue --max-queue bounds)",
            labels=["model"],
        )
        running = GaugeMetricFamily(
            "phi_backends_sequences_running", "Calls holding an engine sequence", labels=["model"]
        )
        waiting = GaugeMetricFamily("phi_backends_sequences_waiting", "Calls waiting for a sequence", labels=["model"])
        for model, (loaded, in_flight, run, wait) in self.state().items():
            ready.add_metric([model], 1.0 if loaded else 0.0)
            held.add_metric([model], in_flight)
            running.add_metric([model], run)
            waiting.add_metric([model], wait)
        yield from (ready, held, running, waiting)

    def describe(self) -> list[GaugeMetricFamily]:
        return []
