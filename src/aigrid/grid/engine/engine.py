"""The engine thread: continuous batching of many sequences over one llama.cpp context.

It runs inside the engine process (``worker.py``), never in the server's.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import llama_cpp

from aigrid.grid.backends.base import BackendError, EngineStats
from aigrid.grid.backends.embedded_prompt import GenerateRequest
from aigrid.grid.engine.embed import EmbeddingQueue
from aigrid.grid.engine.jobs import EmbedRequest, Failed, Finished, FinishReason, Job, Outbox, Sink, Started
from aigrid.grid.engine.model import PREFILL_TOKENS, LoadedModel, ModelSpec
from aigrid.grid.engine.sampler import Sampler
from aigrid.grid.engine.streams import MIN_COPY, REEVALUATE, StreamTable, common_prefix
from aigrid.grid.engine.text import TextOutput

logger = logging.getLogger(__name__)

# A move copies a whole KV stream, about the cost of a few decode steps; a sequence that may end
# sooner than this many tokens is left where it is.
_MOVE_WORTH = 16


@dataclass(slots=True)
class _Sequence:
    """A request holding a stream: its prompt still to decode, its sampler and its text."""

    job: Job
    prompt: list[int]
    stream: int
    fed: int
    sampler: Sampler
    output: TextOutput
    next_token: int = -1

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.prompt)


class BatchEngine:
    """One thread that owns the model and decodes every running sequence in one batch per step.

    New requests join between steps and finished ones leave at once; at most ``parallel`` run
    and ``queue_size`` more wait, beyond which ``submit`` refuses with a retryable 503. Events go
    to ``sink``, once per step, from the engine thread (and from the caller's for a withdrawal).
    """

    def __init__(self, spec: ModelSpec, queue_size: int, name: str, sink: Sink) -> None:
        self._spec = spec
        self._name = name
        self._limit = queue_size
        self._sink = sink
        self._waiting: deque[Job] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._state: _DecodeLoop | None = None
        self._closed = False

    def start(self, on_progress: Callable[[float], None] | None = None) -> None:
        """Start the thread and wait until it has loaded the model; ``on_progress`` hears how far."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready, on_progress), name=f"llama:{self._name}", daemon=True
        )
        self._thread.start()
        ready.result()

    def submit(self, job: Job) -> None:
        """Queue a job (made with ``withdraw`` as its cancel); a full queue is a retryable 503."""
        if self._closed or self._thread is None:
            raise BackendError(f"{self._name}: the embedded model is not running", retryable=True, status=503)
        with self._wake:
            if len(self._waiting) >= self._limit:
                raise BackendError(
                    f"{self._name}: the embedded model is busy ({self._limit} requests already waiting)",
                    retryable=True,
                    status=503,
                    overloaded=True,
                )
            self._waiting.append(job)
            self._wake.notify()

    def stats(self) -> EngineStats:
        """A snapshot for metrics and tests; read without stopping the engine."""
        state = self._state
        idle = [] if state is None else [s for s in state.table.streams if not s.busy and s.tokens]
        return EngineStats(
            running=0 if state is None else state.running,
            waiting=len(self._waiting),
            cached_sequences=len(idle),
            cached_tokens=sum(len(s.tokens) for s in idle),
            moves=0 if state is None else state.moves,
        )

    def withdraw(self, job: Job) -> None:
        """Take a cancelled job out of the queue."""
        # A cancelled job that still waits gives its place up at once and is told so; a running
        # one is dropped by the engine at its next step.
        with self._wake:
            try:
                self._waiting.remove(job)
            except ValueError:
                return
        self._sink([(job.id, Finished("cancelled"))])

    def stop(self) -> None:
        """Fail the waiting and running requests and let the thread free the model."""
        if self._closed:
            return
        with self._wake:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._wake.notify()
        if waiting:
            self._sink([(job.id, Failed.of(self._shutting_down())) for job in waiting])
        if self._thread is not None:
            self._thread.join()

    def _shutting_down(self) -> BackendError:
        return BackendError(f"{self._name}: shutting down", retryable=True, status=503)

    def _run(
        self, ready: concurrent.futures.Future[None], on_progress: Callable[[float], None] | None
    ) -> None:
        try:
            model = self._spec.load(on_progress)
            model.warm_up()
        except Exception as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        loop = self._state = _DecodeLoop(model, self._spec, Outbox(self._sink))
        try:
            while (jobs := self._next_jobs(loop)) is not None:
                try:
                    for job in jobs:
                        loop.admit(job)
                    loop.step()
                except Exception as exc:
                    # A fault of the engine's own: the requests in hand fail, the engine goes on,
                    # and nothing that arrives later waits for a thread that is gone.
                    logger.exception("%s: the engine failed a step", self._name)
                    loop.fail_all(exc)
                # Every step is heard of, even one that only computed a prompt: the server takes
                # an engine that stays silent with requests in hand for hung.
                loop.outbox.flush(heartbeat=True)
        finally:
            loop.fail_all(self._shutting_down())
            loop.close()
            model.close()

    def _next_jobs(self, loop: _DecodeLoop) -> list[Job] | None:
        """The waiting jobs that fit now, after waiting for one if nothing runs; None to stop."""
        with self._wake:
            while not self._closed and not self._waiting and not loop.busy:
                self._wake.wait()
            if self._closed:
                return None
            jobs: list[Job] = []
            free = self._spec.parallel - loop.running
            while self._waiting and (free > 0 or isinstance(self._waiting[0].request, EmbedRequest)):
                job = self._waiting.popleft()
                if isinstance(job.request, GenerateRequest):
                    free -= 1
                jobs.append(job)
            return jobs


class _DecodeLoop:
    """The engine thread's state: running sequences, the stream table and the batch buffer."""

    def __init__(self, model: LoadedModel, spec: ModelSpec, outbox: Outbox) -> None:
        self._model = model
        self._spec = spec
        self.table = StreamTable(spec.sequences)
        self._running: dict[int, _Sequence] = {}
        # Requests waiting for a running prompt that shares their prefix to get past it.
        self._deferred: list[Job] = []
        self.moves = 0
        self._capacity = PREFILL_TOKENS + spec.parallel
        self._batch = llama_cpp.llama_batch_init(self._capacity, 0, 1)
        # Every read of a ctypes struct's pointer field makes a new object, so the batch's arrays
        # are fetched once; each token belongs to one sequence.
        self._tokens = self._batch.token
        self._positions = self._batch.pos
        self._logits = self._batch.logits
        self._seq_ids = [self._batch.seq_id[i] for i in range(self._capacity)]
        for i in range(self._capacity):
            self._batch.n_seq_id[i] = 1
            self._logits[i] = False
        self._gaps_possible = False
        self.outbox = outbox
        self._embeddings = EmbeddingQueue(model, spec, outbox)

    @property
    def running(self) -> int:
        """How many requests hold a place: a stream, or a turn after the prompt they share."""
        return len(self._running) + len(self._deferred)

    @property
    def busy(self) -> bool:
        """Whether a step has work: sequences to decode or inputs to embed."""
        return self.running > 0 or self._embeddings.busy

    def admit(self, job: Job) -> None:
        """Give a job a stream (from the prefix cache if it can), or queue an embedding.

        A prompt that shares a long prefix with one still being decoded waits for it and then
        copies its cells, rather than computing the same prefix twice at the same time.
        """
        if job.cancelled:
            return
        request = job.request
        if isinstance(request, EmbedRequest):
            self._embeddings.add(job, request)
            self.outbox.put(job, Started(0))
            return
        if self._shares_pending_prefix(request.prompt_tokens):
            self._deferred.append(job)
            return
        try:
            if len(request.prompt_tokens) + request.max_tokens > self._spec.sequence_cells:
                raise ValueError("the prompt and max_tokens do not fit the context of a sequence")
            sampler = Sampler(self._model.vocab.handle, request)
        except Exception as exc:
            logger.exception("a request failed inside the model")
            self.outbox.put(job, Failed.of(exc))
            return
        placement = self.table.place(request.prompt_tokens)
        self._gaps_possible = True
        memory = self._model.memory
        if placement.source is not None:
            # Across streams llama.cpp copies a whole stream, then the tail past the prefix goes.
            llama_cpp.llama_memory_seq_cp(memory, placement.source, placement.stream, -1, -1)
        llama_cpp.llama_memory_seq_rm(memory, placement.stream, placement.reused, -1)
        output = TextOutput(job, request, self._model.vocab, self.outbox)
        self._running[placement.stream] = _Sequence(
            job, request.prompt_tokens, placement.stream, placement.reused, sampler, output
        )
        self.outbox.put(job, Started(placement.reused))

    def _shares_pending_prefix(self, prompt: list[int]) -> bool:
        limit = len(prompt) - REEVALUATE
        for sequence in self._running.values():
            if sequence.prefilling:
                shared = min(common_prefix(sequence.prompt, prompt), limit)
                if shared - sequence.fed >= MIN_COPY:
                    return True
        return False

    def step(self) -> None:
        """Decode one batch: a token of every generating sequence and a slice of prompts."""
        deferred, self._deferred = self._deferred, []
        for job in deferred:
            self.admit(job)
        self._embeddings.work()
        for sequence in [s for s in self._running.values() if s.job.cancelled]:
            self._end(sequence, "cancelled")
        if not self._running:
            return
        self._close_gap()
        batch_tokens, positions, logits, seq_ids = self._tokens, self._positions, self._logits, self._seq_ids
        count = 0
        budget = PREFILL_TOKENS
        # (sequence, tokens fed, index of its logits in the batch or -1)
        fed: list[tuple[_Sequence, list[int], int]] = []
        # Streams in order: llama.cpp decodes a run of adjacent streams in one pass.
        for stream in sorted(self._running):
            sequence = self._running[stream]
            if sequence.prefilling:
                if budget == 0:
                    continue
                tokens = sequence.prompt[sequence.fed : sequence.fed + budget]
                budget -= len(tokens)
                last = sequence.fed + len(tokens) == len(sequence.prompt)
            else:
                tokens = [sequence.next_token]
                last = True
            position = len(self.table.streams[stream].tokens)
            for offset, token in enumerate(tokens):
                batch_tokens[count] = token
                positions[count] = position + offset
                seq_ids[count][0] = stream
                count += 1
            if last:
                logits[count - 1] = True
            fed.append((sequence, tokens, count - 1 if last else -1))
        self._batch.n_tokens = count
        status = llama_cpp.llama_decode(self._model.context, self._batch)
        for _, _, index in fed:
            if index >= 0:
                logits[index] = False
        if status != 0:
            self._fail_batch(fed, RuntimeError(f"llama_decode failed with status {status}"))
            return
        ends = self._model.vocab.ends
        for sequence, tokens, index in fed:
            self.table.streams[sequence.stream].tokens += tokens
            if sequence.prefilling:
                sequence.fed += len(tokens)
            if index < 0:
                continue
            token = sequence.sampler.sample(self._model.context, index)
            if ends(token):
                self._end(sequence, "stop")
                continue
            reason = sequence.output.push(token)
            if reason is not None:
                self._end(sequence, reason)
            else:
                sequence.next_token = token

    def _close_gap(self) -> None:
        """Move one running sequence into a gap between running streams.

        llama.cpp decodes a run of adjacent KV streams in one pass over the weights and splits a
        batch at every gap, so scattered sequences would cost a pass each.
        """
        if not self._gaps_possible:
            return
        move = self.table.gap_move()
        if move is None:
            self._gaps_possible = False
            return
        source, target = move
        sequence = self._running[source]
        if not sequence.prefilling and sequence.output.remaining < _MOVE_WORTH:
            return
        llama_cpp.llama_memory_seq_cp(self._model.memory, source, target, -1, -1)
        self.table.move(source, target)
        del self._running[source]
        sequence.stream = target
        self._running[target] = sequence
        self.moves += 1

    def _end(self, sequence: _Sequence, reason: FinishReason) -> None:
        sequence.output.finish(reason)
        self._release(sequence)

    def _release(self, sequence: _Sequence) -> None:
        sequence.sampler.close()
        del self._running[sequence.stream]
        self.table.release(sequence.stream)
        self._gaps_possible = True

    def _fail_batch(self, fed: list[tuple[_Sequence, list[int], int]], error: Exception) -> None:
        logger.error("%s", error)
        self._fail([sequence for sequence, _, _ in fed], error)

    def _fail(self, sequences: list[_Sequence], error: Exception) -> None:
        """Fail requests whose cells are in doubt, clearing their streams."""
        for sequence in sequences:
            llama_cpp.llama_memory_seq_rm(self._model.memory, sequence.stream, -1, -1)
            self.table.forget(sequence.stream)
            self.outbox.put(sequence.job, Failed.of(error))
            self._release(sequence)

    def fail_all(self, error: Exception) -> None:
        """Fail every request in hand: running, waiting for a shared prefix, or embedding."""
        self._fail(list(self._running.values()), error)
        for job in self._deferred:
            self.outbox.put(job, Failed.of(error))
        self._deferred.clear()
        self._embeddings.fail(error)
        self.outbox.flush()

    def close(self) -> None:
        """Free the batch and the embedding model."""
        self._embeddings.close()
        llama_cpp.llama_batch_free(self._batch)
