"""The dataset's images by content: which test or training image a row of a model's input is.

A notebook may feed its model the images through any test-time pipeline: ToTensor, Normalize,
division by 255 by hand, a TensorDataset, numpy, half precision, another device, flattened or
not. All of these map the pixels of each channel of an image by one increasing affine function, so
the pixels equal to the channel's minimum and those equal to its maximum stay the same positions,
exactly (a decreasing map, ``1 - x``, swaps the two). The key of an image is the bits of those
masks; it identifies the image and is cheap to compute on whatever device the input lives. The key
is the trusted evaluator's (grader/evaluator/key.py), imported from there: one definition for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from grader.evaluator import key
from grader.evaluator.key import FASHION_MNIST, ImageSpec, read_images

__all__ = [
    "ImageIndex",
    "Match",
    "PerPixel",
    "image_rows",
    "read_images",
    "same_image_rows",
]


def image_rows(value: object, size: int) -> torch.Tensor | None:
    """``value`` as rows of one image of ``size`` values each, (rows, size), when its trailing
    dimensions hold exactly one image ((N, 784), (N, 1, 28, 28), (1, N, 784), ...) and it holds
    pixels; else None."""
    if (
        not isinstance(value, torch.Tensor)
        or value.dim() < 2
        or value.numel() == 0
        or value.is_complex()
    ):
        return None
    if not (value.is_floating_point() or value.dtype == torch.uint8):
        return None
    held = 1
    for k in range(value.dim() - 1, 0, -1):
        held *= value.shape[k]
        if held == size:
            return value.reshape(-1, size)
        if held > size:
            return None
    return None


@dataclass(frozen=True)
class Match:
    """Rows of one input that are images of one split: their positions in the batch and image
    indices."""

    split: str  # "test" or "train"
    positions: list[int]
    # per position: every index with that content (exact duplicates share one)
    indices: list[list[int]]
    batch: int
    # positions whose rows are their images flipped left to right
    flipped: frozenset[int] = frozenset()

    def upright(self) -> Match | None:
        """The rows that are their images as they are (a test-time flip is another view, not a
        prediction)."""
        if not self.flipped:
            return self
        kept = [
            (p, group) for p, group in zip(self.positions, self.indices) if p not in self.flipped
        ]
        return (
            Match(self.split, [p for p, _ in kept], [g for _, g in kept], self.batch)
            if kept
            else None
        )


def same_image_rows(
    rows: torch.Tensor, images: torch.Tensor, spec: ImageSpec = FASHION_MNIST
) -> torch.Tensor:
    """Per row of ``rows`` (n, values), whether it is its ``images`` row (as is or mirrored left to
    right, images of ``spec``'s geometry) under one map of the grey levels per channel: an affine
    map (either sign) within half a grey level at every pixel, or a monotone one (equal pixels
    equal, brighter pixels never darker, or never brighter) within half a grey level of the row's
    range; both within the rounding of the row's own dtype. Any preprocessing of the image alone
    (ToTensor, Normalize, a gamma curve, half precision) keeps that; an image changed in part (an
    erased box) or another image sharing its key does not."""
    rows = rows.detach().cpu()
    found = _unturned(rows, images, spec.channels)
    left = (~found).nonzero().squeeze(1)
    if left.numel():  # the same for the mirror
        found[left] = _unturned(rows[left], spec.mirror(images[left]), spec.channels)
    return found


def _unturned(rows: torch.Tensor, images: torch.Tensor, channels: int) -> torch.Tensor:
    """``same_image_rows`` for the images as they are: every channel of a row its image's."""
    count, size = rows.shape[0], rows.shape[1] // channels
    resolution = torch.finfo(rows.dtype if rows.dtype.is_floating_point else torch.float32).eps
    rows = rows.float().reshape(count * channels, size)
    images = images.float().reshape(count * channels, size)
    low, high = rows.amin(1, keepdim=True), rows.amax(1, keepdim=True)
    rounding = resolution * torch.maximum(low.abs(), high.abs())
    slack = (high - low) * (0.5 / 255) + rounding
    found = torch.zeros(rows.shape[0], dtype=torch.bool)
    bottom, top = images.amin(1, keepdim=True), images.amax(1, keepdim=True)
    for sign in (1.0, -1.0):
        # affine: each pixel within half a grey level of the map through the extremes (each tried
        # while some row is not yet found: the usual Normalize is found by the first)
        scale = sign * (high - low) / (top - bottom).clamp(min=1)
        shift = low - scale * (bottom if sign > 0 else top)
        error = (rows - (scale * images + shift)).abs().amax(1, keepdim=True)
        found |= ((error <= 0.5 * scale.abs() + rounding) & (scale != 0)).squeeze(1)
        if bool(found.all()):
            break
    # monotone (a sort of each image): only for the rows not yet found
    left = (~found).nonzero().squeeze(1)
    if left.numel():
        varying = (high > low).squeeze(1)[left]
        grey, order = images[left].sort(dim=1, stable=True)  # a curve of the grey levels
        steps = rows[left].gather(1, order).diff(1)
        function = ((steps.abs() <= slack[left]) | (grey.diff(1) != 0)).all(1)
        rising, falling = (steps >= -slack[left]).all(1), (steps <= slack[left]).all(1)
        found[left] |= function & (rising | falling) & varying
    found &= (top > bottom).squeeze(1)
    return found.reshape(count, channels).all(1)


class ImageIndex:
    """The official images of a dataset's IDX files in ``raw`` (of ``spec``'s geometry) by their
    content keys, per split."""

    def __init__(self, raw: Path, spec: ImageSpec = FASHION_MNIST) -> None:
        self.spec = spec
        self.splits: dict[str, dict[bytes, list[int]]] = {}
        self.sizes: dict[str, int] = {}
        # the raw images, to verify a key's match pixel by pixel
        self.images: dict[str, torch.Tensor] = {}
        for split, name in (
            ("test", "t10k-images-idx3-ubyte"),
            ("train", "train-images-idx3-ubyte"),
        ):
            if (raw / name).is_file():
                images = read_images(raw / name)
                if images.shape[1] != spec.values:
                    raise ValueError(f"{raw / name} does not hold images of {spec}")
                self.images[split] = images
                table: dict[bytes, list[int]] = {}
                for index, image_key in enumerate(key.keys(images, channels=spec.channels)):
                    table.setdefault(image_key, []).append(index)
                self.splits[split] = table
                self.sizes[split] = images.shape[0]

    def matches(self, value: object) -> dict[str, Match]:
        """Every split with rows in ``value``, however few: a test image hidden among training rows
        too, flipped left to right or not."""
        rows = image_rows(value, self.spec.values)
        if rows is None:
            return {}
        with torch.no_grad():
            masks = key.masks(rows.detach(), channels=self.spec.channels)
        keys = key.pack(masks)
        flipped: list[bytes] | None = None
        half = len(keys[0]) // 2
        found: dict[str, Match] = {}
        for split, table in self.splits.items():
            # An inverted image (1 - x, a decreasing map) swaps its minimum and maximum masks.
            hits = [
                (position, hit)
                for position, row_key in enumerate(keys)
                if (hit := table.get(row_key) or table.get(row_key[half:] + row_key[:half]))
                is not None
            ]
            turned: list[tuple[int, list[int]]] = []
            if len(hits) < len(keys):  # an image flipped left to right: its masks are
                if flipped is None:
                    flipped = key.pack(self.spec.mirror(masks))  # each mask a plane of its own
                seen = {position for position, _ in hits}
                turned = [
                    (position, hit)
                    for position, row_key in enumerate(flipped)
                    if position not in seen and (hit := table.get(row_key)) is not None
                ]
                hits = sorted(hits + turned, key=lambda item: item[0])
            if hits:
                found[split] = Match(
                    split,
                    [p for p, _ in hits],
                    [i for _, i in hits],
                    len(keys),
                    frozenset(p for p, _ in turned),
                )
        return found

    def verified(self, match: Match, value: object) -> Match | None:
        """The rows of ``match`` that are, pixel by pixel, an image their key named
        (``same_image_rows``).
        A key names an image, but a row changed by augmentation (an erased box) may come to share
        the
        key of another image: a row is evidence against the notebook (a test image trained on, a
        training image also validated on) only when it is that image."""
        rows = image_rows(value, self.spec.values)
        images = self.images.get(match.split)
        if rows is None or images is None or not match.positions:
            return None
        positions = torch.tensor(
            [p for p, group in zip(match.positions, match.indices) for _ in group]
        )
        indices = torch.tensor([i for group in match.indices for i in group])
        hit = same_image_rows(
            rows.index_select(0, positions.to(rows.device)),
            images.index_select(0, indices),
            self.spec,
        )
        exact = set(positions[hit].tolist())
        kept = [(p, group) for p, group in zip(match.positions, match.indices) if p in exact]
        return (
            Match(
                match.split,
                [p for p, _ in kept],
                [g for _, g in kept],
                match.batch,
                match.flipped & exact,
            )
            if kept
            else None
        )

    @staticmethod
    def majority(found: dict[str, Match]) -> Match | None:
        """The split most rows are images of, when at least half of them are."""
        best: Match | None = None
        for match in found.values():
            if 2 * len(match.positions) >= match.batch and (
                best is None or len(match.positions) > len(best.positions)
            ):
                best = match
        return best

    def match(self, value: object) -> Match | None:
        """Which split's images most rows of ``value`` are, when at least half of them are."""
        return self.majority(self.matches(value))


class PerPixel:
    """Training rows mapped by one increasing affine function per pixel position (each pixel
    standardized by its training-set mean and standard deviation, the lecture's feature
    normalization), which the per-image key cannot see.

    A raw 0 is every pixel's smallest value, so it maps to the smallest value its position takes
    in any row; the running minimum per position over the training calls seen is that value once
    a position has shown one raw 0. The rows' masks of where they equal it are the raw images'
    zero masks, which is the minimum half of the per-image key (every image here has a 0 pixel).
    Only the training split is looked up; after ``TRIES`` calls without a hit it stops trying."""

    TRIES = 50

    def __init__(self, index: ImageIndex) -> None:
        self.size = index.spec.values
        self.tries = 0
        self.hits = 0
        self.zero: torch.Tensor | None = None
        self.table: dict[bytes, list[int]] = {}
        for image_key, indices in index.splits.get("train", {}).items():
            self.table.setdefault(image_key[: len(image_key) // 2], []).extend(indices)

    def match(self, value: object, stepping: bool) -> Match | None:
        if not self.table or (not self.hits and (self.tries >= self.TRIES or not stepping)):
            return None
        given = image_rows(value, self.size)
        if given is None or not given.is_floating_point() or given.shape[0] < 2:
            return None
        import numpy

        self.tries += 1
        with torch.no_grad():
            rows = given.detach()
            if stepping:
                low = rows.amin(0)
                same = (
                    self.zero is not None
                    and self.zero.device == low.device
                    and self.zero.dtype == low.dtype
                )
                self.zero = torch.minimum(self.zero, low) if same else low  # type: ignore[arg-type]
            if (
                self.zero is None
                or self.zero.device != rows.device
                or self.zero.dtype != rows.dtype
            ):
                return None
            masks = (rows == self.zero).cpu().numpy()
        packed = numpy.packbits(masks, axis=1)
        hits = [
            (position, found)
            for position, row in enumerate(packed)
            if (found := self.table.get(row.tobytes()))
        ]
        if 2 * len(hits) < len(packed):
            return None
        self.hits += 1
        return Match("train", [p for p, _ in hits], [i for _, i in hits], len(packed))
