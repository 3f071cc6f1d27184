"""Pricing and Prometheus metrics: what a request costs and how the grid is doing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from aigrid.config import PRICE_SCALE, DeploymentConfig
from aigrid.grid.backends.base import Usage

disable_created_metrics()  # type: ignore[no-untyped-call]
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _to_micro(scaled: int) -> int:
    """Round half up from millionths of a micro-unit to micro-units (costs are never negative)."""
    return (scaled + PRICE_SCALE // 2) // PRICE_SCALE


def cost_micro(config: DeploymentConfig, usage: Usage) -> int:
    """Cost in micro-units of currency; prices are per million tokens, so one token costs ``price`` micro."""
    input_price, cached_price, output_price = config.scaled_prices
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    return _to_micro(
        (usage.prompt_tokens - cached) * input_price
        + cached * cached_price
        + usage.completion_tokens * output_price
    )


def worst_cost_micro(configs: Iterable[DeploymentConfig], prompt_tokens: int, output_tokens: int) -> int:
    """The most a request could cost on any of the given deployments."""
    worst = 0
    for cfg in configs:
        input_price, _, output_price = cfg.scaled_prices
        worst = max(worst, prompt_tokens * input_price + output_tokens * output_price)
    return _to_micro(worst)


class Metrics:
    """The grid's Prometheus metrics, in a registry of their own."""

    def __init__(self, deployments: Callable[[], list[dict[str, object]]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aigrid_requests",
            "Requests by tenant, model and status",
            ["tenant", "model", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "aigrid_tokens", "Tokens by tenant, model and kind", ["tenant", "model", "kind"], registry=r
        )
        self.cost = Counter(
            "aigrid_cost_micro", "Cost in micro-units of currency", ["tenant", "model"], registry=r
        )
        self.latency = Histogram(
            "aigrid_request_seconds", "Request latency", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "aigrid_time_to_first_token_seconds",
            "Time to first token of streams",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("aigrid_in_flight", "Requests in flight", ["model"], registry=r)
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._in_flight: dict[str, Gauge] = {}
        r.register(_DeploymentCollector(deployments))

    def in_flight_of(self, model: str) -> Gauge:
        """The in-flight gauge of a model (children are cached: ``labels()`` is slow per call)."""
        gauge = self._in_flight.get(model)
        if gauge is None:
            gauge = self._in_flight[model] = self.in_flight.labels(model)
        return gauge

    def record(
        self, tenant: str, model: str, status: str, usage: Usage, cost: int, latency_s: float | None
    ) -> None:
        """Count one finished request."""
        series = self._series.get((tenant, model, status))
        if series is None:
            series = self._series[(tenant, model, status)] = _Series(
                self.requests.labels(tenant, model, status),
                self.tokens.labels(tenant, model, "prompt"),
                self.tokens.labels(tenant, model, "completion"),
                self.tokens.labels(tenant, model, "cached"),
                self.cost.labels(tenant, model),
                self.latency.labels(model),
            )
        series.requests.inc()
        if usage.prompt_tokens:
            series.prompt.inc(usage.prompt_tokens)
        if usage.completion_tokens:
            series.completion.inc(usage.completion_tokens)
        if usage.cached_tokens:
            series.cached.inc(usage.cached_tokens)
        if cost:
            series.cost.inc(cost)
        if latency_s is not None:
            series.latency.observe(latency_s)


@dataclass(frozen=True, slots=True)
class _Series:
    """The labelled children one (tenant, model, status) updates; ``labels()`` is slow per call."""

    requests: Counter
    prompt: Counter
    completion: Counter
    cached: Counter
    cost: Counter
    latency: Histogram


class _DeploymentCollector(Collector):
    """Reads deployment health at scrape time, so it is never stale."""

    def __init__(self, deployments: Callable[[], list[dict[str, object]]]) -> None:
        self._deployments = deployments

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        healthy = GaugeMetricFamily(
            "aigrid_deployment_healthy", "1 when the deployment's breaker is closed", labels=["deployment"]
        )
        busy = GaugeMetricFamily(
            "aigrid_deployment_in_flight", "Requests in flight per deployment", labels=["deployment"]
        )
        sequences = GaugeMetricFamily(
            "aigrid_engine_sequences",
            "Requests in an in-process engine: running, waiting for a sequence, and finished prompts"
            " kept for prefix reuse (cached)",
            labels=["deployment", "state"],
        )
        cached_tokens = GaugeMetricFamily(
            "aigrid_engine_cached_tokens",
            "Prompt tokens kept in an engine's prefix cache",
            labels=["deployment"],
        )
        restarts = CounterMetricFamily(
            "aigrid_engine_restarts",
            "Times an engine process was started again after it died",
            labels=["deployment"],
        )
        up = GaugeMetricFamily(
            "aigrid_engine_up",
            "1 while the deployment's engine process runs; 0 while it is being restarted",
            labels=["deployment"],
        )
        for d in self._deployments():
            name = str(d["name"])
            healthy.add_metric([name], 1.0 if d["healthy"] else 0.0)
            in_flight = d["in_flight"]
            busy.add_metric([name], float(in_flight) if isinstance(in_flight, int) else 0.0)
            engine = d.get("engine")
            if isinstance(engine, dict):
                for state, key in (
                    ("running", "running"),
                    ("waiting", "waiting"),
                    ("cached", "cached_sequences"),
                ):
                    sequences.add_metric([name, state], float(engine[key]))
                cached_tokens.add_metric([name], float(engine["cached_tokens"]))
                restarts.add_metric([name], float(engine["restarts"]))
                up.add_metric([name], 1.0 if engine["state"] == "running" else 0.0)
        yield healthy
        yield busy
        yield sequences
        yield cached_tokens
        yield restarts
        yield up
