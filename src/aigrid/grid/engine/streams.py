"""Which KV stream a request runs in, and which cached prefix it starts from.

Every sequence of the KV cache is a stream that remembers the tokens whose keys and values it
holds. A new prompt starts from the longest prefix any stream already has: in place when that
stream is idle, or copied into a free stream when a running request owns it. Idle streams are
the prefix cache; an empty one is taken before a cached one, the least recently used first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# The last prompt tokens are always decoded again: the logits of a prompt's final token then come
# from a batch of several tokens, as they do for a cold prompt, so a repeated request at
# temperature 0 answers the same way whether or not its prefix was cached.
REEVALUATE = 4
# Copying a stream costs about as much as decoding this many tokens; a shorter prefix is redone.
MIN_COPY = 32


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token lists (slices compare in C)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] and a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid
    return low


@dataclass(slots=True)
class Stream:
    """One sequence of the KV cache: the tokens it holds from position 0, and whether it runs."""

    index: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    used_at: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request runs: its stream, the stream to copy a prefix from first, and its length."""

    stream: int
    source: int | None
    reused: int


class StreamTable:
    """The streams of one KV cache and the choice of stream for each new prompt."""

    def __init__(self, count: int) -> None:
        self.streams = [Stream(i) for i in range(count)]
        self._tick = 0

    def place(self, prompt: Sequence[int]) -> Placement:
        """Take a stream for ``prompt``, starting from the longest cached prefix worth reusing."""
        limit = max(0, len(prompt) - REEVALUATE)
        best: Stream | None = None
        best_length = 0
        for stream in self.streams:
            length = min(common_prefix(stream.tokens, prompt), limit)
            # On a tie an idle stream wins: it can be taken over without a copy.
            if length > best_length or (length == best_length and best is not None and best.busy):
                best, best_length = stream, length
        if best is not None and best_length >= MIN_COPY and not best.busy:
            placement = Placement(best.index, None, best_length)
        else:
            # A short match is not worth overwriting a stream that holds a long cached prompt: the
            # request goes where the least is lost, and reuses whatever that stream shares.
            target = self._free_stream()
            if best is not None and best_length >= MIN_COPY:
                placement = Placement(target.index, best.index, best_length)
            else:
                own = min(common_prefix(target.tokens, prompt), limit)
                placement = Placement(target.index, None, own)
        chosen = self.streams[placement.stream]
        chosen.tokens = list(prompt[: placement.reused])
        chosen.busy = True
        return placement

    def release(self, index: int) -> None:
        """The request in stream ``index`` ended; what the stream holds stays cached."""
        self._tick += 1
        stream = self.streams[index]
        stream.busy = False
        stream.used_at = self._tick

    def gap_move(self) -> tuple[int, int] | None:
        """A move (from, to) that brings the running streams closer together, if there is a gap.

        The last running stream goes to an idle one below it: an empty one first, then the least
        recently used.
        """
        busy = [s.index for s in self.streams if s.busy]
        if len(busy) < 2 or busy[-1] - busy[0] + 1 == len(busy):
            return None
        holes = [s for s in self.streams[busy[0] : busy[-1]] if not s.busy]
        target = min(holes, key=lambda s: (bool(s.tokens), s.used_at))
        return busy[-1], target.index

    def move(self, source: int, target: int) -> None:
        """The request of ``source`` runs in ``target`` now; ``source`` keeps a cached copy."""
        self.streams[target].tokens = list(self.streams[source].tokens)
        self.streams[target].busy = True
        self.release(source)

    def forget(self, index: int) -> None:
        """The stream's cells were cleared."""
        self.streams[index].tokens = []

    def _free_stream(self) -> Stream:
        # llama.cpp decodes a run of adjacent streams in one pass and splits the batch at every gap
        # between running ones, so the stream that keeps the running ones together is taken first;
        # among those an empty one, then the least recently used.
        busy = {s.index for s in self.streams if s.busy}
        idle = [s for s in self.streams if not s.busy]
        if not idle:
            raise RuntimeError("every stream of the KV cache is running a request")
        return min(idle, key=lambda s: (_runs(busy | {s.index}), bool(s.tokens), s.used_at))


def _runs(indexes: set[int]) -> int:
    """How many runs of adjacent numbers ``indexes`` makes."""
    return sum(1 for i in indexes if i - 1 not in indexes)
