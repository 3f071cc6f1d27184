"""Models every area of the document shares: the error shape, lists, and deleted-object answers."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ErrorDetail(BaseModel):
    """What went wrong, in OpenAI's shape."""

    message: str
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, ...")
    param: str | None
    code: str | None


class Error(BaseModel):
    """Every error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    """A list in OpenAI's shape."""

    object: Literal["list"]
    data: list[T]


class Open(BaseModel):
    """An object whose fields beyond those named are the server's own to add."""

    model_config = ConfigDict(extra="allow")


class Deleted(BaseModel):
    """The answer to removing an object: its handle and ``deleted: true``."""

    object: str
    deleted: Literal[True]


JSONObject = dict[str, Any]
