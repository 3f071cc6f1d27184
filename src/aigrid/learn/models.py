"""Learned model versions: trained in a process of their own, served by the grid, promoted by a gate.

``train`` starts ``python -m aigrid.learn.train`` on a dataset, in a folder of the version's own
under the data directory, and follows its progress (kept in the version's lineage, where the API and
the console read it). A trained version is a *candidate*: the grid serves it as a model of its own
(``smollm2-135m-instruct@planner-1``), an embedded deployment like its base's with the LoRA adapter
applied, so it can be evaluated and asked like any model.

``promote`` is the gate: the candidate and the model in use for its kind are run on the kind's
held-out suite in the same server, and the candidate is put in use only when its rate is above the
other's beyond the noise (their 95% intervals apart) and it does no worse, beyond the noise, on the
tasks that must buy nothing. Otherwise it is *kept*: still a file, no longer served. ``rollback``
goes back to what was in use before. Every change is a row of ``model_promotions``; the newest per
kind is what a restarted server puts in use again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from aigrid.config import BreakerConfig, DeploymentConfig, ModelConfig
from aigrid.grid.engine.model import default_model_path
from aigrid.grid.plants import build_backend
from aigrid.grid.router import CircuitBreaker, Deployment, Route, Router
from aigrid.kernel.model import ModelRoles
from aigrid.learn.evals import EvalService, wilson
from aigrid.learn.train import TrainJob, settings_problem
from aigrid.learn.verifiers import ALL, MUST_BUY_NOTHING
from aigrid.store.accounts import AccountError
from aigrid.store.db import StoreCalls
from aigrid.store.evals import EvalRun
from aigrid.store.learned import LearnedModel, LearnedStore

log = logging.getLogger(__name__)

# The held-out suite that decides each kind's promotions.
GATE_SUITE = {"planner": "entry", "compiler": "compiler", "agents": "tools"}
SERVED_STATES = ("candidate", "promoted")
_SAVE_EVERY_S = 10.0
_GATE_TIMEOUT_S = 6 * 3600.0


@dataclass
class Training:
    """A training process's latest progress, as its JSON lines said."""

    step: int = 0
    steps: int = 0
    loss: float | None = None
    eta_s: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """As the lineage keeps it."""
        return {"step": self.step, "steps": self.steps, "loss": self.loss, "eta_s": self.eta_s}


class LearnedModels:
    """Trains, serves, promotes and rolls back learned versions of the grid's embedded model."""

    def __init__(
        self,
        store: LearnedStore,
        calls: StoreCalls,
        folder: Path,
        router: Router,
        breaker: BreakerConfig,
        roles: ModelRoles,
        evals: EvalService,
    ) -> None:
        self.store = store
        self._calls = calls
        self._folder = folder
        self._router = router
        self._breaker = breaker
        self._roles = roles
        self._evals = evals
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self.progress: dict[str, Training] = {}

    async def start(self) -> None:
        """At server start: failed what was training, serve the candidates and promoted versions, and put
        the promoted ones back in use."""
        await self._calls(self.store.fail_training)
        for model in await self._calls(self.store.models):
            if model.state in SERVED_STATES and model.adapter_path:
                try:
                    await self._serve(model)
                except (OSError, RuntimeError, ValueError) as exc:
                    log.error("learned model %s could not be served: %s", model.name, exc)
        for kind, name in (await self._calls(self.store.in_use)).items():
            if name is None or self._router.knows(name):
                self._roles.use(kind, name)

    async def close(self) -> None:
        """Stop training processes (their checkpoints stay) and the learned versions' engines."""
        for job in list(self._jobs.values()):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        for model in await self._calls(self.store.models):
            await self._unserve(model.name)

    # -- training -------------------------------------------------------------------------------------

    async def train(
        self,
        kind: str,
        dataset_id: str,
        job: dict[str, Any],
        lineage: dict[str, Any] | None = None,
        parent: str | None = None,
    ) -> LearnedModel:
        """Start training a new version of ``kind`` on a dataset, from the base model or from the
        learned version ``parent``; it goes on in the background."""
        dataset = await self._calls(self.store.dataset, dataset_id)
        if dataset.kind != kind:
            raise AccountError(400, f"Dataset '{dataset_id}' is of kind '{dataset.kind}', not '{kind}'.")
        if dataset.examples == 0:
            raise AccountError(400, f"Dataset '{dataset_id}' has no examples to learn from.")
        base_name, base_config = self._base(kind)
        path = base_config.model_path or default_model_path()
        if parent is not None:
            path = await self._parent_file(kind, parent)
        if path is None:
            raise AccountError(409, "The base model's GGUF file is not installed.")
        number = await self._calls(self.store.next_number, kind)
        name = f"{base_name}@{kind}-{number}"
        folder = self._folder / re.sub(r"[^A-Za-z0-9._-]", "_", name)
        try:
            settings = TrainJob.model_validate({**job, "base": str(path), "dataset": dataset.path})
        except ValidationError as exc:
            raise AccountError(400, f"Training settings: {settings_problem(exc)}.") from exc
        settings.write(folder)
        record = {**(lineage or {}), "base": base_name, "dataset": dataset.id, "job": settings.to_json()}
        if parent is not None:
            record["parent"] = parent
        model = await self._calls(
            self.store.create_model, name, kind, base_name, dataset.id, str(folder), record
        )
        self._run(model)
        return model

    async def _parent_file(self, kind: str, parent: str) -> str:
        """The merged model file of the version a new one is trained on top of."""
        found = await self._calls(self.store.model, parent)
        if found.kind != kind:
            raise AccountError(400, f"'{parent}' is a version of {found.kind}, not of {kind}.")
        merged = found.lineage.get("files", {}).get("model")
        if (
            found.state not in SERVED_STATES
            or not merged
            or not await asyncio.to_thread(os.path.isfile, merged)
        ):
            raise AccountError(
                409, f"'{parent}' is {found.state} and has no merged model to train on; choose a candidate."
            )
        return str(merged)

    async def resume(self, name: str) -> LearnedModel:
        """Go on training a version that failed or was stopped, from its checkpoint."""
        model = await self._calls(self.store.model, name)
        if model.state != "failed":
            raise AccountError(409, f"'{name}' is {model.state}; only a failed training can be resumed.")
        model = await self._calls(self.store.update_model, name, state="training")
        self._run(model)
        return model

    async def wait(self, name: str, seconds: float) -> None:
        """Wait up to ``seconds`` for a version's training to end."""
        job = self._jobs.get(name)
        if job is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(job), seconds)

    def _run(self, model: LearnedModel) -> None:
        job = asyncio.get_running_loop().create_task(self._train(model))
        self._jobs[model.name] = job
        job.add_done_callback(lambda _: self._jobs.pop(model.name, None))

    async def _train(self, model: LearnedModel) -> None:
        progress = self.progress[model.name] = Training()
        lineage = dict(model.lineage)
        began = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aigrid.learn.train",
            model.folder,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        try:
            errors = asyncio.ensure_future(_tail(process.stderr))
            saved = time.monotonic()
            assert process.stdout is not None
            async for raw in process.stdout:
                event = _event(raw)
                if event is None:
                    continue
                _follow(progress, event)
                if time.monotonic() - saved > _SAVE_EVERY_S:
                    saved = time.monotonic()
                    lineage["training"] = progress.to_json()
                    await self._calls(self.store.update_model, model.name, lineage=lineage)
            code = await process.wait()
            tail = await errors
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await process.wait()
            lineage["training"] = progress.to_json()
            await self._calls(
                self.store.update_model,
                model.name,
                state="failed",
                lineage=lineage,
                error="the server stopped while it trained; resume it to go on from its checkpoint",
            )
            raise
        lineage["training"] = {
            **progress.to_json(),
            "seconds": round(time.monotonic() - began, 1),
            "events": [e for e in progress.events if e.get("event") != "step"],
        }
        done = next((e for e in progress.events if e.get("event") == "done"), None)
        if code != 0 or done is None:
            failed = next((e for e in progress.events if e.get("event") == "failed"), None)
            error = str(failed["error"]) if failed else (tail or f"the trainer exited with {code}")
            await self._calls(
                self.store.update_model, model.name, state="failed", lineage=lineage, error=error
            )
            return
        lineage["files"] = {"adapter": str(done["adapter"]), "model": done.get("model")}
        trained = await self._calls(
            self.store.update_model,
            model.name,
            state="candidate",
            adapter_path=str(done["adapter"]),
            lineage=lineage,
        )
        try:
            await self._serve(trained)
        except (OSError, RuntimeError, ValueError) as exc:
            await self._calls(
                self.store.update_model,
                model.name,
                state="failed",
                error=f"trained, but cannot be served: {exc}",
            )

    # -- serving --------------------------------------------------------------------------------------

    def _base(self, kind: str) -> tuple[str, DeploymentConfig]:
        """The embedded model a kind's versions learn from: the configured one for the kind if it is
        embedded, else the grid's first embedded model."""
        wanted = self._roles.configured(kind)
        routes = [r for r in self._router.routes if "@" not in r.name]
        ordered = sorted(routes, key=lambda r: wanted not in (r.name, *r.config.aliases))
        for route in ordered:
            for deployment in route.deployments:
                config = deployment.backend.config
                if config.backend == "embedded" and not config.adapter_path:
                    return route.name, config
        raise AccountError(409, "No embedded model on this grid to learn from.")

    async def _serve(self, model: LearnedModel) -> None:
        if self._router.knows(model.name):
            return
        _, base = self._base(model.kind)
        merged = model.lineage.get("files", {}).get("model")
        # The merged file runs at the base's speed; the adapter alone is what an older version has.
        files = {"model_path": merged} if merged else {"adapter_path": model.adapter_path}
        config = base.model_copy(update={**files, "name": f"{model.name}/embedded"})
        route = Route(ModelConfig(name=model.name, deployments=[config]))
        backend = build_backend(f"{model.name}/embedded", config)
        await backend.start()
        route.deployments.append(Deployment(backend, CircuitBreaker(self._breaker)))
        self._router.add(route)

    async def _unserve(self, name: str) -> None:
        route = self._router.remove(name)
        for deployment in route.deployments if route is not None else []:
            await deployment.backend.close()

    # -- the gate -------------------------------------------------------------------------------------

    async def promote(
        self, tenant_id: int, name: str, limit: int | None = None, experience: bool = True
    ) -> dict[str, Any]:
        """Run the gate for a candidate; put it in use if it wins, else keep it unused. The decision."""
        model = await self._calls(self.store.model, name)
        if model.state not in SERVED_STATES:
            raise AccountError(409, f"'{name}' is {model.state}; only a trained candidate can be promoted.")
        if model.state == "promoted" and self._roles.model(model.kind) == name:
            raise AccountError(409, f"'{name}' is in use for {model.kind} already.")
        incumbent = self._roles.model(model.kind)
        suite = GATE_SUITE[model.kind]
        runs = [
            await self._evals.start(tenant_id, suite, "heldout", m, experience, limit)
            for m in (incumbent, name)
        ]
        for run in runs:
            await self._evals.wait(run.id, _GATE_TIMEOUT_S)
        old, new = [await self._calls(self._evals.store.get, r.id, None) for r in runs]
        decision = gate(old, new)
        decision.update(incumbent=incumbent, candidate=name, runs=[old.id, new.id])
        lineage = {**model.lineage, "gate": decision}
        if decision["promoted"]:
            await self._calls(self.store.promote, model.kind, name, "promote", decision["reason"])
            self._roles.use(model.kind, name)
            await self._calls(self.store.update_model, name, state="promoted", lineage=lineage)
        else:
            await self._calls(self.store.update_model, name, state="kept", lineage=lineage)
            await self._unserve(name)
        return decision

    async def rollback(self, kind: str) -> dict[str, Any]:
        """Put back what was in use for ``kind`` before the last promotion; the change made."""
        history = await self._calls(self.store.history, kind)
        if not history or history[0].model is None:
            raise AccountError(409, f"Nothing to roll back: {kind} uses the configured model.")
        current = history[0].model
        previous = next((h.model for h in history[1:] if h.model != current), None)
        if previous is not None and not self._router.knows(previous):
            previous = None  # a version no longer served cannot come back; the configured one does
        await self._calls(self.store.promote, kind, previous, "rollback", f"rolled back from {current}")
        self._roles.use(kind, previous)
        await self._calls(self.store.update_model, current, state="kept")
        await self._unserve(current)
        return {"kind": kind, "from": current, "to": previous or self._roles.configured(kind)}

    def in_use(self) -> dict[str, str]:
        """Each kind's model in use now."""
        return {kind: self._roles.model(kind) for kind in self._roles.kinds()}


class SuiteModels(Mapping[str, str]):
    """The model each suite is judged with by default: the one in use for its kind."""

    def __init__(self, roles: ModelRoles) -> None:
        self._roles = roles
        self._kinds = {suite: kind for kind, suite in GATE_SUITE.items()}

    def __getitem__(self, suite: str) -> str:
        return self._roles.model(self._kinds[suite])

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)


def gate(incumbent: EvalRun, candidate: EvalRun) -> dict[str, Any]:
    """Whether ``candidate`` beats ``incumbent`` beyond the noise without doing worse on the guard."""
    figures = {}
    for name in dict.fromkeys([ALL, *candidate.metrics, *incumbent.metrics]):
        figures[name] = {
            "incumbent": incumbent.metrics.get(name, [0, 0]),
            "candidate": candidate.metrics.get(name, [0, 0]),
        }
    _, old_high = wilson(*figures[ALL]["incumbent"])
    new_low, _ = wilson(*figures[ALL]["candidate"])
    if incumbent.state != "done" or candidate.state != "done":
        return {"promoted": False, "reason": "an eval did not finish", "metrics": figures}
    if new_low <= old_high:
        reason = (
            f"not apart from the noise: candidate {_rate(figures[ALL]['candidate'])} "
            f"vs in use {_rate(figures[ALL]['incumbent'])} (95% intervals overlap)"
        )
        return {"promoted": False, "reason": reason, "metrics": figures}
    guard = figures.get(MUST_BUY_NOTHING)
    if guard is not None and guard["incumbent"][1]:
        _, guard_high = wilson(*guard["candidate"])
        guard_low, _ = wilson(*guard["incumbent"])
        if guard_high < guard_low:
            return {
                "promoted": False,
                "reason": "it buys where it must not, beyond the noise",
                "metrics": figures,
            }
    new, old = _rate(figures[ALL]["candidate"]), _rate(figures[ALL]["incumbent"])
    reason = f"candidate {new} beats {old} in use, beyond the noise (95% intervals apart)"
    return {"promoted": True, "reason": reason, "metrics": figures}


def _rate(counts: list[int]) -> str:
    passed, total = counts
    return f"{passed}/{total}"


def _event(raw: bytes) -> dict[str, Any] | None:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _follow(progress: Training, event: dict[str, Any]) -> None:
    if event["event"] == "step":
        progress.step, progress.steps = int(event["step"]), int(event["steps"])
        progress.loss, progress.eta_s = event.get("loss"), event.get("eta_s")
    else:
        progress.events.append(event)


async def _tail(stream: asyncio.StreamReader | None) -> str:
    """The last lines a process wrote to a stream, for an error message."""
    lines: list[str] = []
    if stream is None:
        return ""
    async for raw in stream:
        lines = [*lines[-4:], raw.decode(errors="replace").rstrip()]
    return " | ".join(line for line in lines if line)
