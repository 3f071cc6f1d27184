"""Routing: which deployment answers a model name, failover between them, and circuit breakers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TypeVar

from aigrid.config import BreakerConfig, ModelConfig
from aigrid.errors import APIError, model_not_found, overloaded_error, plant_interrupted, upstream_failed
from aigrid.grid.backends.base import Backend, BackendError

T = TypeVar("T")
_EWMA_WEIGHT = 0.2


class CircuitBreaker:
    """Keeps a failing deployment out of rotation, with a cool-down that doubles on each failure."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self.consecutive_failures = 0
        self.open_until = 0.0
        self._probing = False
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        """``closed`` (healthy), ``open`` (cooling down) or ``half-open`` (one probe allowed)."""
        if self.consecutive_failures == 0:
            return "closed"
        return "open" if self._clock() < self.open_until else "half-open"

    def allows(self) -> bool:
        """Whether a request may go to this deployment now."""
        state = self.state
        if state == "closed":
            return True
        return state == "half-open" and not self._probing

    def on_attempt(self) -> None:
        """Note that a request was sent (a half-open breaker lets only one through)."""
        if self.state == "half-open":
            self._probing = True

    def release_probe(self) -> None:
        """Let another request probe a half-open breaker (this one was turned away, not failed)."""
        self._probing = False

    def on_success(self) -> None:
        """Close the breaker."""
        self.consecutive_failures = 0
        self._probing = False
        self.last_error = None

    def on_failure(self, error: str) -> None:
        """Open the breaker for a cool-down that grows with consecutive failures."""
        self.consecutive_failures += 1
        self._probing = False
        self.last_error = error
        cooldown = min(
            self._config.cooldown_s * 2 ** (self.consecutive_failures - 1), self._config.max_cooldown_s
        )
        self.open_until = self._clock() + cooldown

    def cooldown_left(self) -> float:
        """Seconds until the deployment is tried again."""
        return max(0.0, self.open_until - self._clock())


@dataclass(eq=False)
class Deployment:
    """A backend in service, with its health and the figures the policies use."""

    backend: Backend
    breaker: CircuitBreaker
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    seconds_per_token: float | None = None
    latency_s: float | None = None
    # Why the plant said it is down (its engine process died and is being started again).
    plant_down: str | None = None

    def __post_init__(self) -> None:
        self.backend.listener = self._plant_changed

    def _plant_changed(self, cause: str | None) -> None:
        # A plant that died cools down at once, before a request finds out; one that is back
        # (an engine process started again) is known good, so it takes requests without waiting.
        self.plant_down = cause
        if cause is None:
            self.breaker.on_success()
        else:
            self.breaker.on_failure(cause)

    @property
    def name(self) -> str:
        """The deployment's name, as metered."""
        return self.backend.name

    def observe(self, seconds: float, tokens: int) -> None:
        """Fold one request's time, and its time per output token, into the moving averages."""
        if self.latency_s is None:
            self.latency_s = seconds
        else:
            self.latency_s += _EWMA_WEIGHT * (seconds - self.latency_s)
        if tokens <= 0:
            return
        sample = seconds / tokens
        if self.seconds_per_token is None:
            self.seconds_per_token = sample
        else:
            self.seconds_per_token += _EWMA_WEIGHT * (sample - self.seconds_per_token)

    def unit_price(self) -> Decimal:
        """Price of a typical request's mix of tokens, for the cheapest policy."""
        cfg = self.backend.config
        return cfg.input_price_per_mtok + cfg.output_price_per_mtok

    def health(self) -> dict[str, object]:
        """What the admin API shows about this deployment."""
        cfg = self.backend.config
        return {
            "name": self.name,
            "backend": cfg.backend,
            "upstream_model": cfg.upstream_model,
            "tier": cfg.tier,
            "state": self.breaker.state,
            "healthy": self.breaker.state == "closed",
            "consecutive_failures": self.breaker.consecutive_failures,
            "cooldown_left_s": round(self.breaker.cooldown_left(), 3),
            "last_error": self.breaker.last_error,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "seconds_per_output_token": self.seconds_per_token,
            "tokens_per_s": round(1 / self.seconds_per_token, 1) if self.seconds_per_token else None,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
            "engine": None if (stats := self.backend.engine_stats()) is None else asdict(stats),
        }


@dataclass(eq=False)
class Route:
    """A model name and the deployments that serve it."""

    config: ModelConfig
    deployments: list[Deployment] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The model's canonical name."""
        return self.config.name

    def ordered(self) -> list[Deployment]:
        """Deployments in the order the model's policy prefers, healthy ones only."""
        policy = self.config.policy
        candidates = [d for d in self.deployments if d.breaker.allows()]
        if policy == "least-busy":
            candidates.sort(key=lambda d: d.in_flight)
        elif policy == "cheapest":
            candidates.sort(key=lambda d: d.unit_price())
        elif policy == "fastest":
            # An unmeasured deployment goes first so that it gets measured.
            candidates.sort(key=lambda d: d.seconds_per_token or 0.0)
        return candidates


class Router:
    """Maps model names to routes and runs a call with failover across a route's deployments."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._by_name: dict[str, Route] = {}
        for route in routes:
            for name in (route.config.name, *route.config.aliases):
                self._by_name[name] = route

    def add(self, route: Route) -> None:
        """Serve a model that started after the server did (a learned version); its names must be new."""
        taken = [n for n in (route.config.name, *route.config.aliases) if n in self._by_name]
        if taken:
            raise ValueError(f"model name '{taken[0]}' is served already")
        self.routes.append(route)
        for name in (route.config.name, *route.config.aliases):
            self._by_name[name] = route

    def remove(self, name: str) -> Route | None:
        """Stop routing to a model added with ``add``; its route, for its backends to be closed."""
        route = self._by_name.get(name)
        if route is None:
            return None
        self.routes.remove(route)
        for alias in (route.config.name, *route.config.aliases):
            self._by_name.pop(alias, None)
        return route

    def resolve(self, model: object) -> Route:
        """The route for a model name, or a 404."""
        if not isinstance(model, str) or not model:
            raise APIError(400, "'model' is required and must be a string.", param="model")
        route = self._by_name.get(model)
        if route is None:
            raise model_not_found(model)
        return route

    def knows(self, model: str) -> bool:
        """Whether a model name (canonical or alias) is served."""
        return model in self._by_name

    def for_tier(self, tier: str) -> Route | None:
        """The first model with a deployment of that tier (``edge`` or ``cloud``), if any."""
        return next(
            (r for r in self.routes if any(d.backend.config.tier == tier for d in r.deployments)), None
        )

    def deployments(self) -> list[Deployment]:
        """Every deployment once."""
        return [d for route in self.routes for d in route.deployments]

    async def call(self, route: Route, attempt: Callable[[Deployment], Awaitable[T]]) -> tuple[T, Deployment]:
        """Run ``attempt`` on deployments in policy order until one succeeds."""
        candidates = route.ordered()
        if not candidates:
            restarting = [d for d in route.deployments if d.plant_down is not None]
            if len(restarting) == len(route.deployments):
                # Every plant is being started again: that takes a second or two, not a cool-down.
                causes = "; ".join(f"{d.name}: {d.plant_down}" for d in restarting)
                raise upstream_failed(
                    f"Every deployment of '{route.name}' is restarting ({causes}); retry shortly.",
                    status=503,
                    retry_after_s=1,
                )
            wait = self._cooldown(route)
            raise upstream_failed(
                f"Every deployment of '{route.name}' is cooling down after failures; retry in {wait:.1f}s.",
                status=503,
                retry_after_s=wait,
            )
        errors: list[str] = []
        overloaded = interrupted = 0
        for deployment in candidates:
            deployment.breaker.on_attempt()
            deployment.in_flight += 1
            deployment.requests += 1
            try:
                result = await attempt(deployment)
            except BackendError as exc:
                if exc.overloaded:
                    deployment.breaker.release_probe()
                    overloaded += 1
                    errors.append(exc.message)
                    continue
                if not exc.retryable:
                    deployment.breaker.on_success()
                    raise
                deployment.failures += 1
                errors.append(exc.message)
                if exc.interrupted:
                    # The plant itself told the breaker it died; once is one failure.
                    interrupted += 1
                else:
                    deployment.breaker.on_failure(exc.message)
                continue
            finally:
                deployment.in_flight -= 1
            deployment.breaker.on_success()
            return result, deployment
        if overloaded == len(candidates):
            raise overloaded_error(f"Every deployment of '{route.name}' is at capacity: {'; '.join(errors)}.")
        failed = f"Every deployment of '{route.name}' failed: " + "; ".join(errors)
        if interrupted:
            # A plant died under the request and is being started again: the same call will be
            # answered shortly, so the client is told to retry, not that the request was bad.
            raise plant_interrupted(failed + ".")
        raise upstream_failed(failed, status=502)

    @staticmethod
    def _cooldown(route: Route) -> float:
        return min(d.breaker.cooldown_left() for d in route.deployments)
