"""Pipes to and from a child process, read and written from threads: what the evaluator's and the
renderer's handles share."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass

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


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """A request a warm server's forked child answers: what it wrote to its stdout and stderr, and
    the threads that feed its stdin and drain the two."""

    out: Sink
    err: Sink
    threads: tuple[threading.Thread, ...]

    def join(self, timeout: float | None) -> bool:
        """Whether every pipe closed (within ``timeout`` seconds each; None: however long)."""
        for thread in self.threads:
            thread.join(timeout=timeout)
        return not any(thread.is_alive() for thread in self.threads)


def hand_over(
    control: socket.socket, tag: bytes, data: bytes, out_cap: int, err_cap: int
) -> Exchange | None:
    """Send a warm server, over ``control``, the far ends of three fresh pipes (its child's stdin,
    stdout and stderr) and start feeding ``data`` and draining the answers (kept up to the caps);
    None when the server is gone."""
    (in_read, stdin), (stdout, out_write), (stderr, err_write) = (os.pipe() for _ in "iou")
    ours, theirs = (stdin, stdout, stderr), (in_read, out_write, err_write)
    try:
        socket.send_fds(control, [tag], theirs)
    except OSError:
        for fd in ours:
            os.close(fd)
        return None
    finally:
        for fd in theirs:
            os.close(fd)
    out, err = Sink(out_cap), Sink(err_cap)
    threads = (
        threading.Thread(target=write_all, args=(stdin, data), daemon=True),
        threading.Thread(target=out.drain, args=(stdout,), daemon=True),
        threading.Thread(target=err.drain, args=(stderr,), daemon=True),
    )
    for thread in threads:
        thread.start()
    return Exchange(out=out, err=err, threads=threads)


def receive(control: socket.socket, size: int, deadline: float) -> bytes | None:
    """Exactly ``size`` bytes from ``control``; None at the deadline (time.monotonic()) or when the
    server closed it first."""
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        control.settimeout(left)
        try:
            chunk = control.recv(size - len(data))
        except OSError:  # TimeoutError included
            return None
        if not chunk:
            return None
        data += chunk
    return data
