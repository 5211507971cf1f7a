"""How far a bfloat16 pass may honestly differ from the grader's float32 run, on the real data.

Trains a BatchNorm MLP for a few epochs on the official training images, then predicts the 10,000
official test images three ways: float32 (the evaluator's grade), under bfloat16 autocast in
batches of 64 (a notebook's test pass), and with weights and inputs rounded to bfloat16 and summed
in float64 (another device's order of sums). It applies the evaluator's own bound
(``REGIME_FACTOR`` times how far its bfloat16 emulation moves each row, within 1 to ``ROW_SPREAD``
times the median row's) and prints how many rows each way flipped, how many of those lie outside
the bound (each would be a false tampering accusation) and the share of rows too close to call.

Usage: python benchmarks/bench_precision.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from torch import nn

from grader.evaluator.key import read_images
from grader.evaluator.predict import REGIME_FACTOR, ROW_SPREAD
from grader.model.dataset import Dataset


def _images(path: Path) -> torch.Tensor:
    return read_images(path).float() / 255


def _labels(path: Path) -> torch.Tensor:
    return torch.tensor(list(path.read_bytes()[8:]), dtype=torch.long)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    raw = Dataset(Path.home() / ".cache" / "grader" / "fashion-mnist").raw
    train_x, train_y = (
        _images(raw / "train-images-idx3-ubyte"),
        _labels(raw / "train-labels-idx1-ubyte"),
    )
    test_x, test_y = (
        _images(raw / "t10k-images-idx3-ubyte"),
        _labels(raw / "t10k-labels-idx1-ubyte"),
    )
    model = nn.Sequential(
        nn.Linear(784, 512),
        nn.BatchNorm1d(512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(args.epochs):
        order = torch.randperm(48_000)
        model.train()
        for start in range(0, 48_000, 128):
            rows = order[start : start + 128]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(train_x[rows]), train_y[rows]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        exact = model(test_x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            notebook = torch.cat([model(test_x[i : i + 64]).float() for i in range(0, 10_000, 64)])
            emulated = torch.cat(
                [model(test_x[i : i + 1000]).float() for i in range(0, 10_000, 1000)]
            )
        rounded = copy.deepcopy(model).double()
        for p in rounded.parameters():
            p.data = p.data.to(torch.bfloat16).double()
        device = rounded(test_x.to(torch.bfloat16).double()).float()
    moved = (emulated - exact).abs().amax(1)
    usual = float(moved.median())
    noise = REGIME_FACTOR * moved.clamp(min=usual, max=ROW_SPREAD * usual)
    top = exact.topk(2, 1)
    margin, classes = top.values[:, 0] - top.values[:, 1], top.indices[:, 0]
    close = (margin < 1e-3) | (margin <= noise)
    print(
        f"float32 accuracy {100 * float((classes == test_y).float().mean()):.2f}%, "
        f"bfloat16 autocast {100 * float((notebook.argmax(1) == test_y).float().mean()):.2f}%"
    )
    for name, scores in (
        ("bfloat16 autocast, batches of 64", notebook),
        ("bfloat16-rounded, float64 sums", device),
    ):
        flipped = scores.argmax(1) != classes
        print(
            f"{name}: {int(flipped.sum())} rows flipped, {int((flipped & ~close).sum())} outside "
            "the bound"
        )
    print(
        f"too close to call: {100 * float(close.float().mean()):.2f}% of the test images "
        f"(float32 alone: {100 * float((margin < 1e-3).float().mean()):.2f}%); median move "
        f"{usual:.4f}, largest {float(moved.max()):.4f}"
    )


if __name__ == "__main__":
    main()
