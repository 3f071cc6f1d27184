"""A sequence's tokens turned into text, with stop sequences cut out before the client sees them."""

from __future__ import annotations

import codecs

from aigrid.grid.backends.embedded_prompt import GenerateRequest
from aigrid.grid.engine.jobs import Event, Finished, FinishReason, Job, Outbox, Tokens
from aigrid.grid.engine.model import Vocabulary


class TextOutput:
    """Decodes tokens incrementally and sends text, holding back what may start a stop sequence."""

    def __init__(self, job: Job, request: GenerateRequest, vocab: Vocabulary, outbox: Outbox) -> None:
        self._job = job
        self._outbox = outbox
        self._vocab = vocab
        self._max_tokens = request.max_tokens
        self._exempt = request.stop_exempt
        self._stops = request.sampling.stop
        self._reach = max((len(s) for s in self._stops), default=1) - 1
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._sent = 0
        self._produced = 0
        self._cut = False

    @property
    def remaining(self) -> int:
        """Tokens the sequence may still generate."""
        return self._max_tokens - self._produced

    def push(self, token: int) -> FinishReason | None:
        """Add a generated (non end-of-generation) token; the reason to stop, if it is the last."""
        self._produced += 1
        start = max(0, len(self._text) - self._reach)
        self._text += self._decoder.decode(self._vocab.piece(token))
        text, stops = self._text, self._stops
        if stops and self._exempt and text.startswith(self._exempt):
            stops = self._stops = ()
        end = _stop_index(text, stops, start)
        if end is not None:
            self._send(Tokens(text[self._sent : end], 1))
            self._cut = True
            return "stop"
        safe = max(self._sent, len(text) - _held(text, stops))
        self._send(Tokens(text[self._sent : safe], 1))
        self._sent = safe
        return "length" if self._produced >= self._max_tokens else None

    def finish(self, reason: FinishReason) -> None:
        """Send what was held back (unless cut by a stop or cancelled) and the end."""
        if reason != "cancelled" and not self._cut:
            rest = self._text[self._sent :] + self._decoder.decode(b"", final=True)
            if rest:
                self._send(Tokens(rest, 0))
        self._send(Finished(reason))

    def _send(self, event: Event) -> None:
        self._outbox.put(self._job, event)


def _stop_index(text: str, stops: tuple[str, ...], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def _held(text: str, stops: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that begins some stop sequence."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held
