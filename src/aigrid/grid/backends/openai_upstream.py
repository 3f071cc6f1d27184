"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, Ollama, DashScope, OpenAI)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from aigrid.config import DeploymentConfig
from aigrid.grid.backends.base import (
    Backend,
    BackendError,
    Completion,
    Endpoint,
    StreamSession,
    Usage,
)
from aigrid.grid.backends.http_pool import ConnectionPool, HTTPError, Response
from aigrid.grid.tokens import estimate_completion_tokens, estimate_prompt_tokens

_PATHS: dict[Endpoint, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
_DONE = b"[DONE]"


def usage_from(payload: dict[str, Any]) -> Usage | None:
    """Read an OpenAI ``usage`` object, if the payload carries one."""
    raw = payload.get("usage")
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(cached or 0),
    )


class OpenAIUpstream(Backend):
    """Forwards requests to an OpenAI-compatible base URL over a pooled HTTP client."""

    def __init__(self, name: str, config: DeploymentConfig) -> None:
        super().__init__(name, config)
        assert config.base_url and config.upstream_model
        self._upstream_model = config.upstream_model
        self._pool = ConnectionPool(
            config.base_url, limit=config.max_connections, connect_timeout=config.connect_timeout_s
        )
        self._headers = [
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ]
        if config.api_key_env and os.environ.get(config.api_key_env):
            self._headers.append(("Authorization", f"Bearer {os.environ[config.api_key_env]}"))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._pool.close()

    def _payload(self, body: dict[str, Any], stream: bool) -> bytes:
        out = dict(body)
        out["model"] = self._upstream_model
        if stream:
            options = dict(out.get("stream_options") or {})
            options["include_usage"] = True
            out["stream_options"] = options
        return orjson.dumps(out)

    async def _post(self, endpoint: Endpoint, payload: bytes, stream: bool) -> Response:
        try:
            resp = await self._pool.post(
                _PATHS[endpoint], payload, self._headers, stream=stream, idle_timeout=self.config.timeout_s
            )
        except HTTPError as exc:
            raise BackendError(f"{self.name}: cannot reach upstream: {exc}", retryable=True) from exc
        if resp.status != 200:
            try:
                data = await resp.read()
            except HTTPError:
                data = b""
            retryable = resp.status >= 500 or resp.status == 429
            raise BackendError(
                f"{self.name}: upstream answered {resp.status}",
                retryable=retryable,
                status=resp.status,
                body=data or None,
            )
        return resp

    async def complete(self, endpoint: Endpoint, body: dict[str, Any], model: str) -> Completion:
        """Forward a whole request and read the usage from the answer."""
        resp = await self._post(endpoint, self._payload(body, stream=False), stream=False)
        try:
            data = await resp.read()
        except HTTPError as exc:
            raise BackendError(f"{self.name}: upstream broke off: {exc}", retryable=True) from exc
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BackendError(f"{self.name}: upstream sent invalid JSON", retryable=True) from exc
        usage = usage_from(parsed) if isinstance(parsed, dict) else None
        if usage is None:
            usage = Usage(
                prompt_tokens=estimate_prompt_tokens(endpoint, body),
                completion_tokens=estimate_completion_tokens(parsed),
            )
        return Completion(body=data, usage=usage)

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], model: str, include_usage: bool
    ) -> StreamSession:
        """Open an upstream stream, always asking it for usage."""
        resp = await self._post(endpoint, self._payload(body, stream=True), stream=True)
        return _UpstreamStream(self.name, resp, include_usage)


class _UpstreamStream(StreamSession):
    def __init__(self, name: str, resp: Response, include_usage: bool) -> None:
        super().__init__()
        self._name = name
        self._resp = resp
        self._include_usage = include_usage
        self._reported_usage = False

    async def frames(self) -> AsyncIterator[bytes]:
        buffer = b""
        done = False
        try:
            async for block in self._resp.iter_chunks():
                if done:
                    # Read to the end of the body after [DONE], so the connection can be reused.
                    continue
                buffer += block
                out, buffer, done = self._take_events(buffer)
                if out:
                    yield out
        except HTTPError as exc:
            raise BackendError(f"{self._name}: stream broke off: {exc}", retryable=False) from exc
        self.progress.finished = True

    def _take_events(self, buffer: bytes) -> tuple[bytes, bytes, bool]:
        buffer = buffer.replace(b"\r\n", b"\n")
        parts = buffer.split(b"\n\n")
        rest = parts.pop()
        out: list[bytes] = []
        for event in parts:
            frame = self._filter(event)
            if frame is _DONE:
                return b"".join(out), b"", True
            if frame:
                out.append(frame)
        return b"".join(out), rest, False

    def _filter(self, event: bytes) -> bytes | None:
        data = b"".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return None
        if data == _DONE:
            return _DONE
        progress = self.progress
        if b'"usage"' in data:
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                return event + b"\n\n"
            usage = usage_from(payload)
            if usage is not None:
                progress.usage = usage
                self._reported_usage = True
                if not self._include_usage:
                    if not payload.get("choices"):
                        return None
                    payload.pop("usage", None)
                    data = orjson.dumps(payload)
            elif not self._include_usage and "usage" in payload:
                payload.pop("usage")
                data = orjson.dumps(payload)
        if b'"content"' in data or b'"tool_calls"' in data or b'"text"' in data:
            progress.mark_token()
            if not self._reported_usage:
                progress.usage.completion_tokens += 1
        return b"data: " + data + b"\n\n"

    def close(self) -> None:
        self._resp.close()
