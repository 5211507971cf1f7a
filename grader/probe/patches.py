"""Every change the probe makes to torch, torchvision or IPython, recorded so it can be undone and
checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Patch:
    owner: Any
    attribute: str
    new: Any
    old: Any


class Patches:
    """Like pytest's monkeypatch: ``set`` remembers the old value, ``undo`` restores it, ``changed``
    names
    the patches that are no longer what the probe installed (student code replaced them)."""

    def __init__(self) -> None:
        self.applied: list[Patch] = []

    def set(self, owner: Any, attribute: str, new: Any) -> None:
        self.applied.append(Patch(owner, attribute, new, getattr(owner, attribute)))
        setattr(owner, attribute, new)

    def undo(self) -> None:
        for patch in reversed(self.applied):
            setattr(patch.owner, patch.attribute, patch.old)
        self.applied.clear()

    def changed(self) -> list[str]:
        return [
            f"{getattr(p.owner, '__name__', p.owner)}.{p.attribute}"
            for p in self.applied
            if _current(p.owner, p.attribute) is not p.new
        ]


def _current(owner: Any, attribute: str) -> Any:
    return (
        vars(owner).get(attribute) if isinstance(owner, type) else getattr(owner, attribute, None)
    )
