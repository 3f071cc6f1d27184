"""What a third-party service says about itself: its category, and what each operation does to the world."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

OPERATION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class Operation(BaseModel):
    """One operation (a tool of the service): whether it changes the world, what undoes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confirm: bool = False  # it orders, books or pays: the user confirms before it runs
    # The operation that compensates it; none for one that cannot be undone (a plan runs it last).
    undo: str | None = Field(default=None, pattern=OPERATION_NAME)
    idempotency: bool = False  # it takes an ``idempotency_key`` argument, so a retry is safe


class Manifest(BaseModel):
    """A service's manifest, given when it is registered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    description: str = Field(min_length=1, max_length=2000)
    operations: dict[str, Operation] = Field(min_length=1, max_length=256)
    # The argument of its operations that names whose wallet or account they act on: aigrid lets a
    # tenant name there only users it acts for, so a service shared by all tenants tells none of
    # them about another's users.
    payer: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for name, operation in self.operations.items():
            if operation.undo is not None and operation.undo not in self.operations:
                raise ValueError(
                    f"operation '{name}' is undone by '{operation.undo}', which the manifest lacks"
                )
        return self
