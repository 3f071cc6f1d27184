"""The document's learning operations: traces, feedback, suites, evals, memory, and the weight loop."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from aigrid.api.agents import MAX_ID
from aigrid.api.doc.common import Deleted, JSONObject, Open, Page
from aigrid.api.doc.registry import Operation, Reply
from aigrid.learn.evals import MAX_BEST_OF
from aigrid.learn.sampling import CODE_TEACHER
from aigrid.learn.suites import SPLITS, SUITES
from aigrid.store.experience import EXPERIENCE_KINDS
from aigrid.store.feedback import FEEDBACK_KINDS
from aigrid.store.learned import TASK_KINDS
from aigrid.store.traces import OUTCOMES, TRACE_KINDS

_TENANT = "The admin key: whose records (reads: all if left out; actions: its own)."
_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
_LONG_WAIT = Field(default=0, ge=0, le=3600, description="Seconds to wait for the end before answering.")
Kind = Literal[TASK_KINDS]  # type: ignore[valid-type]


class Tenant(BaseModel):
    """Whose records."""

    tenant: str | None = Field(default=None, description=_TENANT)


class TraceQuery(Tenant):
    """Which traces."""

    kind: Literal[TRACE_KINDS] | None = None  # type: ignore[valid-type]
    outcome: Literal[OUTCOMES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=50, ge=1, le=500)


class Trace(Open):
    """What one plan, compile, process or completion did, judged."""

    id: int
    object: Literal["trace"]
    kind: str
    outcome: str | None
    created_at: int


def _only(kind: str) -> dict[str, Any]:
    others = [k for k in FEEDBACK_KINDS if k != kind] + ([] if kind == "agent" else ["version"])
    return {
        "required": [kind],
        "properties": {kind: {"type": "string"}},
        "not": {"anyOf": [{"required": [k]} for k in others]},
    }


class FeedbackIn(BaseModel):
    """A rating on exactly one of a completion, process, entry or agent (``version``: an agent's)."""

    model_config = {"json_schema_extra": {"oneOf": [_only(k) for k in FEEDBACK_KINDS]}}

    completion: str | None = Field(default=None, pattern="^req_", max_length=96, description="X-Request-Id")
    process: str | None = Field(default=None, min_length=1, max_length=96)
    entry: str | None = Field(default=None, min_length=1, max_length=96)
    agent: str | None = Field(default=None, min_length=1, max_length=96)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="Only with 'agent'.")
    rating: Literal[1, -1, 0]
    comment: str | None = Field(default=None, max_length=4000)
    correction: str | JSONObject | list[Any] | None = None
    tenant: str | None = Field(default=None, description=_TENANT)


class FeedbackQuery(Tenant):
    """Which feedback."""

    kind: Literal[FEEDBACK_KINDS] | None = None  # type: ignore[valid-type]
    target: str | None = None
    limit: int = Field(default=50, ge=1, le=500)


class Feedback(BaseModel):
    """Feedback received."""

    id: int
    object: Literal["feedback"]
    kind: str
    target: str
    rating: int
    comment: str | None
    correction: str | None
    created_at: int


class Suite(BaseModel):
    """A task suite, its metrics and its recorded splits."""

    name: str
    description: str
    metrics: list[str]
    splits: dict[str, JSONObject]


class EvalIn(BaseModel):
    """A suite's split to run against a model."""

    suite: Literal[tuple(SUITES)]  # type: ignore[valid-type]
    split: Literal[SPLITS] = "heldout"  # type: ignore[valid-type]
    model: str | None = Field(default=None, min_length=1, max_length=128, description="A grid model or tier.")
    experience: bool = True
    limit: int | None = Field(default=None, ge=1, le=100_000)
    best_of: int | None = Field(default=None, ge=1, le=MAX_BEST_OF)
    wait: float = _LONG_WAIT
    tenant: str | None = Field(default=None, description=_TENANT)


class EvalRun(Open):
    """A run of a suite's split (with its results when one run is asked for)."""

    id: str
    object: Literal["eval_run"]
    suite: str
    split: str
    model: str | None
    state: str
    total: int
    done: int
    metrics: dict[str, JSONObject]
    error: str | None
    started_at: int
    ended_at: int | None
    results: list[JSONObject] | None = None


class EvalQuery(Tenant):
    """Which runs."""

    suite: Literal[tuple(SUITES)] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=50, ge=1, le=500)


class CompareQuery(Tenant):
    """The two runs to compare."""

    a: str = Field(min_length=1)
    b: str = Field(min_length=1)


class Comparison(BaseModel):
    """Two runs side by side."""

    object: Literal["eval_comparison"]
    a: EvalRun
    b: EvalRun
    metrics: list[JSONObject]
    tasks: list[JSONObject]


class ExampleQuery(Tenant):
    """Which examples."""

    kind: Literal[EXPERIENCE_KINDS] | None = None  # type: ignore[valid-type]
    outcome: Literal["success", "failure"] | None = None
    limit: int = Field(default=50, ge=1, le=500)


class Example(Open):
    """A worked example in the experience memory."""

    id: int
    object: Literal["experience"]
    kind: str
    text: str
    outcome: str
    shared: bool
    created_at: int


class Examples(Page[Example]):
    """Examples, with how many of each kind and outcome there are."""

    counts: JSONObject


class TeachIn(BaseModel):
    """A suite whose verified training examples go into the memory."""

    suite: Literal[tuple(SUITES)]  # type: ignore[valid-type]
    limit: int | None = Field(default=None, ge=1, le=100_000)
    tenant: str | None = Field(default=None, description="The admin key naming none teaches every tenant.")


class Teaching(BaseModel):
    """What teaching put in."""

    object: Literal["teaching"]
    suite: str
    shared: bool
    taught: int
    already: int
    refused: int
    refusals: list[Any]
    seconds: float


class DatasetIn(BaseModel):
    """A dataset to build from verified traces (of ``tenant``, or of all)."""

    kind: Kind
    tenant: str | None = None


class Dataset(Open):
    """A training dataset."""

    id: str
    object: Literal["dataset"]
    kind: str
    examples: int
    sources: JSONObject
    left_out: JSONObject
    sha256: str
    created_at: int
    preview: list[Any] | None = Field(default=None, description="Only on GET /v1/learn/datasets/{id}.")


class KindQuery(BaseModel):
    """Of which task kind."""

    kind: Kind | None = None


class PreviewQuery(BaseModel):
    """How many examples to show."""

    examples: int = Field(default=3, ge=0, le=20)


class TrainIn(BaseModel):
    """A new version of ``kind`` trained on ``dataset``, from the base model or ``from`` a learned one."""

    kind: Kind = "planner"
    dataset: str = Field(min_length=1)
    train: JSONObject = Field(default_factory=dict, description="Training settings.")
    from_: str | None = Field(default=None, alias="from", pattern="@", description="A learned version.")
    wait: float = _LONG_WAIT


class LearnedModel(Open):
    """A learned version and its lineage."""

    id: str
    object: Literal["learned_model"]
    kind: str
    base: str
    dataset: str | None
    state: str
    lineage: JSONObject
    error: str | None
    created_at: int
    updated_at: int
    served: bool


class LearnedModels(Page[LearnedModel]):
    """Learned versions, the models in use, and the last changes."""

    in_use: dict[str, str]
    history: list[JSONObject]


class WaitIn(BaseModel):
    """How long to wait."""

    wait: float = _LONG_WAIT


class PromoteIn(BaseModel):
    """The gate's settings."""

    limit: int | None = Field(default=None, ge=1, le=100_000)
    experience: bool | SkipJsonSchema[None] = Field(
        default=None, description="The server's setting if left out."
    )


class Promotion(Open):
    """The gate's decision."""

    object: Literal["promotion"]
    promoted: bool
    reason: str


class RollbackIn(BaseModel):
    """The kind whose last promotion to undo."""

    kind: Kind


class Rollback(Open):
    """What was put back."""

    object: Literal["rollback"]
    kind: str


class RoundIn(BaseModel):
    """A round: sample, verify, build a dataset, train, and run the gate."""

    kind: Kind = "planner"
    tasks: int | None = Field(default=None, ge=1, le=100_000)
    k: int = Field(default=4, ge=0, le=32)
    temperature: float = 0.8
    teacher: str | None = Field(default=CODE_TEACHER, description=f"'{CODE_TEACHER}', a grid model, or null.")
    experience: bool | SkipJsonSchema[None] = Field(
        default=None, description="The server's setting if left out."
    )
    train: JSONObject = Field(default_factory=dict)
    promote: bool = True
    gate_limit: int | None = Field(default=None, ge=1, le=100_000)
    student: str | None = Field(default=None, description="A model this grid serves.")
    start: int | None = Field(default=None, ge=0, le=1_000_000)
    wait: float = _LONG_WAIT


class Round(Open):
    """A round of the loop."""

    id: str
    object: Literal["learning_round"]
    kind: str
    state: str
    error: str | None
    started_at: int
    ended_at: int | None


def _op(
    method: str, path: str, summary: str, replies: dict[int, Reply | type[BaseModel]], **kw: Any
) -> Operation:
    auth = kw.pop("auth", "key")
    return Operation(method, path, summary, "learn", auth, replies, errors=kw.pop("errors", (409,)), **kw)


def _admin(
    method: str, path: str, summary: str, replies: dict[int, Reply | type[BaseModel]], **kw: Any
) -> Operation:
    return _op(method, path, summary, replies, auth="admin", **kw)


_BUSY = "Still running after `wait` seconds"
OPERATIONS = [
    _op("GET", "/v1/traces", "Traces, newest first", {200: Page[Trace]}, query=TraceQuery),
    _op("GET", "/v1/traces/{id}", "A trace", {200: Trace}, query=Tenant, path_schemas={"id": _ID}),
    _op(
        "POST",
        "/v1/feedback",
        "A rating on a completion, process, entry or agent",
        {201: Feedback},
        body=FeedbackIn,
    ),
    _op("GET", "/v1/feedback", "Feedback received, newest first", {200: Page[Feedback]}, query=FeedbackQuery),
    _op("GET", "/v1/learn/suites", "Task suites and their splits", {200: Page[Suite]}),
    _op(
        "POST",
        "/v1/learn/evals",
        "Run a suite's split against a model",
        {200: EvalRun, 202: Reply(EvalRun, _BUSY)},
        body=EvalIn,
    ),
    _op("GET", "/v1/learn/evals", "Eval runs, newest first", {200: Page[EvalRun]}, query=EvalQuery),
    _op("GET", "/v1/learn/evals/{id}", "A run with its results", {200: EvalRun}, query=Tenant),
    _op("GET", "/v1/learn/compare", "Two runs side by side", {200: Comparison}, query=CompareQuery),
    _op("GET", "/v1/learn/memory", "Experience examples, newest first", {200: Examples}, query=ExampleQuery),
    _op(
        "DELETE",
        "/v1/learn/memory/{id:example}",
        "Forget an example",
        {200: Deleted},
        query=Tenant,
        path_schemas={"id": _ID},
    ),
    _op(
        "POST",
        "/v1/learn/memory/teach",
        "Teach a suite's training examples",
        {200: Teaching},
        query=Tenant,
        body=TeachIn,
    ),
    _admin(
        "POST", "/v1/learn/datasets", "Build a dataset from verified traces", {201: Dataset}, body=DatasetIn
    ),
    _admin("GET", "/v1/learn/datasets", "Datasets, newest first", {200: Page[Dataset]}, query=KindQuery),
    _admin(
        "GET",
        "/v1/learn/datasets/{id}",
        "A dataset and its first examples",
        {200: Dataset},
        query=PreviewQuery,
    ),
    _admin(
        "GET",
        "/v1/learn/datasets/{id}/export",
        "A dataset's examples as JSON lines",
        {200: Reply({"type": "string"}, "OpenAI's fine-tuning format", "application/jsonl")},
        errors=(410,),
    ),
    _admin(
        "POST",
        "/v1/learn/models",
        "Train a new version",
        {200: LearnedModel, 202: Reply(LearnedModel, _BUSY)},
        body=TrainIn,
    ),
    _admin(
        "GET",
        "/v1/learn/models",
        "Learned versions and the models in use",
        {200: LearnedModels},
        query=KindQuery,
    ),
    _admin("GET", "/v1/learn/models/{name}", "A version and its lineage", {200: LearnedModel}),
    _admin(
        "POST",
        "/v1/learn/models/{name}/resume",
        "Go on training from the checkpoint",
        {200: LearnedModel, 202: Reply(LearnedModel, _BUSY)},
        body=WaitIn,
        body_required=False,
    ),
    _admin(
        "POST",
        "/v1/learn/models/{name}/promote",
        "The gate: in use only if it wins",
        {200: Promotion},
        body=PromoteIn,
        body_required=False,
    ),
    _admin(
        "POST",
        "/v1/learn/rollback",
        "Put back what was in use before the last promotion",
        {200: Rollback},
        body=RollbackIn,
    ),
    _admin(
        "POST",
        "/v1/learn/rounds",
        "A round of the loop",
        {200: Round, 202: Reply(Round, _BUSY)},
        body=RoundIn,
        body_required=False,
    ),
    _admin("GET", "/v1/learn/rounds", "This server's rounds, newest first", {200: Page[Round]}),
    _admin("GET", "/v1/learn/rounds/{id}", "A round", {200: Round}),
]
