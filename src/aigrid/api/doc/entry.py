"""The document's super entry operations: ask, confirm, decline and look."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from aigrid.api.doc.common import JSONObject, Open, Page
from aigrid.api.doc.registry import Operation
from aigrid.entry.planner import MAX_INPUT_CHARS
from aigrid.store.entries import ENTRY_STATES
from aigrid.store.payers import USER

_WAIT = Field(default=120, ge=0, le=600, description="Seconds to wait for the plan or the saga.")


class Wait(BaseModel):
    """How long to wait for the work before answering with where it stands."""

    wait: float = _WAIT


class Ask(Wait):
    """A sentence saying what is wanted; ``plan`` instead of the planner's, ``confirm`` to skip asking."""

    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS, pattern=r"\S")
    user: Annotated[str, Field(pattern=USER.pattern)] | SkipJsonSchema[None] = Field(
        default=None, description="Whose wallet pays; the tenant's name if left out."
    )
    confirm: bool = False
    plan: JSONObject | None = Field(default=None, description="A written plan: an object with 'steps'.")


class EntryQuery(BaseModel):
    """Which entries."""

    state: Literal[ENTRY_STATES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=50, ge=1, le=500)


class JournalStep(Open):
    """A step of the entry's saga; its payload's fields beside these."""

    seq: int
    kind: str
    created: int


class Entry(BaseModel):
    """An entry: the sentence, its plan, the summary to confirm, and what came of it."""

    object: Literal["entry"]
    id: str
    user: str
    input: str
    state: Literal[ENTRY_STATES]  # type: ignore[valid-type]
    summary: str | None
    answer: str | None
    plan: JSONObject | None
    created: int
    updated: int
    journal: list[JournalStep] | None = Field(default=None, description="Only on GET /v1/entry/{id}.")


OPERATIONS = [
    Operation(
        "POST",
        "/v1/entry",
        "Plan a sentence over the services",
        "entry",
        "key",
        {200: Entry},
        body=Ask,
        errors=(409, 429, 502, 503),
    ),
    Operation(
        "GET",
        "/v1/entry",
        "The caller's entries, newest first",
        "entry",
        "key",
        {200: Page[Entry]},
        query=EntryQuery,
    ),
    Operation("GET", "/v1/entry/{id}", "An entry and its saga's journal", "entry", "key", {200: Entry}),
    Operation(
        "POST",
        "/v1/entry/{id}/confirm",
        "Carry out what the summary said",
        "entry",
        "key",
        {200: Entry},
        body=Wait,
        body_required=False,
        errors=(409, 429, 502, 503),
    ),
    Operation(
        "POST", "/v1/entry/{id}/decline", "Do nothing of it", "entry", "key", {200: Entry}, errors=(409,)
    ),
]
