"""Numbers for live objects (parameters, modules, optimizers) that are never reused.

``id()`` is reused once an object is freed, so a sweep's discarded models could pass their
training on to the next model allocated at the same address. A serial is tied to the object by a
weak reference: once the object is gone, a new object at the same address gets a new number.
"""

from __future__ import annotations

import weakref
from typing import Any


class Serials:
    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref[Any], int]] = {}
        self._count = 0

    def of(self, obj: Any) -> int:
        entry = self._by_id.get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        self._count += 1
        self._by_id[id(obj)] = (weakref.ref(obj), self._count)
        return self._count
