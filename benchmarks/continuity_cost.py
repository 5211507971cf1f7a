"""What the probe's watch of the weights costs a training step, against the bare step.

Steps the reference model (784-512-256-10, Adam, batch 64) on random rows, in rounds that alternate
the bare step with the step watched as the probe watches it, and prints the median time of each and
their difference per step. ``--observer continuity`` (probe/continuity.py): the step wrapped in
``Continuity.check`` and ``keep``; ``--observer gradients`` (probe/gradients.py): each Linear call,
each weight's gradient and the gradient each step uses, checked by ``LinearGradients``.

    python benchmarks/continuity_cost.py [--observer continuity|gradients] [--steps 200] [--rounds
    15] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from grader.probe.continuity import Continuity
from grader.probe.gradients import LinearGradients


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def _round(steps: int, watched: bool, observer: str = "continuity") -> float:
    torch.manual_seed(0)
    model = _model()
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    continuity = Continuity()
    gradients = LinearGradients()
    stepping = watched and observer == "gradients"  # the step's gradients checked too
    if stepping:
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_hook(lambda m, a, o: gradients.on_call(m, a, o, id))
        watched = False  # the hooks are the watch
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if watched:
            continuity.check(1, params)
        if stepping:
            gradients.step_begins(params)
        optimizer.step()
        if stepping:
            gradients.update_done(params)
            gradients.on_step()
        if watched:
            continuity.keep(1, params)
    if watched:
        continuity.export()
    gradients.export()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observer", choices=("continuity", "gradients"), default="continuity")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _round(20, True)  # warm up
    bare, watched = [], []
    for _ in range(args.rounds):
        bare.append(_round(args.steps, False))
        watched.append(_round(args.steps, True, args.observer))
    b, w = statistics.median(bare), statistics.median(watched)
    print(
        f"bare step {b * 1e6:.0f} us, with {args.observer} {w * 1e6:.0f} us: "
        f"+{(w - b) * 1e6:.0f} us a step "
        f"({100 * (w - b) / b:+.1f}%), medians of {args.rounds} rounds of {args.steps} steps"
    )
    fb, fw = min(bare), min(watched)  # the fastest rounds: the least disturbed by a shared machine
    print(
        f"fastest rounds: bare {fb * 1e6:.0f} us, with {args.observer} {fw * 1e6:.0f} us: "
        f"+{(fw - fb) * 1e6:.0f} us ({100 * (fw - fb) / fb:+.1f}%)"
    )


if __name__ == "__main__":
    main()
