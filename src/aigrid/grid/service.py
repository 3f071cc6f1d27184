"""The grid as a Python service: admit, route, meter. The HTTP API and the kernel both call it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from aigrid.clock import now_us
from aigrid.errors import INTERRUPTED, APIError, bad_request, context_length_exceeded, internal_error
from aigrid.grid.backends.base import (
    BackendError,
    Completion,
    Endpoint,
    StreamSession,
    Usage,
    new_id,
)
from aigrid.grid.limits import Admission, Reservation
from aigrid.grid.meter import Metrics, cost_micro, worst_cost_micro
from aigrid.grid.router import Deployment, Route, Router
from aigrid.grid.tokens import estimate_prompt_tokens, requested_max_tokens
from aigrid.store.accounts import Principal
from aigrid.store.ledger import Ledger

log = logging.getLogger(__name__)
T = TypeVar("T")

_DONE_FRAME = b"data: [DONE]\n\n"
# Streams write their progress to the ledger this often, so a killed server loses little.
_PROGRESS_EVERY_S = 0.5


@dataclass(slots=True, frozen=True)
class CallMeta:
    """Who, beyond the key, a request is for: an agent and its process, when given."""

    agent: str | None = None
    process_id: str | None = None


def _validate(endpoint: Endpoint, body: Any) -> bool:
    """Check the request's shape; returns whether it asks for a stream."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' must be a non-empty array.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad_request(f"messages[{i}] must be an object with a 'role'.", param=f"messages[{i}]")
    elif endpoint == "completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, (str, list)) or not prompt:
            raise bad_request("'prompt' must be a non-empty string or array.", param="prompt")
    else:
        value = body.get("input")
        if not isinstance(value, (str, list)) or not value:
            raise bad_request("'input' must be a non-empty string or array.", param="input")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    if stream and endpoint == "embeddings":
        raise bad_request("Embeddings cannot be streamed.", param="stream")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise bad_request(f"'{key}' must be a positive integer.", param=key)
    return stream


class Grid:
    """Admits a request against limits and budgets, routes it to a plant and meters the result."""

    def __init__(self, router: Router, admission: Admission, ledger: Ledger, metrics: Metrics) -> None:
        self.router = router
        self.admission = admission
        self.ledger = ledger
        self.metrics = metrics

    async def request(
        self, principal: Principal, endpoint: Endpoint, body: Any, meta: CallMeta = CallMeta()
    ) -> tuple[str, Completion | MeteredStream]:
        """Serve one request; returns its ledger id and a whole answer or a metered stream."""
        request_id = new_id("req", "_")
        started = time.monotonic()
        row: dict[str, Any] = {
            "id": request_id,
            "created_at_us": now_us(),
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
            "agent": meta.agent,
            "process_id": meta.process_id,
            "endpoint": endpoint,
            "model": str(body.get("model"))[:128] if isinstance(body, dict) else "",
            "stream": False,
            "status": "in_progress",
        }
        try:
            stream = _validate(endpoint, body)
            row["stream"] = stream
            route = self.router.resolve(body.get("model"))
            row["model"] = route.name
            reservation = await self._admit(principal, route, endpoint, body)
        except APIError as exc:
            row.update(status="rejected", http_status=exc.status, error_code=exc.code, latency_us=0)
            self.ledger.add(row)
            # An unknown model name is the client's text: keep it out of metric labels.
            label = row["model"] if self.router.knows(row["model"]) else "unknown"
            self.metrics.record(principal.tenant, label, "rejected", Usage(), 0, None)
            raise
        call = _Call(self, principal, route, endpoint, body, row, started, reservation)
        if stream:
            return request_id, await call.stream()
        return request_id, await call.complete()

    async def _admit(
        self, principal: Principal, route: Route, endpoint: Endpoint, body: dict[str, Any]
    ) -> Reservation:
        configs = [d.backend.config for d in route.deployments]
        exact = await route.deployments[0].backend.count_prompt_tokens(endpoint, body)
        prompt = exact if exact is not None else estimate_prompt_tokens(endpoint, body)
        asked = requested_max_tokens(body)
        limit = max(cfg.context_length for cfg in configs)
        # An estimate overcounts on purpose; only a sure overflow is refused before forwarding.
        floor = exact if exact is not None else prompt // 2
        if endpoint != "embeddings" and floor + (asked or 0) > limit:
            raise context_length_exceeded(floor + (asked or 0), limit)
        output = 0 if endpoint == "embeddings" else asked or max(c.output_reservation for c in configs)
        cost = worst_cost_micro(configs, prompt, output)
        return await self.admission.admit(principal.tenant_id, prompt + output, cost)


class _Call:
    """One admitted request on its way through the router and back through the meter."""

    def __init__(
        self,
        grid: Grid,
        principal: Principal,
        route: Route,
        endpoint: Endpoint,
        body: dict[str, Any],
        row: dict[str, Any],
        started: float,
        reservation: Reservation,
    ) -> None:
        self.grid = grid
        self.principal = principal
        self.route = route
        self.endpoint = endpoint
        self.body = body
        self.row = row
        self.request_id: str = row["id"]
        self.started = started
        self.reservation = reservation

    def _settle(self, deployment: Deployment | None, usage: Usage) -> dict[str, Any]:
        cost = cost_micro(deployment.backend.config, usage) if deployment is not None else 0
        self.grid.admission.settle(self.reservation, usage.total_tokens, cost)
        return {
            "deployment": deployment.name if deployment is not None else None,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_micro": cost,
        }

    async def _fail(self, exc: APIError | BackendError, deployment: Deployment | None) -> APIError:
        values = self._settle(deployment, Usage())
        error = exc if isinstance(exc, APIError) else _from_backend(exc)
        values.update(
            status=INTERRUPTED if error.code == INTERRUPTED else "error",
            http_status=error.status,
            error_code=error.code[:64] if error.code else None,
            latency_us=int((time.monotonic() - self.started) * 1e6),
        )
        self.grid.metrics.record(self.principal.tenant, self.route.name, values["status"], Usage(), 0, None)
        await self.grid.ledger.write({**self.row, **values})
        return error

    async def _route(self, attempt: Callable[[Deployment], Awaitable[T]]) -> tuple[T, Deployment]:
        """Run the attempt through the router; a failure is recorded before it is raised."""
        try:
            return await self.grid.router.call(self.route, attempt)
        except (APIError, BackendError) as exc:
            raise await self._fail(exc, None) from exc
        except Exception as exc:
            log.exception("request %s failed", self.request_id)
            raise await self._fail(internal_error(), None) from exc

    async def complete(self) -> Completion:
        """A whole answer, committed to the ledger before it is returned."""
        model = self.route.name

        async def attempt(d: Deployment) -> Completion:
            return await d.backend.complete(self.endpoint, self.body, model)

        in_flight = self.grid.metrics.in_flight_of(model)
        in_flight.inc()
        try:
            completion, deployment = await self._route(attempt)
            elapsed = time.monotonic() - self.started
            deployment.observe(elapsed, completion.usage.completion_tokens)
            values = self._settle(deployment, completion.usage)
            # A whole answer's first token reaches the client with its last.
            latency_us = int(elapsed * 1e6)
            values.update(status="ok", http_status=200, latency_us=latency_us, ttft_us=latency_us)
            self.grid.metrics.record(
                self.principal.tenant, model, "ok", completion.usage, values["cost_micro"], elapsed
            )
            # A whole answer is recorded once, when it is known: one insert, committed before
            # the client gets a byte of it.
            await self.grid.ledger.write({**self.row, **values})
            completion.cost_micro = values["cost_micro"]
            return completion
        finally:
            in_flight.dec()

    async def stream(self) -> MeteredStream:
        """An open stream; the ledger row is closed when it ends, however it ends."""
        model = self.route.name
        options = self.body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))

        async def attempt(d: Deployment) -> StreamSession:
            return await d.backend.open_stream(self.endpoint, self.body, model, include_usage)

        session, deployment = await self._route(attempt)
        # A stream's row is committed before its first frame leaves, so a server killed
        # mid-stream still finds it at restart and records it as interrupted.
        try:
            await self.grid.ledger.write({**self.row, "deployment": deployment.name})
        except BaseException:
            session.close()
            self.grid.admission.settle(self.reservation, 0, 0)
            raise
        return MeteredStream(self, session, deployment)


class MeteredStream:
    """The frames of a stream, metered as they pass; the closing ``[DONE]`` waits for the ledger."""

    def __init__(self, call: _Call, session: StreamSession, deployment: Deployment) -> None:
        self._call = call
        self._session = session
        self._deployment = deployment
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        call = self._call
        grid = call.grid
        progress = self._session.progress
        model = call.route.name
        in_flight = grid.metrics.in_flight_of(model)
        in_flight.inc()
        self._deployment.in_flight += 1
        next_progress = time.monotonic() + _PROGRESS_EVERY_S
        try:
            async for frame in self._session.frames():
                yield frame
                now = time.monotonic()
                if now >= next_progress:
                    next_progress = now + _PROGRESS_EVERY_S
                    grid.ledger.progress(call.request_id, self._counts(progress.usage))
        except BackendError as exc:
            # The tokens already sent stand and are billed; a plant that died marks the row so.
            await self._finish(INTERRUPTED if exc.interrupted else "error", exc.message)
            yield b"data: " + _from_backend(exc).to_json() + b"\n\n"
            return
        except BaseException:
            # The client went away (or the task was cancelled): record what was produced,
            # without awaiting, since a cancelled task cannot wait for the commit.
            self._finish_nowait()
            raise
        finally:
            self._deployment.in_flight -= 1
            in_flight.dec()
        await self._finish("ok", None)
        yield _DONE_FRAME

    def _counts(self, usage: Usage) -> dict[str, Any]:
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_micro": cost_micro(self._deployment.backend.config, usage),
        }

    def _final_values(self, status: str, error: str | None) -> dict[str, Any]:
        call = self._call
        progress = self._session.progress
        usage = progress.usage
        elapsed = time.monotonic() - call.started
        values = call._settle(self._deployment, usage)
        values.update(
            status=status,
            http_status=200,
            error_code=error[:64] if error else None,
            latency_us=int(elapsed * 1e6),
            ttft_us=int((progress.first_token_at - call.started) * 1e6) if progress.first_token_at else None,
        )
        if status == "ok":
            self._deployment.observe(elapsed, usage.completion_tokens)
        if progress.first_token_at is not None:
            call.grid.metrics.ttft.labels(call.route.name).observe(progress.first_token_at - call.started)
        call.grid.metrics.record(
            call.principal.tenant, call.route.name, status, usage, values["cost_micro"], elapsed
        )
        return values

    async def _finish(self, status: str, error: str | None) -> None:
        self._closed = True
        self._session.close()
        await self._call.grid.ledger.close(self._call.request_id, self._final_values(status, error))

    def _finish_nowait(self) -> None:
        self._closed = True
        self._session.close()
        self._call.grid.ledger.progress(self._call.request_id, self._final_values("interrupted", None))

    def abandon(self) -> None:
        """Give up a stream that was never iterated (the client left before it began)."""
        if not self._closed:
            self._finish_nowait()


def _from_backend(exc: BackendError) -> APIError:
    """An upstream's own error, passed on in the OpenAI shape."""
    if exc.body:
        try:
            parsed = orjson.loads(exc.body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            err = parsed["error"]
            return APIError(
                exc.status,
                str(err.get("message") or exc.message),
                type=str(err.get("type") or "invalid_request_error"),
                code=err.get("code") if isinstance(err.get("code"), str) else None,
                param=err.get("param") if isinstance(err.get("param"), str) else None,
            )
    return APIError(
        exc.status, exc.message, type="api_error", code=INTERRUPTED if exc.interrupted else "upstream_error"
    )
