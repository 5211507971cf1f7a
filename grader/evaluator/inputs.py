"""Which official test image each row the graded pass fed its graph is, under one preprocessing for
the whole pass, and the rows rebuilt from the official pixels under that preprocessing (the graph
runs on those: whatever the kernel's floats held within the tolerances never reaches it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy
import torch

from grader.evaluator import key

# official pixel rows (uint8) -> the inputs a pass fed its graph (float64)
PixelMap = Callable[[Any], Any]
# per row its official index or -1, the rows rebuilt from the official pixels, the map
Found = tuple[list[int], Any, PixelMap | None]


def _keys(rows: torch.Tensor, channels: int) -> list[bytes]:
    """Per row: the content key, exactly (what an increasing map per image and channel keeps)."""
    return key.keys(rows, tolerance=0.0, channels=channels)


def _monotone(p: Any, x: Any, channels: int) -> Any:
    """Per row: is ``x`` a non-decreasing map of the pixels ``p`` in each channel (equal pixels
    equal, a brighter one never lower)?"""
    rows, size = p.shape[0], p.shape[1] // channels
    p, x = p.reshape(rows * channels, size), x.reshape(rows * channels, size)
    order = torch.argsort(p, dim=1, stable=True)
    ps, xs = p.gather(1, order), x.gather(1, order)
    dp, dx = ps[:, 1:] - ps[:, :-1], xs[:, 1:] - xs[:, :-1]
    tolerance = 1e-5 * (xs.amax(1) - xs.amin(1)).clamp_min(1e-12)[:, None] + 1e-7
    good = ((dp == 0) & (dx.abs() <= tolerance)) | ((dp > 0) & (dx >= -tolerance))
    return good.all(1).reshape(rows, channels).all(1)


def _one_map(p: Any, x: Any, channels: int) -> PixelMap | None:
    """Do all rows follow one preprocessing? Either one non-decreasing table per channel from pixel
    value to input value for the whole pass (ToTensor, Normalize with a mean and deviation per
    channel, /255, half precision, any fixed curve), or each image standardized (or min-max scaled)
    by its own statistics and then one affine map. A map chosen per image could carry anything
    about that image (its label, another model's answer). Returns the fitted map from official
    pixels to inputs (the graph then runs on the inputs it rebuilds, so nothing hidden within the
    tolerances reaches it, and on training images it rebuilds the same way), or None."""
    span = float(x.max() - x.min()) or 1.0
    tolerance = 1e-5 * span + 1e-7
    rows, size = p.shape[0], p.shape[1] // channels
    by_channel = p.reshape(rows, channels, size), x.reshape(rows, channels, size)
    tables = [_table(by_channel[0][:, c], by_channel[1][:, c], tolerance) for c in range(channels)]
    if all(t is not None for t in tables):
        table = torch.cat([t for t in tables if t is not None])  # channel c's at 256 c
        offset = torch.arange(channels).repeat_interleave(size) * 256
        return lambda q: table[q.long() + offset]
    for per_row in (_standardized, _min_max):
        z = per_row(p)
        zc, xc = z - z.mean(), x - x.mean()
        scale = float((zc * xc).sum() / (zc * zc).sum().clamp_min(1e-12))
        if scale > 0 and float((xc - scale * zc).abs().max()) <= 1e-4 * span + 1e-6:
            return _affine(per_row, float(x.mean()), scale, float(z.mean()))
    return None


def _table(p: Any, x: Any, tolerance: float) -> Any | None:
    """The non-decreasing table (256 values) from pixel value to input value that the inputs
    ``x`` of the pixels ``p`` follow within ``tolerance``, or None."""
    flat_p, flat_x = p.reshape(-1).long(), x.reshape(-1)
    low = torch.full((256,), float("inf"), dtype=torch.float64)
    low = low.scatter_reduce(0, flat_p, flat_x, "amin")
    high = torch.full((256,), float("-inf"), dtype=torch.float64)
    high = high.scatter_reduce(0, flat_p, flat_x, "amax")
    present = torch.isfinite(low)
    low, high = low[present], high[present]
    if not (((high - low) <= tolerance).all() and (high[:-1] <= low[1:] + tolerance).all()):
        return None
    levels = torch.nonzero(present).flatten().double()  # grey levels no test image has: between
    return torch.from_numpy(numpy.interp(numpy.arange(256.0), levels.numpy(), low.numpy()))


def _standardized(q: Any) -> Any:
    q = q.double()
    return (q - q.mean(1, keepdim=True)) / q.std(1, keepdim=True).clamp_min(1e-12)


def _min_max(q: Any) -> Any:
    q = q.double()
    low, high = q.amin(1, keepdim=True), q.amax(1, keepdim=True)
    return (q - low) / (high - low).clamp_min(1e-12)


def _affine(per_row: PixelMap, mean: float, scale: float, centre: float) -> PixelMap:
    """Each image through ``per_row`` (its own statistics), then one affine map for all."""
    return lambda q: mean + scale * (per_row(q) - centre)


def per_image(inputs: Any, images: Any, channels: int = 1) -> Found:
    """``_matched`` for a map that keeps the pixels' order, else for one that reverses it
    (``1 - x``), for images of ``channels`` channels."""
    found, rebuilt, pixel_map = _matched(inputs, images, channels)
    if -1 in found:
        back, again, reverse = _matched(-inputs, images, channels)
        if back.count(-1) < found.count(-1):
            return back, -again, (lambda q: -reverse(q)) if reverse is not None else None
    return found, rebuilt, pixel_map


def _matched(inputs: Any, images: Any, channels: int) -> Found:
    """Per row, the official index of the test image it is, under one preprocessing for the whole
    pass (``_one_map``), or -1. The image is found by its darkest and brightest pixel masks; images
    sharing those masks are told apart by which one the row is a non-decreasing map of."""
    table: dict[bytes, list[int]] = {}
    for index, image_key in enumerate(_keys(images, channels)):
        table.setdefault(image_key, []).append(index)
    found, shared = [], []
    for row, row_key in enumerate(_keys(inputs, channels)):
        group = table.get(row_key)
        found.append(group[0] if group else -1)
        if group and len(group) > 1:
            shared.append((row, group))
    found_t = torch.tensor(found, dtype=torch.long)
    single = found_t >= 0
    for row, _group in shared:
        single[row] = False
    rows = torch.nonzero(single).flatten()
    if rows.numel():
        good = _monotone(images[found_t[rows]].to(torch.int16), inputs[rows].double(), channels)
        found_t[rows[~good]] = -1
    used: set[int] = set()
    for row, group in shared:  # a few rows; the unused candidates first
        found_t[row] = -1
        x = inputs[row : row + 1].double()
        for index in sorted(group, key=lambda i: i in used):
            if bool(_monotone(images[index : index + 1].to(torch.int16), x, channels)[0]):
                found_t[row] = index
                used.add(index)
                break
    matched = torch.nonzero(found_t >= 0).flatten()
    rebuilt = inputs.double().clone()
    if not matched.numel():
        return found_t.tolist(), rebuilt, None
    pixel_map = _one_map(images[found_t[matched]], inputs[matched].double(), channels)
    if pixel_map is None:
        return [-1] * inputs.shape[0], rebuilt, None
    rebuilt[matched] = pixel_map(images[found_t[matched]])
    return found_t.tolist(), rebuilt, pixel_map


def _dense_ranks(columns: Any) -> Any:
    ranks = torch.empty(columns.shape, dtype=torch.int32)
    for j in range(columns.shape[1]):
        ranks[:, j] = torch.unique(columns[:, j], return_inverse=True)[1].to(torch.int32)
    return ranks


def per_pixel(inputs: Any, images: Any) -> Found:
    """Per row, the official index of the test image it is under an increasing affine map per pixel
    position (feature normalization with the training set's mean and deviation), or -1. Only a
    pass over the whole test set: the ranks within each column are then those of the images. (In
    ``answer.evaluate``, -2 marks rows fed before that pass, which are not graded.)"""
    if inputs.shape[0] != images.shape[0]:
        return [-1] * inputs.shape[0], None, None
    ours, theirs = _dense_ranks(inputs), _dense_ranks(images)
    table = {row.numpy().tobytes(): i for i, row in enumerate(theirs)}
    rows = [table.get(row.numpy().tobytes(), -1) for row in ours]
    if -1 in rows or len(set(rows)) != len(rows):
        return [-1] * inputs.shape[0], None, None
    p = images[torch.tensor(rows)].double()
    x = inputs.double()
    pc, xc = p - p.mean(0), x - x.mean(0)
    scale = (pc * xc).sum(0) / (pc * pc).sum(0).clamp_min(1e-12)
    residual = (xc - pc * scale).abs().amax(0)
    spread = xc.abs().amax(0).clamp_min(1e-12)
    varies = pc.abs().amax(0) > 0
    good = bool(((residual <= 1e-4 * spread + 1e-6) | ~varies).all()) and bool(
        (scale[varies] > 0).all()
    )
    if not good:
        return [-1] * inputs.shape[0], None, None
    mean, centre = x.mean(0), p.mean(0)
    # rebuilt under the fitted map
    return rows, mean + pc * scale, lambda q: mean + (q.double() - centre) * scale


def as_fed(rows: Any, dtype: Any) -> Any:
    """Rebuilt rows as the graph was fed them (raw pixels: whole numbers, rounded and clamped)."""
    return rows.to(dtype) if dtype.is_floating_point else rows.round().clamp(0, 255).to(dtype)
