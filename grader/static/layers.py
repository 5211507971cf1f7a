"""A weight layer as the frozen-layers rule compares it: the arguments that make the layer (sizes,
channels, kernel, stride, padding, dilation, groups), with torch's defaults filled in and one
spelling for each value, its weight's shape, and how it reads in a verdict.

One ``Spec`` for the template's layers and the student's alike (both are ``WeightLayer``s that
static/reference.py reads from a constructor call), so ``nn.Conv2d(1, 32, 3)`` and
``nn.Conv2d(in_channels=1, out_channels=32, kernel_size=(3, 3), stride=1, padding='valid')``
are the same layer. Bias and padding_mode are not compared (like a Linear layer's bias).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grader.evaluator.ops import WIDEST
from grader.model.rubric import ArgValue, WeightLayer

if TYPE_CHECKING:
    from grader.evaluator.key import ImageSpec

LINEAR = "Linear"
# Conv kinds -> how many spatial dimensions their kernel has.
CONV_DIMS = {"Conv1d": 1, "Conv2d": 2}
_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
COMPARED: dict[str, tuple[str, ...]] = {
    LINEAR: ("in_features", "out_features"),
    **{kind: _CONV for kind in CONV_DIMS},
}
_DEFAULTS: dict[str, ArgValue] = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_PER_DIM = ("kernel_size", "stride", "padding", "dilation")
_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# A layer's weight as the rules count it: (in_features, out_features) for a Linear layer (as HW3's
# messages write it, 784->512), the weight tensor's shape for a convolution (out, in / groups,
# *kernel), so the two never collide.
WeightKey = tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class Spec:
    """What the rule compares of one weight layer: its kind and the compared arguments, each
    normalized (None: not a constant)."""

    kind: str
    name: str | None  # the attribute it is assigned to (self.conv1), None in an nn.Sequential
    values: tuple[tuple[str, ArgValue], ...]  # COMPARED[kind], in that order

    @property
    def known(self) -> bool:
        return all(value is not None for _, value in self.values)

    def value(self, name: str) -> ArgValue:
        return dict(self.values).get(name)

    @property
    def key(self) -> WeightKey | None:
        """The weight as the rules count it (see ``WeightKey``); None when a size is unknown."""
        if not self.known:
            return None
        if self.kind == LINEAR:
            return (_int(self.value("in_features")), _int(self.value("out_features")))
        kernel = self.value("kernel_size")
        assert isinstance(kernel, tuple)
        groups = _int(self.value("groups"))
        return (
            _int(self.value("out_channels")),
            _int(self.value("in_channels")) // max(groups, 1),
            *(int(k) for k in kernel),
        )

    @property
    def text(self) -> str:
        """784->512 for a Linear layer; Conv2d(1, 32, kernel_size=3, padding=1) for a convolution
        (defaults left out)."""
        if self.kind == LINEAR:
            return f"{_shown(self.value('in_features'))}->{_shown(self.value('out_features'))}"
        shown = [_shown(self.value("in_channels")), _shown(self.value("out_channels"))]
        shown += [
            f"{name}={_shown(value)}"
            for name, value in self.values[2:]
            if name == "kernel_size" or value != _default(name, self.kind)
        ]
        return f"{self.kind}({', '.join(shown)})"

    def differences(self, template: Spec) -> tuple[tuple[str, ArgValue, ArgValue], ...]:
        """(argument, this layer's value, the template's) for each compared argument that
        differs."""
        return tuple(
            (name, mine, theirs)
            for (name, mine), (_, theirs) in zip(self.values, template.values)
            if mine != theirs
        )

    def changes(self, template: Spec) -> str:
        """What differs from the template's layer: ``kernel_size 5 (the template's 3)``."""
        return ", ".join(
            f"{name} {_shown(mine)} (the template's {_shown(theirs)})"
            for name, mine, theirs in self.differences(template)
        )


def spec(layer: WeightLayer) -> Spec:
    """The compared arguments of ``layer``, defaults filled in, normalized."""
    given = dict(layer.args)
    dims = CONV_DIMS.get(layer.kind, 0)
    values = {
        name: _normal(name, given[name] if name in given else _DEFAULTS.get(name), dims)
        for name in COMPARED[layer.kind]
    }
    if values.get("padding") == "same":
        values["padding"] = _same(values["kernel_size"], values["dilation"], values["stride"])
    return Spec(kind=layer.kind, name=layer.name, values=tuple(values.items()))


def widest_way(layers: Sequence[WeightLayer], image: ImageSpec) -> int:
    """The most values per image the evaluator lets the image's way hold before it runs a graph
    (flow.py): ``WIDEST`` times the widest of the image, each Linear layer's sizes and each conv
    layer's out_channels at every position of the image (no pooling before it). HW3's layers are
    no wider than its image: four images, as always. The grader passes it on the evaluator's
    command line, from the template, never from the capture. A conv layer of 64 channels on
    28x28 images gives 200,704 values, 800 MB for the evaluator's batch of 1,000 rows: an honest
    model's activations fit four times over, and the graph that copies each image a thousand
    times is refused before it runs."""
    widths = [image.values]
    for layer in map(spec, layers):
        sizes = [layer.value(n) for n in ("in_features", "out_features", "out_channels")]
        positions = 1 if layer.kind == LINEAR else image.height * image.width
        widths += [size * positions for size in sizes if isinstance(size, int)]
    return WIDEST * max(widths)


def keys(specs: tuple[Spec, ...]) -> Counter[WeightKey | None]:
    return Counter(s.key for s in specs)


def key_text(key: WeightKey | None) -> str:
    """784->512 for a Linear layer's key, [32, 1, 3, 3] for a convolution's, ? when unknown."""
    if key is None:
        return "?"
    return f"{key[0]}->{key[1]}" if len(key) == 2 else str(list(key))


def number(n: int) -> str:
    """three, twelve -> 12."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _int(value: ArgValue) -> int:
    assert isinstance(value, int)
    return value


def _default(name: str, kind: str) -> ArgValue:
    value = _DEFAULTS.get(name)
    return (value,) * CONV_DIMS[kind] if name in _PER_DIM and isinstance(value, int) else value


def _normal(name: str, value: ArgValue, dims: int) -> ArgValue:
    """Sizes as ints (None where not whole), per-dimension values as tuples of ``dims`` ints,
    'valid' padding as zeros; 'same' is kept for ``spec`` to resolve."""
    if name == "padding" and isinstance(value, str):
        return (0,) * dims if value == "valid" else value if value == "same" else None
    if name in _PER_DIM and dims:
        items = value if isinstance(value, tuple) else (value,) * dims
        whole = [_whole(v) for v in items]
        if len(whole) != dims or None in whole:
            return None
        return tuple(w for w in whole if w is not None)
    return _whole(value)


def _whole(value: ArgValue) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if float(value).is_integer() else None


def _same(kernel: ArgValue, dilation: ArgValue, stride: ArgValue) -> ArgValue:
    """padding='same' as the numbers it pads by, where they are symmetric (torch allows 'same'
    only with stride 1); else 'same'."""
    if not all(isinstance(v, tuple) for v in (kernel, dilation, stride)):
        return None
    assert isinstance(kernel, tuple) and isinstance(dilation, tuple) and isinstance(stride, tuple)
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if any(s != 1 for s in stride) or any(t % 2 for t in totals):
        return "same"
    return tuple(t // 2 for t in totals)


def _shown(value: ArgValue) -> str:
    if value is None:
        return "?"
    if isinstance(value, tuple) and len(set(value)) == 1:
        return str(value[0])
    if isinstance(value, tuple):
        return f"({', '.join(str(v) for v in value)})"
    return repr(value) if isinstance(value, str) else str(value)
