"""llama.cpp sampler chains: one per sequence, from the request's sampling parameters."""

from __future__ import annotations

import ctypes
import random
from typing import Any

import llama_cpp
import numpy as np

from aigrid.grid.backends.embedded_prompt import GenerateRequest

# llama.cpp's usual sampling floor; OpenAI's parameters (temperature, top_p) apply on top of it.
_TOP_K = 40
_MIN_P = 0.05
# Tokens the frequency and presence penalties look back over.
_PENALTY_WINDOW = 64


class Sampler:
    """Picks a sequence's next token from the logits of its last decoded position."""

    def __init__(self, vocab: Any, request: GenerateRequest) -> None:
        sampling = request.sampling
        self._greedy = (
            sampling.temperature <= 0
            and not request.grammar
            and not sampling.frequency_penalty
            and not sampling.presence_penalty
            and not sampling.logit_bias
        )
        # numpy's ctypeslib.as_array builds a new array type at every call (tens of µs); a row
        # type made once and read in place costs a microsecond.
        self._row = ctypes.c_float * llama_cpp.llama_vocab_n_tokens(vocab)
        # Plain greedy decoding is an argmax; llama.cpp's chain would first copy every logit
        # into a candidate array, a sixtieth of a decode step for this model.
        self._chain = None if self._greedy else _chain(vocab, request)

    def sample(self, context: Any, index: int) -> int:
        """The next token, from the logits at batch position ``index``."""
        if self._chain is None:
            address = ctypes.cast(llama_cpp.llama_get_logits_ith(context, index), ctypes.c_void_p).value
            if address is None:
                raise RuntimeError(f"llama.cpp has no logits at batch position {index}")
            return int(np.frombuffer(self._row.from_address(address), dtype=np.float32).argmax())
        return int(llama_cpp.llama_sampler_sample(self._chain, context, index))

    def close(self) -> None:
        """Free the llama.cpp chain."""
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def _chain(vocab: Any, request: GenerateRequest) -> Any:
    """A llama.cpp sampler chain for one sequence."""
    sampling = request.sampling
    params = llama_cpp.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama_cpp.llama_sampler_chain_init(params)
    parts: list[Any] = []
    if sampling.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(sampling.logit_bias))()
        for entry, (token, bias) in zip(biases, sampling.logit_bias, strict=True):
            entry.token, entry.bias = token, bias
        parts.append(
            llama_cpp.llama_sampler_init_logit_bias(
                llama_cpp.llama_vocab_n_tokens(vocab), len(sampling.logit_bias), biases
            )
        )
    if request.grammar:
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, request.grammar.encode("utf-8"), b"root")
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise ValueError("llama.cpp could not parse the grammar")
        parts.append(grammar)
    if sampling.frequency_penalty or sampling.presence_penalty:
        penalties: tuple[Any, ...] = (
            _PENALTY_WINDOW,
            1.0,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        )
        # llama.cpp's releases differ: some take the vocabulary's size first, later ones do not.
        if len(getattr(llama_cpp.llama_sampler_init_penalties, "argtypes", ())) == 5:
            penalties = (llama_cpp.llama_vocab_n_tokens(vocab), *penalties)
        parts.append(llama_cpp.llama_sampler_init_penalties(*penalties))
    if sampling.temperature <= 0:
        parts.append(llama_cpp.llama_sampler_init_greedy())
    else:
        seed = sampling.seed if sampling.seed is not None else random.getrandbits(32)
        parts += [
            llama_cpp.llama_sampler_init_top_k(_TOP_K),
            llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1),
            llama_cpp.llama_sampler_init_min_p(_MIN_P, 1),
            llama_cpp.llama_sampler_init_temp(sampling.temperature),
            llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF),
        ]
    for part in parts:
        llama_cpp.llama_sampler_chain_add(chain, part)
    return chain
