"""The probe is invisible to honest code: its own numeric modes, and its own failures kept to
itself.

Every entry from the student's code into the probe (module and optimizer hooks, gradient hooks, the
patched DataLoader, ``state_dict``/``load_state_dict``, the export) runs through ``guarded``:
- nothing the probe creates depends on the student's modes: inside it, inference mode, autocast,
  a default dtype other than float32, torch-function modes (``torch.set_default_device``) and the
  JIT tracer (``torch.jit.trace`` would record the probe's ops into the model's graph) are off (a
  bookkeeping tensor made inside the student's ``inference_mode`` could not be written outside it),
  while the student's grad mode is what the probe reads, so it is kept;
- any exit of the probe's code but a return never reaches the student: it is counted in ``FAULTS``
  and written in the record (``probe_faults``), and the grader sends the result to review.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

_AUTOCAST_DEVICES = ("cpu", "cuda")
MAX_FAULTS = 20  # distinct places listed in the record


class Faults:
    """The probe's own failures: per place, how often and the first message."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}

    def record(self, where: str, exc: BaseException) -> None:
        self.counts[where] = self.counts.get(where, 0) + 1
        self.first.setdefault(where, f"{type(exc).__name__}: {exc}"[:300])

    def export(self) -> list[str]:
        return [
            f"{where}: {self.first[where]} ({count} time{'s' if count != 1 else ''})"
            for where, count in list(self.counts.items())[:MAX_FAULTS]
        ]


FAULTS = Faults()


def _foreign() -> bool:
    """Whether the student's code left a mode on that would shape what the probe creates."""
    return (
        torch.is_inference_mode_enabled()
        or torch._C._is_any_autocast_enabled()
        or torch.get_default_dtype() is not torch.float32
        or torch._C._len_torch_function_stack() > 0
        or torch._C._get_tracing_state() is not None
    )


# the student's autocast per device, while the probe runs
_outer_autocast: list[dict[str, torch.dtype]] = [{}]


def student_autocast(device: str) -> torch.dtype | None:
    """The dtype the student's autocast computes in on ``device`` where the probe was entered, if
    on."""
    return _outer_autocast[-1].get(device)


@contextlib.contextmanager
def own_modes() -> Iterator[None]:
    """The probe's modes: no inference mode, autocast, torch-function mode or other default dtype;
    the student's grad mode kept (leaving inference mode would turn gradients on)."""
    grad, dtype = torch.is_grad_enabled(), torch.get_default_dtype()
    _outer_autocast.append(
        {d: torch.get_autocast_dtype(d) for d in _AUTOCAST_DEVICES if torch.is_autocast_enabled(d)}
    )
    with contextlib.ExitStack() as stack:
        stack.callback(_outer_autocast.pop)
        # torch.jit.trace: the probe's ops are not the model's
        tracing = torch._C._get_tracing_state()
        if tracing is not None:
            torch._C._set_tracing_state(None)  # type: ignore[attr-defined]
            stack.callback(torch._C._set_tracing_state, tracing)  # type: ignore[attr-defined]
        stack.enter_context(torch._C.DisableTorchFunction())
        stack.enter_context(torch.inference_mode(False))
        for device in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        stack.enter_context(torch.set_grad_enabled(grad))
        if dtype is not torch.float32:
            torch.set_default_dtype(torch.float32)
            stack.callback(torch.set_default_dtype, dtype)
        yield


T = TypeVar("T")


def guarded(function: Callable[..., T], fallback: Any = None) -> Callable[..., T]:
    """``function`` run in the probe's own modes; its exception becomes a fault and ``fallback``."""
    where = getattr(function, "__qualname__", repr(function))

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> T:
        try:
            if _foreign():
                with own_modes():
                    return function(*args, **kwargs)
            return function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the probe's failure is never the student's
            # any exit but a return (a student's BaseException raised in a callback the probe read,
            # too)
            FAULTS.record(where, exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise  # the grader's interrupt at the time limit
            return fallback

    return call
