"""A process's model calls go through the grid in-process and are metered to its agent and pid."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.support import mock_config

from aigrid.api.app import create_app
from aigrid.config import ServerConfig, load_config
from aigrid.kernel.model import GridModelClient
from aigrid.kernel.runner import Runner
from aigrid.kernel.tools import ToolRegistry
from aigrid.spec import AgentSpec
from aigrid.store.agents import AgentStore
from aigrid.store.processes import ProcessStore
from aigrid.store.schema import LedgerEntry

pytestmark = pytest.mark.asyncio


def config(tmp_path: Path, upstream: str) -> ServerConfig:
    path = tmp_path / "grid.toml"
    path.write_text(mock_config(upstream))
    return load_config(path)


async def test_a_process_is_metered_like_any_client(tmp_path: Path, mock_upstream: str) -> None:
    hot = create_app(config(tmp_path, mock_upstream), tmp_path / "data")
    async with hot.app.router.lifespan_context(hot.app):
        state = hot.app.state.aigrid
        tenant = state.accounts.ensure_tenant("acme")
        names = state.accounts.tenant_names()
        agents, processes = AgentStore(state.engine), ProcessStore(state.engine)
        stored, _ = agents.save(
            tenant, AgentSpec.model_validate({"name": "writer", "instructions": "Write.", "model": "mock"})
        )
        pid = processes.create(tenant, stored, "a haiku").pid
        runner = Runner(GridModelClient(state.grid, names.__getitem__), processes, agents, ToolRegistry())
        done = await runner.run(pid)
        await state.grid.ledger.flush()
        with Session(state.engine) as session:
            row = session.scalars(select(LedgerEntry).where(LedgerEntry.process_id == pid)).one()
    assert done.state == "done" and done.result
    assert (row.tenant_id, row.agent, row.status) == (tenant, "writer", "ok")
    assert (done.prompt_tokens, done.completion_tokens) == (row.prompt_tokens, row.completion_tokens)
    assert done.cost_micro == row.cost_micro > 0
