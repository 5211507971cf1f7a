"""Pipes to and from a child process, read and written from threads: what the evaluator's and the
renderer's handles share."""

from __future__ import annotations

import contextlib

PIPES_CLOSE_S = 10  # after the child's end, its pipes close at once unless something holds them


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` into pipe ``fd`` and close it (a reader that went away is no error)."""
    with open(fd, "wb", closefd=True) as pipe:
        with contextlib.suppress(OSError):
            pipe.write(data)


class Sink:
    """What a pipe carried, kept up to ``cap`` bytes (the rest read and counted)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.size, self.chunks = cap, 0, list[bytes]()

    def drain(self, fd: int) -> None:
        with open(fd, "rb", buffering=0, closefd=True) as pipe:
            while chunk := pipe.read(1 << 16):
                if self.size < self.cap:
                    self.chunks.append(chunk[: self.cap - self.size])
                self.size += len(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")
