"""The child process that parses very large request bodies (see aigrid.api.request_body).

It reads frames from stdin (8-byte big-endian length, then the body) and answers each with a frame
holding the pickled ``("parsed", body)`` or ``("refused", why)``. It imports nothing of the server,
so it starts in a fraction of a second, and it ends when the server closes its stdin.
"""

from __future__ import annotations

import pickle
import sys
from typing import BinaryIO

from aigrid.api.request_body import FRAME_HEADER_BYTES, parse_outcome


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer every framed body on ``requests`` until it ends."""
    while True:
        header = _read_exactly(requests, FRAME_HEADER_BYTES)
        if header is None:
            return
        body = _read_exactly(requests, int.from_bytes(header, "big"))
        if body is None:
            return
        answer = pickle.dumps(parse_outcome(body), protocol=pickle.HIGHEST_PROTOCOL)
        answers.write(len(answer).to_bytes(FRAME_HEADER_BYTES, "big"))
        answers.write(answer)
        answers.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
