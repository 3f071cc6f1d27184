"""Routing policies, failover and circuit breakers, with fake backends."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from aigrid.config import BreakerConfig, DeploymentConfig, ModelConfig
from aigrid.errors import APIError
from aigrid.grid.backends.base import Backend, BackendError, Completion, Endpoint, StreamSession, Usage
from aigrid.grid.router import CircuitBreaker, Deployment, Route, Router


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeBackend(Backend):
    """A backend double that fails a set number of times, then answers."""

    def __init__(
        self, name: str, *, failures: int = 0, retryable: bool = True, price: int = 1, busy: bool = False
    ) -> None:
        cfg = DeploymentConfig(
            backend="openai",
            base_url="http://fake.invalid/v1",
            upstream_model="m",
            input_price_per_mtok=Decimal(price),
        )
        super().__init__(name, cfg)
        self.failures = failures
        self.retryable = retryable
        self.busy = busy
        self.calls = 0

    async def complete(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> Completion:
        self.calls += 1
        if self.busy:
            raise BackendError(f"{self.name} is full", retryable=True, status=503, overloaded=True)
        if self.failures:
            self.failures -= 1
            raise BackendError(
                f"{self.name} broke", retryable=self.retryable, status=500 if self.retryable else 400
            )
        return Completion(self.name.encode(), Usage(1, 1))

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], model: str, include_usage: bool
    ) -> StreamSession:
        raise NotImplementedError


def _route(policy: str, *backends: FakeBackend, clock: FakeClock | None = None) -> Route:
    config = ModelConfig(
        name="m",
        policy=policy,
        deployments=[b.config for b in backends],  # type: ignore[arg-type]
    )
    breaker_cfg = BreakerConfig(cooldown_s=5, max_cooldown_s=40)
    return Route(config, [Deployment(b, CircuitBreaker(breaker_cfg, clock or FakeClock())) for b in backends])


async def _call(router: Router, route: Route) -> str:
    result, _ = await router.call(route, lambda d: d.backend.complete("chat", {}, "m"))
    return result.body.decode()


def test_breaker_cools_down_doubles_and_recovers() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(cooldown_s=5, max_cooldown_s=12), clock)
    breaker.on_failure("boom")
    assert breaker.state == "open" and not breaker.allows()
    clock.now += 5
    assert breaker.state == "half-open" and breaker.allows()
    breaker.on_attempt()
    assert not breaker.allows(), "a half-open breaker lets one probe through at a time"
    breaker.on_failure("boom again")
    assert breaker.cooldown_left() == pytest.approx(10)
    clock.now += 10
    breaker.on_failure("and again")
    assert breaker.cooldown_left() == pytest.approx(12), "the cool-down is capped"
    clock.now += 12
    breaker.on_attempt()
    breaker.on_success()
    assert breaker.state == "closed" and breaker.last_error is None


async def test_failover_goes_in_order_and_cools_the_failed_one() -> None:
    first, second = FakeBackend("first", failures=1), FakeBackend("second")
    route = _route("failover", first, second)
    router = Router([route])
    assert await _call(router, route) == "second"
    assert route.deployments[0].breaker.state == "open"
    assert await _call(router, route) == "second"
    assert first.calls == 1


async def test_non_retryable_errors_are_not_failed_over() -> None:
    first, second = FakeBackend("first", failures=1, retryable=False), FakeBackend("second")
    route = _route("failover", first, second)
    with pytest.raises(BackendError):
        await _call(Router([route]), route)
    assert second.calls == 0
    assert route.deployments[0].breaker.state == "closed"


async def test_all_failing_is_502_and_all_cooling_is_503() -> None:
    route = _route("failover", FakeBackend("a", failures=9), FakeBackend("b", failures=9))
    router = Router([route])
    with pytest.raises(APIError) as first:
        await _call(router, route)
    assert first.value.status == 502 and "a broke" in first.value.message
    with pytest.raises(APIError) as second:
        await _call(router, route)
    assert second.value.status == 503


async def test_cheapest_and_least_busy_and_fastest_orders() -> None:
    pricey, cheap = FakeBackend("pricey", price=9), FakeBackend("cheap", price=1)
    route = _route("cheapest", pricey, cheap)
    assert await _call(Router([route]), route) == "cheap"

    busy, idle = FakeBackend("busy"), FakeBackend("idle")
    route = _route("least-busy", busy, idle)
    route.deployments[0].in_flight = 3
    assert await _call(Router([route]), route) == "idle"

    slow, quick = FakeBackend("slow"), FakeBackend("quick")
    route = _route("fastest", slow, quick)
    route.deployments[0].observe(1.0, 10)
    route.deployments[1].observe(0.1, 10)
    assert await _call(Router([route]), route) == "quick"
    route.deployments[1].observe(10.0, 10)
    assert route.deployments[1].seconds_per_token == pytest.approx(0.01 + 0.2 * (1.0 - 0.01))


def test_resolve_names_aliases_and_rejects_bad_names() -> None:
    config = ModelConfig(name="big", aliases=["b"], deployments=[FakeBackend("x").config])
    router = Router([Route(config)])
    assert router.resolve("b").name == "big"
    with pytest.raises(APIError) as missing:
        router.resolve("small")
    assert missing.value.status == 404 and missing.value.code == "model_not_found"
    with pytest.raises(APIError) as bad:
        router.resolve(None)
    assert bad.value.status == 400


async def test_a_full_deployment_is_skipped_without_opening_its_breaker() -> None:
    full, spare = FakeBackend("full", busy=True), FakeBackend("spare")
    route = _route("failover", full, spare)
    router = Router([route])
    assert await _call(router, route) == "spare"
    assert route.deployments[0].breaker.state == "closed"
    assert await _call(router, route) == "spare"
    assert full.calls == 2, "a full deployment is tried again at once: it is busy, not broken"


async def test_every_deployment_full_is_503_overloaded_with_retry_after() -> None:
    route = _route("failover", FakeBackend("a", busy=True), FakeBackend("b", busy=True))
    with pytest.raises(APIError) as err:
        await _call(Router([route]), route)
    assert err.value.status == 503 and err.value.code == "overloaded"
    assert err.value.headers["Retry-After"] == "1"
    assert all(d.breaker.state == "closed" for d in route.deployments)


async def test_a_plant_that_says_it_died_is_skipped_at_once_and_taken_back_when_it_says_so() -> None:
    engine, cloud = FakeBackend("engine"), FakeBackend("cloud")
    route = _route("failover", engine, cloud)
    router = Router([route])
    engine.tell("the engine process killed by SIGSEGV (a fault in native code)")
    assert await _call(router, route) == "cloud" and engine.calls == 0, "no request had to find out"
    engine.tell(None)
    assert await _call(router, route) == "engine", "back at once, without waiting out the cool-down"


async def test_when_every_plant_is_restarting_the_503_says_so_and_to_retry_in_a_second() -> None:
    engine = FakeBackend("engine")
    route = _route("failover", engine)
    engine.tell("the engine process killed by SIGKILL (out of memory, or killed by hand)")
    with pytest.raises(APIError) as err:
        await _call(Router([route]), route)
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"
    assert "restarting" in err.value.message and "SIGKILL" in err.value.message


async def test_a_plant_interrupted_mid_answer_fails_over_and_counts_one_failure() -> None:
    class Dying(FakeBackend):
        async def complete(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> Completion:
            self.calls += 1
            self.tell("the engine process killed by SIGSEGV (a fault in native code)")
            raise BackendError(
                "engine: the engine process died", retryable=True, status=503, interrupted=True
            )

    dying, cloud = Dying("engine"), FakeBackend("cloud")
    route = _route("failover", dying, cloud)
    assert await _call(Router([route]), route) == "cloud"
    assert route.deployments[0].breaker.consecutive_failures == 1, "the plant's own word is the one failure"
    alone = _route("failover", Dying("engine"))
    with pytest.raises(APIError) as err:
        await _call(Router([alone]), alone)
    assert (
        err.value.status == 503
        and err.value.code == "interrupted"
        and err.value.headers["Retry-After"] == "1"
    )
