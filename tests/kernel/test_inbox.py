"""The inbox: results of unattended processes are posted once, even those a stopped server missed."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.kernel.doubles import KernelDB

from aigrid.kernel.inbox import Inbox

pytestmark = pytest.mark.asyncio


async def test_results_a_stopped_server_never_posted_are_posted_at_the_next_start(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    stored = db.save(name="watcher")
    fired = db.processes.create(db.tenant, stored, "tick", origin="trigger")
    asked = db.processes.create(db.tenant, stored, "a question", origin="api")
    for process in (fired, asked):
        db.processes.set_state(process.pid, "done", result="all quiet")
    # The server stopped after the processes ended and before their results reached the inbox.
    for _ in range(2):  # two starts post the result once
        inbox = Inbox(db.messages, db.agents, db.processes)
        await inbox.start()
        await inbox.aclose()
    (message,) = db.messages.messages(db.tenant)
    assert (message.kind, message.pid, message.text) == ("result", fired.pid, "all quiet")


async def test_a_failed_unattended_process_reports_why(tmp_path: Path) -> None:
    db = KernelDB(tmp_path)
    stored = db.save(name="watcher")
    process = db.processes.create(db.tenant, stored, "tick", origin="webhook")
    failed = db.processes.set_state(process.pid, "failed", reason="the shop was down")
    await db.inbox.result(failed)
    (message,) = db.messages.messages(db.tenant)
    assert message.text == "failed: the shop was down"
