"""Errors in the OpenAI error shape, shared by every layer that answers HTTP."""

from __future__ import annotations

from typing import Any

import orjson


class APIError(Exception):
    """An error the API answers with, in the OpenAI shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON object the client receives."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        """The serialized error body."""
        return orjson.dumps(self.body())


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 for malformed or unsupported input."""
    return APIError(400, message, param=param, code=code)


def unsupported_parameter(param: str, detail: str = "") -> APIError:
    """A 400 naming the parameter this model cannot honour."""
    text = f"Unsupported parameter: '{param}'" + (f" ({detail})" if detail else "")
    return APIError(400, text, param=param, code="unsupported_parameter")


def unauthorized(message: str = "Invalid API key provided.") -> APIError:
    """A 401 for a missing or unknown key."""
    return APIError(401, message, type="authentication_error", code="invalid_api_key")


def forbidden(message: str) -> APIError:
    """A 403 for a key that may not do this."""
    return APIError(403, message, type="permission_error", code="forbidden")


def not_found(message: str, *, code: str = "not_found", param: str | None = None) -> APIError:
    """A 404 for an unknown object."""
    return APIError(404, message, code=code, param=param)


def model_not_found(model: str) -> APIError:
    """A 404 for a model name no route serves."""
    return APIError(404, f"The model '{model}' does not exist.", code="model_not_found", param="model")


def context_length_exceeded(tokens: int, limit: int) -> APIError:
    """A 400 for a prompt that does not fit the model's context."""
    return APIError(
        400,
        f"This model's maximum context length is {limit} tokens, but the request needs {tokens} tokens.",
        code="context_length_exceeded",
        param="messages",
    )


def retry_after(seconds: float) -> dict[str, str]:
    """The Retry-After header for a wait of ``seconds``, in whole seconds, at least one."""
    return {"Retry-After": str(max(1, int(seconds + 0.999)))}


def rate_limited(message: str, retry_after_s: float) -> APIError:
    """A 429 for a rate limit, with Retry-After."""
    return APIError(
        429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=retry_after(retry_after_s)
    )


def insufficient_quota(message: str) -> APIError:
    """A 429 for a spent budget."""
    return APIError(429, message, type="insufficient_quota", code="insufficient_quota")


def upstream_failed(message: str, *, status: int = 502, retry_after_s: float | None = None) -> APIError:
    """A 502/503 when no deployment could answer; with Retry-After when it is known when to try again."""
    headers = None if retry_after_s is None else retry_after(retry_after_s)
    return APIError(status, message, type="api_error", code="upstream_error", headers=headers)


def plant_interrupted(message: str) -> APIError:
    """A 503 for a request whose plant died while it answered; the plant restarts within seconds."""
    return APIError(503, message, type="api_error", code=INTERRUPTED, headers=retry_after(1))


# The error code, and the ledger status, of a request cut off by its plant's death.
INTERRUPTED = "interrupted"


def internal_error() -> APIError:
    """A 500 that tells the client nothing about the server's insides."""
    return APIError(
        500, "The server failed to process the request.", type="server_error", code="internal_error"
    )


def overloaded_error(message: str) -> APIError:
    """A 503 for a grid at capacity: nothing failed, the client should retry shortly."""
    return APIError(503, message, type="api_error", code="overloaded", headers=retry_after(1))
