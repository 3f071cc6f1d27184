"""The meter never loses a reading: client disconnects, SIGKILL under load, restart."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support import LiveServer, RecordingUpstream, ledger_rows, mock_config

pytestmark = pytest.mark.slow


@pytest.fixture
def trickle() -> Iterator[RecordingUpstream]:
    """A test double upstream streaming 40 chunks, 50 ms apart."""
    upstream = RecordingUpstream(stream_chunks=40, chunk_delay_s=0.05)
    yield upstream
    upstream.stop()


def test_client_disconnect_mid_stream_is_recorded_as_interrupted(
    tmp_path: Path, trickle: RecordingUpstream
) -> None:
    server = LiveServer(tmp_path, mock_config(trickle.url)).start()
    try:
        key = server.new_tenant_key("quitter")
        body = {"model": "mock", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream(
            "POST", server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            request_id = resp.headers["x-request-id"]
            received = 0
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    received += 1
                if received == 5:
                    break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, tokens = ledger_rows(tmp_path).get(request_id, ("missing", 0))
            if status == "interrupted":
                break
            time.sleep(0.1)
        assert status == "interrupted"
        assert 5 <= tokens < 40
        usage = server.admin("GET", "/v1/usage", params={"tenant": "quitter"}).json()["totals"]
        assert usage["requests"] == 1 and usage["completion_tokens"] == tokens
    finally:
        server.stop()


def test_sigkill_under_load_loses_no_reading_and_counts_none_twice(
    tmp_path: Path, mock_upstream: str
) -> None:
    server = LiveServer(tmp_path, mock_config(mock_upstream)).start()
    key = server.new_tenant_key("load")
    received: set[str] = set()
    cut_off: set[str] = set()
    stop = threading.Event()

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        stream = n % 2 == 0
        body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        while not stop.is_set():
            request_id = None
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    request_id = resp.headers.get("x-request-id")
                    data = b"".join([chunk async for chunk in resp.aiter_bytes()])
                    if resp.status_code != 200 or request_id is None:
                        return
                    complete = data.rstrip().endswith(b"data: [DONE]") if stream else data.endswith(b"}")
                    (received if complete else cut_off).add(request_id)
            except httpx.HTTPError:
                if request_id is not None:
                    cut_off.add(request_id)
                return

    async def load() -> None:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            await asyncio.gather(*(worker(client, n) for n in range(16)))

    killer = threading.Timer(1.5, server.kill)
    killer.start()
    try:
        asyncio.run(load())
    finally:
        stop.set()
        killer.join()
    assert len(received) > 50, "the load did not get going before the kill"

    server.start()
    server.stop()
    ledger = ledger_rows(tmp_path)
    missing = [rid for rid in received if rid not in ledger]
    assert not missing, f"{len(missing)} responses the clients received are not in the ledger"
    assert all(ledger[rid] == ("ok", 16) for rid in received)
    assert all(ledger[rid][0] in ("ok", "interrupted") for rid in cut_off if rid in ledger)
    assert not [rid for rid, (status, _) in ledger.items() if status == "in_progress"]
