"""What the registered services can do, as the planner and the saga see it.

Each operation of a service that is up, with its parameters, whether it changes the world, what
undoes it and whether it is paid: an operation that takes a ``payment_id`` is paid through the
payment service, whose protocol is stated here (a service of category ``payment`` with
``authorise(user, amount_cents)``, ``capture``, ``void`` and ``refund`` of a ``payment_id``).
The saga pays; the planner never sees ``payment_id`` or the payment operations that move money.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from aigrid.entry.manifest import Manifest
from aigrid.entry.registry import Service
from aigrid.kernel.tools import Tool, ToolRegistry

PAYMENT_CATEGORY = "payment"
PAYMENT_ARG = "payment_id"
PAYMENT_PROTOCOL = ("authorise", "capture", "void", "refund")


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a registered service."""

    service: str
    category: str
    op: str
    tool: Tool
    parameters: dict[str, Any]  # what the planner fills: without payment_id
    changes_world: bool
    undo: str | None
    idempotent: bool
    paid: bool

    @property
    def name(self) -> str:
        """``service.op``, as plans name it."""
        return f"{self.service}.{self.op}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every operation of the services that are up, and the payment service if there is one."""

    operations: dict[str, Operation]
    payment: str | None  # the name of the service that pays, if one follows the protocol
    descriptions: dict[str, str] = field(default_factory=dict)  # each service's, from its manifest

    def get(self, name: str) -> Operation | None:
        """The operation ``service.op``, if a service that is up has it."""
        return self.operations.get(name)

    def sibling(self, operation: Operation, service: str) -> Operation | None:
        """The same operation at another service of the same category (the other shop's order)."""
        other = self.operations.get(f"{service}.{operation.op}")
        return other if other is not None and other.category == operation.category else None

    def plannable(self) -> list[Operation]:
        """What a plan may call: no compensation (the saga's) and no money moves (the saga's too)."""
        undoes = {f"{o.service}.{o.undo}" for o in self.operations.values() if o.undo}
        return [
            o
            for name, o in sorted(self.operations.items())
            if name not in undoes and not (o.service == self.payment and o.changes_world)
        ]


def catalog(services: list[Service], tools: ToolRegistry, tenant_id: int) -> Catalog:
    """The catalog of the services the tenant can call now."""
    operations: dict[str, Operation] = {}
    descriptions: dict[str, str] = {}
    payment: str | None = None
    for service in services:
        if service.status is None or service.status.error is not None:
            continue  # down: nothing of it can be planned or called
        manifest = service.manifest
        descriptions[service.name] = manifest.description
        found = {op: tools.get(f"{service.name}.{op}", tenant_id) for op in manifest.operations}
        for op, tool in found.items():
            if tool is not None:
                operations[f"{service.name}.{op}"] = _operation(service.name, manifest, op, tool)
        if (
            payment is None
            and manifest.category == PAYMENT_CATEGORY
            and all(found.get(op) is not None for op in PAYMENT_PROTOCOL)
        ):
            payment = service.name
    return Catalog(operations, payment, descriptions)


def _operation(service: str, manifest: Manifest, op: str, tool: Tool) -> Operation:
    described = manifest.operations[op]
    parameters = copy.deepcopy(tool.parameters)
    properties = parameters.get("properties")
    paid = isinstance(properties, dict) and PAYMENT_ARG in properties
    paid = paid and manifest.category != PAYMENT_CATEGORY
    if paid and isinstance(properties, dict):
        del properties[PAYMENT_ARG]
        required = parameters.get("required")
        if isinstance(required, list):
            parameters["required"] = [r for r in required if r != PAYMENT_ARG]
    return Operation(
        service=service,
        category=manifest.category,
        op=op,
        tool=tool,
        parameters=parameters,
        changes_world=described.confirm,
        undo=described.undo,
        idempotent=described.idempotency,
        paid=paid,
    )
