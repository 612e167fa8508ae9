"""A file written once, piece by piece, into a spooled temporary file while its SHA-256 is taken,
then sent from that file in pieces (issue 21): a large CSV is never held whole in memory, and its
digest is known (and audited) before its first byte leaves."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

# A file up to this size is held in memory between its digest and its sending; a larger one is
# written to a temporary file.
SPOOL_BYTES = 1024 * 1024

# The pieces a spooled file is read back in.
READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Spooled:
    file: IO[bytes]
    sha256: str
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The file from its start, in pieces of READ_BYTES, each time it is called (two readings may
        be interleaved: each keeps its own place)."""
        place = 0
        while True:
            self.file.seek(place)
            piece = self.file.read(READ_BYTES)
            if not piece:
                return
            place += len(piece)
            yield piece

    def close(self) -> None:
        """Lets the file go (on disk past SPOOL_BYTES): once it is sent or read."""
        self.file.close()

    @property
    def body(self) -> bytes:
        """The whole file (the tests, a small file)."""
        return b"".join(self.chunks())


def spool(pieces: Iterable[str]) -> Spooled:
    """`pieces` written, UTF-8, into a new spooled file. If writing fails, the file is let go and
    `pieces` closed (when it can be)."""
    digest = hashlib.sha256()
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+b")  # noqa: SIM115
    size = 0
    try:
        for piece in pieces:
            encoded = piece.encode("utf-8")
            digest.update(encoded)
            file.write(encoded)
            size += len(encoded)
    except BaseException:
        file.close()
        # A generator of rows read from the database is closed now, not when collected: its
        # server-side cursor goes with the read session.
        close = getattr(pieces, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # the write's own error is the one to report
                close()
        raise
    return Spooled(file, digest.hexdigest(), size)
