"""The probe's recorder without a kernel: content keys, test passes by content, training passes,
and parameter numbers that are never reused. (The kernel side is exercised for real by
test_patterns.py; these pin the mechanisms down quickly.)"""

from __future__ import annotations

import copy
import gc
from pathlib import Path
from typing import Any

import pytest
import torch

from grader.model.dataset import Dataset
from grader.model.probe_facts import parse
from grader.probe.content import ImageIndex, Match, read_images, same_image_rows
from grader.probe.identity import Serials
from grader.probe.recorder import Recorder


def _index(dataset: Dataset) -> tuple[ImageIndex, torch.Tensor, torch.Tensor]:
    index = ImageIndex(dataset.raw)
    return (
        index,
        read_images(dataset.raw / "t10k-images-idx3-ubyte"),
        read_images(dataset.raw / "train-images-idx3-ubyte"),
    )


def test_test_images_are_recognised_under_any_affine_preprocessing(tiny_dataset: Dataset) -> None:
    index, test, train = _index(tiny_dataset)
    normalized = test.float().div(255).sub(0.2860).div(0.3530)
    for variant in (
        test,
        normalized,
        normalized.half(),
        normalized.view(-1, 1, 28, 28),
        1 - test.float() / 255,
        normalized[torch.randperm(len(normalized))],
    ):
        match = index.match(variant)
        assert match is not None and match.split == "test" and len(match.positions) == len(test)
    shuffled = torch.randperm(len(test))
    match = index.match(normalized[shuffled])
    # exact, any order
    assert match is not None and [group[0] for group in match.indices] == shuffled.tolist()
    assert index.match(train[:64].float()).split == "train"  # type: ignore[union-attr]
    assert index.match(torch.rand(64, 784)) is None
    assert index.match(torch.rand(64, 10)) is None


def test_serials_are_never_reused_for_a_new_object() -> None:
    serials = Serials()
    first = torch.nn.Parameter(torch.zeros(3))
    number = serials.of(first)
    assert serials.of(first) == number
    del first
    gc.collect()
    # one of them likely reuses the address
    again = [torch.nn.Parameter(torch.zeros(3)) for _ in range(200)]
    assert all(serials.of(p) != number for p in again)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(784, 16), torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x.reshape(-1, 784)))


def _call(recorder: Recorder, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    recorder.before_call(module, (x,))
    output = module(x)
    recorder.after_call(module, (x,), output)
    return output


def test_forward_called_directly_pairs_the_first_input_with_the_last_output(
    tiny_dataset: Dataset,
) -> None:
    index, test, _ = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net()
    x = test.float().div(255)
    with torch.no_grad():
        # model.forward(x): only fc1 and fc2 are called as modules
        for start in range(0, len(x), 50):
            hidden = _call(recorder, net.fc1, x[start : start + 50])
            _call(recorder, net.fc2, hidden)
    (test_pass,) = recorder.observers.tests.test_passes
    assert test_pass.complete and test_pass.batches == 4
    expected = net(x).argmax(1)
    assert torch.equal(test_pass.predictions.long(), expected)


def test_every_event_reaches_the_observers_that_implement_it(tiny_dataset: Dataset) -> None:
    """The recorder's events (probe/events.py): each has an observer, bound once, in the observers'
    order; an observer's other public methods are few and named (none is a misspelt event)."""
    from grader.probe.events import EVENTS, Observer

    recorder = Recorder(ImageIndex(tiny_dataset.raw), 10, Serials())
    observers = recorder.observers
    hooks = observers.hooks()
    assert set(hooks) == set(EVENTS) and all(hooks[event] for event in EVENTS)
    assert [h.__self__ for h in hooks["call_begins"]] == [
        observers.test_training,
        observers.draws,
        observers.evaluations,
        observers.tests,
    ]
    queries = {
        "watch",
        "training_pass",
        "unattributed_step",
        "stepping_loader",
        "mirrored_all",
        "carry",
    }
    for observer in vars(observers).values():
        assert isinstance(observer, Observer)
        own = {name for name in vars(type(observer)) if not name.startswith("_")}
        assert own <= set(EVENTS) | queries, type(observer).__name__


def test_a_new_pass_starts_when_an_image_comes_back(tiny_dataset: Dataset) -> None:
    index, test, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for epoch in range(3):
        for start in range(0, 480, 32):
            _train_step(
                recorder,
                net,
                optimizer,
                train[start : start + 32].float(),
                torch.zeros(32, dtype=torch.long),
            )
    with torch.no_grad():
        _call(recorder, net, test.float())
        _call(recorder, net, test[:100].float())  # a second, partial pass
    content = [p for p in recorder.shared.train_passes if p.source == "content"]
    assert [int(p.drawn.sum()) for p in content] == [480, 480, 480]
    assert all(sum(p.steps.values()) == 15 for p in content)
    assert [
        (p.complete, int((p.predictions >= 0).sum())) for p in recorder.observers.tests.test_passes
    ] == [(True, 200), (False, 100)]


def test_a_look_at_one_loader_batch_then_preloaded_training(tiny_dataset: Dataset) -> None:
    """The template's `next(iter(train_loader))` before training on preloaded tensors: the epochs
    are
    the content passes, and the grader (run_facts) counts them, not the one-batch loader pass."""
    from grader.judge.run_facts import training

    index, _, train = _index(tiny_dataset)
    serials = Serials()
    recorder = Recorder(index, 10, serials)
    net = _Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    recorder.loader_batch(
        recorder.start_loader_pass(len(train)), list(range(20)), (train[:20].float(), None)
    )
    for epoch in range(10):
        for start in range(0, 480, 32):
            _train_step(
                recorder,
                net,
                optimizer,
                train[start : start + 32].float(),
                torch.zeros(32, dtype=torch.long),
            )
    record = {
        **recorder.export(),
        "model": {"param_serials": [serials.of(p) for p in net.parameters()]},
    }
    facts = training(parse(record))
    assert facts.lineage == "direct" and len(facts.passes) == 10
    assert all(p.source == "content" for p in facts.passes)
    assert facts.trained.bit_count() >= 480 - 32  # the first batch may be left to the loader pass


def test_steps_decide_which_draws_trained_the_model(tiny_dataset: Dataset) -> None:
    """A notebook that calls model.eval() for validation and forgets model.train(): its batches
    still
    trained the model (a step followed each), and its validation calls did not."""
    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().eval()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for epoch in range(2):
        for start in range(0, 480, 32):
            _train_step(
                recorder,
                net,
                optimizer,
                train[start : start + 32].float(),
                torch.zeros(32, dtype=torch.long),
            )
        with torch.no_grad():
            _call(recorder, net, train[480:].float())
    recorder.export()
    trained = [p for p in recorder.shared.train_passes if p.stepping]
    validated = [p for p in recorder.shared.train_passes if not p.stepping]
    assert [int(p.drawn.sum()) for p in trained] == [480, 480] and [
        int(p.drawn.sum()) for p in validated
    ] == [120, 120]
    assert all(sum(p.steps.values()) == 15 for p in trained)


def test_patches_are_recorded_checked_and_undone() -> None:
    from grader.probe.patches import Patches

    class Owner:
        def method(self) -> str:
            return "original"

    patches = Patches()
    patches.set(Owner, "method", lambda self: "patched")
    assert Owner().method() == "patched" and patches.changed() == []
    Owner.method = lambda self: "student"  # type: ignore[method-assign]
    assert patches.changed() == ["Owner.method"]
    patches.undo()
    assert Owner().method() == "original" and patches.applied == []


_FETCH_SCRIPT = """
import json, sys, torch
import torch.nn.modules.module as hooks
import grader.probe.runtime as runtime
from torch.utils.data import DataLoader, Dataset
root = sys.argv[1]
runtime.install({"seed": 0, "data_root": root, "output": sys.argv[2], "num_classes": 10, "threads": 1,
                 "gpu_memory_mb": 0})
seen = []

class Images(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        seen.append(len(hooks._global_forward_pre_hooks) + len(hooks._global_forward_hooks))
        return torch.nn.Identity()(torch.full((784,), float(i))), i % 10

model = torch.nn.Linear(784, 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for images, labels in DataLoader(Images(), batch_size=4):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
after = len(hooks._global_forward_pre_hooks) + len(hooks._global_forward_hooks)
runtime.export()
print(json.dumps({"seen": seen, "after": after}))
"""  # noqa: E501


def test_the_module_hooks_are_out_while_a_loader_fetches_and_back_for_the_model(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    """A dataset's per-image transforms are modules: the probe's hooks are taken out while a batch
    is
    built (hundreds of thousands of calls a run), and the model's calls after it are still seen."""
    import json
    import subprocess
    import sys

    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", _FETCH_SCRIPT, str(tiny_dataset.root), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["seen"] == [0] * 8 and counts["after"] == 2
    record = json.loads(out.read_text())
    assert record["integrity"] == []
    assert sum(entry["steps"] for entry in record["optimizers"].values()) == 2
    assert record["optimizers"] and next(iter(record["optimizers"].values())).get("curve", {}).get(
        "loss"
    )


_THREAD_SCRIPT = """
import json, sys, threading, torch
import grader.probe.runtime as runtime
from torch.utils.data import DataLoader, Dataset
runtime.install({"seed": 0, "data_root": sys.argv[1], "output": sys.argv[2], "num_classes": 10, "threads": 1,
                 "gpu_memory_mb": 0})
model = torch.nn.Linear(784, 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
inside, release = threading.Event(), threading.Event()

class Slow(Dataset):  # a prefetching thread's loader, busy building a batch the whole time
    def __len__(self):
        return 1

    def __getitem__(self, i):
        inside.set()
        release.wait(60)
        return torch.zeros(784), 0

class Sneaky(Dataset):  # trains the model inside a dataset's __getitem__
    def __len__(self):
        return 2

    def __getitem__(self, i):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.rand(4, 784)), torch.zeros(4, dtype=torch.long)).backward()
        optimizer.step()
        return torch.zeros(784), 0

thread = threading.Thread(target=lambda: list(DataLoader(Slow())), daemon=True)
thread.start()
inside.wait(60)
x, criterion = torch.rand(8, 784), torch.nn.CrossEntropyLoss()
for _ in range(3):  # the main thread trains while the other thread's fetch is open: still watched
    optimizer.zero_grad()
    criterion(model(x), torch.zeros(8, dtype=torch.long)).backward()
    optimizer.step()
release.set()
thread.join(60)
list(DataLoader(Sneaky(), batch_size=2))
runtime.export()
"""  # noqa: E501


def test_a_prefetching_thread_hides_nothing_and_training_inside_a_dataset_is_counted(
    tiny_dataset: Dataset, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "probe.json"
    subprocess.run(
        [sys.executable, "-c", _THREAD_SCRIPT, str(tiny_dataset.root), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    record = json.loads(out.read_text())
    assert record["integrity"] == [] and record["steps"] == 5 and record["unwatched_steps"] == 2
    curve = next(iter(record["optimizers"].values()))["curve"]
    # the 3 watched steps
    assert [loss is not None for loss in curve["loss"]] == [True, True, True, False, False]


def _call_kw(recorder: Recorder, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x=x) as the global hooks see it: the outer call without positional input, the inner
    with it."""
    recorder.before_call(module, ())
    recorder.before_call(module.fc1, (x,))
    hidden = module.fc1(x.reshape(-1, 784))
    recorder.after_call(module.fc1, (x,), hidden)
    output = module.fc2(hidden)
    recorder.after_call(module, (), output)
    return output


def _train_step(
    recorder: Recorder,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> None:
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(_call(recorder, net, x), y).backward()
    optimizer.step()
    recorder.on_step(optimizer, (), {})


def test_test_rows_in_a_training_step_are_counted_however_few(tiny_dataset: Dataset) -> None:
    """One test image among 63 training images is not the batch's majority, yet its gradient reached
    the model: it is counted. Test images through a model in training mode without a backward (an
    evaluation that forgot model.eval() and no_grad) train nothing and are not."""
    index, test, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    labels = torch.zeros(64, dtype=torch.long)
    for start in range(0, 5 * 64, 64):
        x = (
            torch.cat([train[start : start + 63], test[start // 64 : start // 64 + 1]]).float()
            / 255
        )
        _train_step(recorder, net, optimizer, x, labels)
    assert (
        recorder.observers.test_training.rows_trained == 5
        and int(recorder.observers.test_training.trained.sum()) == 5
    )
    # Through what an attacker tries next: noise far below a grey level, a flip, eval mode, a
    # reshape, keyword arguments.
    variants = [
        lambda t: t + 1e-4 * torch.randn_like(t),
        lambda t: t.reshape(-1, 28, 28).flip(-1).reshape(-1, 784),
    ]
    for k, change in enumerate(variants):
        x = torch.cat([train[:63].float() / 255, change(test[50 + k : 51 + k].float() / 255)])
        _train_step(recorder, net, optimizer, x, labels)
    net.eval()
    _train_step(
        recorder, net, optimizer, torch.cat([train[:63], test[60:61]]).float() / 255, labels
    )
    net.train()
    optimizer.zero_grad()
    x = torch.cat([train[:63], test[70:71]]).float() / 255
    torch.nn.functional.cross_entropy(
        _call_kw(recorder, net, x.view(1, -1, 784)), labels
    ).backward()
    optimizer.step()
    recorder.on_step(optimizer, (), {})
    assert recorder.observers.test_training.rows_trained == 9
    # forgot eval mode and no_grad: a test pass with gradients, no backward
    for start in range(0, 200, 50):
        _call(recorder, net, test[start : start + 50].float() / 255)
    _train_step(recorder, net, optimizer, train[:64].float() / 255, labels)
    assert recorder.observers.test_training.rows_trained == 9
    assert recorder.export()["test_images_trained"] == 9


def test_a_step_after_no_batch_of_training_images_is_unattributed(tiny_dataset: Dataset) -> None:
    """A step on images nobody can recognise (noise of grey levels added) right after a step on a
    recognised batch;
    a step with no gradient at all (to silence the scheduler's warning) is not a training step."""
    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    optimizer.step()
    recorder.on_step(optimizer, (), {})
    labels = torch.zeros(64, dtype=torch.long)
    for start in range(0, 4 * 64, 64):
        x = train[start : start + 64].float() / 255
        _train_step(recorder, net, optimizer, x, labels)
        # five grey levels
        _train_step(recorder, net, optimizer, x + 0.02 * torch.randn_like(x), labels)
    (entry,) = recorder.shared.optimizers.values()
    assert entry["steps"] == 9 and entry.get("unattributed") == 4


def test_loading_back_a_saved_state_names_the_step_it_was_saved_at(tiny_dataset: Dataset) -> None:
    import copy

    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    initial = copy.deepcopy(net.state_dict())
    recorder.on_capture(net)
    aliased = net.state_dict()  # not a copy: it follows the weights
    recorder.on_capture(net)
    labels = torch.zeros(64, dtype=torch.long)
    for start in range(0, 3 * 64, 64):
        _train_step(recorder, net, optimizer, train[start : start + 64].float() / 255, labels)
    net.load_state_dict(aliased)
    recorder.on_load(net)
    net.load_state_dict(initial)
    recorder.on_load(net)
    assert [(load["step"], load["restored"]) for load in recorder.observers.checkpoints.loads] == [
        (3, None),
        (3, 0),
    ]
    # the latest state taken with those weights
    assert recorder.observers.checkpoints.loads[1]["restored_event"] == 2


def _real_raw(tmp_path: Path) -> Path:
    import gzip
    import shutil

    import pytest

    source = Path("/usr/share/datasets/fashion-mnist")
    if not (source / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(
            "the real FashionMNIST is not installed (apt-get install dataset-fashion-mnist)"
        )
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        with gzip.open(source / f"{name}.gz") as packed, open(raw / name, "wb") as out:
            shutil.copyfileobj(packed, out)
    return raw


def test_training_images_sharing_a_key_with_a_test_image_are_not_test_rows(tmp_path: Path) -> None:
    """On the real data nine training images share their min/max key with a test image (found by an
    attacker): an honest step on them is not training on the test set, because a key's match is
    verified pixel by pixel before a test row counts. A real test image among them still counts."""
    raw = _real_raw(tmp_path)
    index = ImageIndex(raw)
    train = read_images(raw / "train-images-idx3-ubyte")
    test = read_images(raw / "t10k-images-idx3-ubyte")
    colliding = [11932, 51488, 42540, 54857, 56004, 58762, 5081, 35999, 47716]
    x = (train[colliding].float() / 255 - 0.286) / 0.353
    assert "test" in index.matches(x)  # the keys alone say test
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    _train_step(recorder, net, optimizer, x, torch.zeros(len(colliding), dtype=torch.long))
    assert recorder.observers.test_training.rows_trained == 0
    x = torch.cat([x, (test[2605:2606].float() / 255 - 0.286) / 0.353])
    _train_step(recorder, net, optimizer, x, torch.zeros(len(x), dtype=torch.long))
    assert recorder.observers.test_training.rows_trained == 1


def test_an_erased_row_sharing_another_images_key_is_not_evidence(tiny_dataset: Dataset) -> None:
    """Random erasing may leave a row with the key of another image (found on the real data: a
    training
    row counted as a validation image, a false split violation). A row is evidence that it is an
    image
    only when it is that image under one monotone map of the grey levels (any preprocessing of the
    image alone: affine, decreasing, a gamma curve, half precision, mirrored); a row named by its
    key
    alone is still counted as drawn, loosely."""
    index, _, train = _index(tiny_dataset)
    x = (train[:8].float() / 255 - 0.286) / 0.353
    other = (train[8].float() / 255 - 0.286) / 0.353
    assert index.verified(index.matches(x)["train"], x).positions == list(range(8))
    x[3] = other  # a row that is another image: its key is that image's, and so are its pixels
    low, high = float(x[5].min()), float(x[5].max())
    inside = torch.nonzero((x[5] > low + 0.1) & (x[5] < high - 0.1)).flatten()[:40]
    # an erased box that left the key (its minimum and maximum) as it was
    x[5, inside] = (low + high) / 2
    found = index.matches(x)["train"]
    assert dict(zip(found.positions, found.indices))[5] == [5]  # the key alone still names image 5
    # as if the keys had named 0..7
    keyed = Match("train", list(range(8)), [[i] for i in range(8)], 8)
    kept = index.verified(keyed, x)
    assert kept is not None and kept.positions == [0, 1, 2, 4, 6, 7]
    plain = train[:3].float() / 255
    mirrored = plain.reshape(3, 28, 28).flip(-1).reshape(3, -1)
    for seen in (mirrored.half(), 1 - plain, plain.sqrt(), (plain.bfloat16() - 0.286) / 0.353):
        assert same_image_rows(seen, train[:3]).tolist() == [True] * 3
    assert same_image_rows(x[5:6], train[5:6]).tolist() == [False]
    # Two equal pixels moved apart by 0.4 of a grey level each (an attacker's test images trained
    # on, hidden from a check of equal pixels alone): still the image, within half a grey level of
    # it.
    nudged = plain[:1].clone()
    tied = torch.nonzero(train[0] == train[0][(train[0] > 20) & (train[0] < 235)][0]).flatten()[:2]
    nudged[0, tied[0]] += 0.4 / 255
    nudged[0, tied[1]] -= 0.4 / 255
    assert len(tied) == 2 and same_image_rows(nudged, train[:1]).tolist() == [True]
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    _train_step(recorder, net, optimizer, x, torch.zeros(8, dtype=torch.long))
    assert sorted(torch.nonzero(recorder.observers.draws.stepped_rows).flatten().tolist()) == [
        0,
        1,
        2,
        4,
        5,
        6,
        7,
        8,
    ]
    assert torch.nonzero(
        recorder.observers.draws.stepped_rows & ~recorder.observers.draws.stepped_exact
    ).flatten().tolist() == [5]
    drawn = recorder.shared.train_passes[-1]
    assert (
        torch.nonzero(drawn.drawn & ~drawn.exact).flatten().tolist() == [5]
        and "loose" in drawn.export()
    )


def test_rows_standardized_per_pixel_are_training_images_on_the_real_data(tmp_path: Path) -> None:
    """The lecture's feature normalization, (X - X_train.mean(0)) / X_train.std(0), over preloaded
    tensors and an own mini-batch loop: every batch is recognised from the first, so the epochs
    count."""
    raw = _real_raw(tmp_path)
    torch.manual_seed(0)  # the batches and the model's start, whatever tests ran before this one
    index = ImageIndex(raw)
    recorder = Recorder(index, 10, Serials())
    images = read_images(raw / "train-images-idx3-ubyte").float().div(255)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    trained = order[12000:16000]  # a part of the training split is enough
    mean, std = images[trained].mean(0), images[trained].std(0) + 1e-7
    x = (images - mean) / std
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for epoch in range(2):
        shuffled = trained[torch.randperm(len(trained))]
        for start in range(0, len(shuffled), 64):
            rows = shuffled[start : start + 64]
            _train_step(recorder, net, optimizer, x[rows], torch.zeros(len(rows), dtype=torch.long))
    recorder.export()
    passes = [p for p in recorder.shared.train_passes if p.stepping]
    # an image sharing its zero mask with another is left out
    drawn = [int(p.drawn.sum()) for p in passes]
    assert len(drawn) == 2 and min(drawn) >= 3990
    assert all(sum(p.steps.values()) == 63 for p in passes)
    assert not any(entry.get("unattributed") for entry in recorder.shared.optimizers.values())


def test_test_images_a_wrapper_dataset_slips_into_loader_batches_are_found(
    tiny_dataset: Dataset,
) -> None:
    """The batch a training DataLoader yields is not looked at every time (its sampler says what it
    drew), but a secret one in SPOT_CHECK is, and every one after test images were seen."""
    index, test, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    labels = torch.zeros(8, dtype=torch.long)
    for k in range(100):
        x = torch.cat([train[k * 4 : k * 4 + 4], test[k : k + 4]]).float() / 255
        recorder.observers.loaders.yielded = x  # as the loader's patched __next__ leaves it
        _train_step(recorder, net, optimizer, x, labels)
    # seen within 70 batches: all but (7/8)**70 of the time
    assert 4 * 30 <= recorder.observers.test_training.rows_trained <= 400


def test_per_pixel_rows_read_once_the_map_is_learned_count_their_steps(
    tiny_dataset: Dataset,
) -> None:
    """On data with few zero pixels the per-pixel map needs a few batches to learn; the batches it
    could not read meanwhile are read again once it reads a whole one, and their steps count."""
    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    images = train.float() / 255
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[120:]
    mean, std = images[order].mean(0), images[order].std(0) + 1e-6
    x = (images - mean) / std
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for epoch in range(3):
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            _train_step(recorder, net, optimizer, x[rows], torch.zeros(len(rows), dtype=torch.long))
    recorder.export()
    (entry,) = recorder.shared.optimizers.values()
    assert not entry.get("unattributed") and not recorder.observers.draws.learning.kept
    passes = [p for p in recorder.shared.train_passes if p.stepping]
    assert len(passes) == 3 and [sum(p.steps.values()) for p in passes] == [15, 15, 15]
    # while learning, a batch read in part misses a few rows
    drawn = [int(p.drawn.sum()) for p in passes]
    assert drawn[0] >= 400 and min(drawn[1:]) >= 475


def test_only_rows_a_gradient_reached_trained_the_model(tiny_dataset: Dataset) -> None:
    """A validation pass over preloaded rows that forgot model.eval() and no_grad trains nothing (no
    backward reaches it); two forward calls before one backward both trained."""
    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x = train.float() / 255
    labels = torch.zeros(30, dtype=torch.long)
    for start in range(0, 480, 60):  # two halves, one backward, one step
        optimizer.zero_grad()
        loss = sum(
            torch.nn.functional.cross_entropy(_call(recorder, net, x[s : s + 30]), labels)
            for s in (start, start + 30)
        )
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        recorder.on_step(optimizer, (), {})
    for start in range(480, 600, 40):  # validation, gradients on, training mode, no backward
        _call(recorder, net, x[start : start + 40])
    _train_step(recorder, net, optimizer, x[:30], labels)
    recorder.export()
    trained = [p for p in recorder.shared.train_passes if p.stepping]
    validated = [p for p in recorder.shared.train_passes if not p.stepping]
    assert int(trained[0].drawn.sum()) == 480 and [int(p.drawn.sum()) for p in validated] == [120]
    assert int(recorder.observers.draws.stepped_rows.sum()) == 480


def test_a_step_over_unrecognised_rows_trains_none_of_the_rows_evaluated_before_it(
    tiny_dataset: Dataset,
) -> None:
    """Mixup: the training rows are blends nobody recognises, so the last validation call before the
    next step is the draw that step follows. Under no_grad it cannot have trained anything; with
    gradients on but no backward reaching its output, neither. Validation calls with gradients whose
    backward never came are written out at the end (a final validation pass)."""
    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x = train.float() / 255
    labels = torch.zeros(40, dtype=torch.long)
    for epoch in range(3):
        for start in range(0, 480, 40):
            lam = 0.5
            _train_step(
                recorder,
                net,
                optimizer,
                lam * x[start : start + 40] + (1 - lam) * x[start : start + 40].flip(0),
                labels,
            )
        if epoch == 0:
            with torch.no_grad():
                _call(recorder, net, x[480:])
        else:
            _call(recorder, net, x[480:])  # forgot no_grad
    recorder.export()
    assert int(recorder.observers.draws.stepped_rows.sum()) == 0
    assert [int(p.drawn.sum()) for p in recorder.shared.train_passes if not p.stepping] == [
        120,
        120,
        120,
    ]


def test_a_test_time_flip_is_not_a_second_prediction(tiny_dataset: Dataset) -> None:
    """Test-time augmentation: each test batch and its mirror image through the model, the outputs
    averaged. The mirrored calls are not the test pass; the upright ones make one complete pass."""
    index, test, _ = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().eval()
    x = test.float() / 255
    with torch.no_grad():
        for start in range(0, 200, 50):
            batch = x[start : start + 50]
            _call(recorder, net, batch)
            _call(recorder, net, batch.reshape(-1, 28, 28).flip(-1).reshape(-1, 784))
    assert [(p.complete, p.rows) for p in recorder.observers.tests.test_passes] == [(True, 200)]


def _training(
    dataset: Dataset,
) -> tuple[Recorder, Serials, torch.nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """A recorder over the tiny data, a net in training mode, its SGD, the training rows and 40
    labels."""
    index, _, train = _index(dataset)
    serials = Serials()
    net = _Net().train()
    return (
        Recorder(index, 10, serials),
        serials,
        net,
        torch.optim.SGD(net.parameters(), lr=0.01),
        train.float() / 255,
        torch.zeros(40, dtype=torch.long),
    )


def test_steps_beside_the_loader_batches_are_counted_apart(tiny_dataset: Dataset) -> None:
    """After each step on a DataLoader batch, one more on images fed beside it: those steps carry no
    epoch of the loader, and the judge leaves the epochs undecided rather than count the loader
    alone."""
    from grader.judge.run_facts import training

    recorder, serials, net, optimizer, x, labels = _training(tiny_dataset)
    for epoch in range(2):
        track = recorder.start_loader_pass(600)
        for start in range(0, 480, 40):
            batch = x[start : start + 40]
            recorder.loader_batch(track, list(range(start, start + 40)), (batch, labels))
            _train_step(recorder, net, optimizer, batch, labels)
            _train_step(
                recorder, net, optimizer, x[(start + 200) % 560 : (start + 200) % 560 + 40], labels
            )
        track.complete = True
    (entry,) = recorder.shared.optimizers.values()
    assert entry["steps"] == 48 and entry["beside"] == 24 and not entry.get("unattributed")
    record = {
        **recorder.export(),
        "model": {"param_serials": [serials.of(p) for p in net.parameters()]},
    }
    facts = training(parse(record))
    assert facts.beside_steps == 24 and facts.pass_count == 2


def test_a_blend_sharing_another_images_key_is_not_a_step_beside_the_loader(
    tiny_dataset: Dataset,
) -> None:
    """Mixup over the loader's batches: a blended row may come to share the key of an image the
    loader
    did not yield (its pixels are not that image's), and it is the only row read. That is no
    evidence
    of images fed beside the batch; the image itself in that place is."""
    from grader.judge.run_facts import training

    recorder, serials, net, optimizer, x, labels = _training(tiny_dataset)
    outside = x[599].clone()  # never yielded; its key kept, its middle grey levels reversed
    middle = (outside > outside.min()) & (outside < outside.max())
    lo, hi = float(outside[middle].min()), float(outside[middle].max())
    outside[middle] = lo + hi - outside[middle]
    track = recorder.start_loader_pass(600)
    for start in range(0, 480, 40):
        batch = x[start : start + 40]
        recorder.loader_batch(track, list(range(start, start + 40)), (batch, labels))
        blended = 0.5 * batch + 0.5 * batch.flip(0)
        blended[0] = outside if start < 240 else x[599]
        _train_step(recorder, net, optimizer, blended, labels)
    track.complete = True
    (entry,) = recorder.shared.optimizers.values()
    assert entry["steps"] == 12 and entry["beside"] == 6  # the six with the image itself
    facts = training(
        parse(
            {
                **recorder.export(),
                "model": {"param_serials": [serials.of(p) for p in net.parameters()]},
            }
        )
    )
    assert facts.beside_steps == 6


def test_a_module_called_before_the_model_on_the_same_rows_is_one_draw(
    tiny_dataset: Dataset,
) -> None:
    """An honest loop over preloaded tensors that flattens each batch with an `nn.Flatten()` (or
    normalizes it with a module) before the model: both calls see the batch's training images, and
    one step follows both. That is one draw per step, so the epochs are the passes, not the
    steps."""
    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net, flatten = _Net().train(), torch.nn.Flatten()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, labels = train.float().reshape(-1, 28, 28) / 255, torch.zeros(32, dtype=torch.long)
    for epoch in range(3):
        for start in range(0, 480, 32):
            optimizer.zero_grad()
            flat = _call(recorder, flatten, x[start : start + 32])
            torch.nn.functional.cross_entropy(_call(recorder, net, flat), labels).backward()
            optimizer.step()
            recorder.on_step(optimizer, (), {})
    recorder.export()
    trained = [p for p in recorder.shared.train_passes if p.stepping]
    assert [int(p.drawn.sum()) for p in trained] == [480, 480, 480]
    assert all(sum(p.steps.values()) == 15 for p in trained)


def test_a_model_returning_probabilities_and_logits_is_trained_through_either(
    tiny_dataset: Dataset,
) -> None:
    """`return F.softmax(z, 1), z` with the loss on the logits: the gradient reaches the second
    tensor of the output, and the rows trained the model (no step is left unattributed)."""

    class Both(_Net):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            z = super().forward(x)
            return torch.softmax(z, 1), z

    index, test, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = Both().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)
    for start in range(0, 480, 40):
        optimizer.zero_grad()
        recorder.before_call(net, (x[start : start + 40],))
        output = net(x[start : start + 40])
        recorder.after_call(net, (x[start : start + 40],), output)
        torch.nn.functional.cross_entropy(output[1], labels).backward()
        optimizer.step()
        recorder.on_step(optimizer, (), {})
    (entry,) = recorder.shared.optimizers.values()
    assert not entry.get("unattributed") and int(recorder.observers.draws.stepped_rows.sum()) == 480
    # test rows trained through the logits are seen too
    batch = torch.cat([x[:20], test[:20].float() / 255])
    optimizer.zero_grad()
    recorder.before_call(net, (batch,))
    output = net(batch)
    recorder.after_call(net, (batch,), output)
    torch.nn.functional.cross_entropy(output[1], labels).backward()
    optimizer.step()
    recorder.on_step(optimizer, (), {})
    assert recorder.observers.test_training.rows_trained == 20


def test_steps_after_mirrored_test_batches_count_like_upright_ones(tiny_dataset: Dataset) -> None:
    """Training on the test images flipped left to right, a batch at a time: each step follows test
    images with gradients in training mode, as it would upright (what the trained-on-test flag
    counts)."""
    index, test, _ = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, labels = test.float() / 255, torch.zeros(20, dtype=torch.long)
    for start in range(0, 200, 20):
        _train_step(
            recorder,
            net,
            optimizer,
            x[start : start + 20].reshape(-1, 28, 28).flip(-1).reshape(-1, 784),
            labels,
        )
    assert (
        recorder.observers.test_training.steps == 10
        and recorder.observers.test_training.rows_trained == 200
    )


def test_zip_of_the_train_and_valid_loaders_trains_on_the_train_loader(
    tiny_dataset: Dataset,
) -> None:
    """`for (x, y), (xv, yv) in zip(train_loader, valid_loader)`: both yield before each step; the
    step trained on the train loader's batch, and the validation batches (evaluated under no_grad)
    trained nothing, whichever loader yielded last."""
    from grader.judge.run_facts import training

    recorder, serials, net, optimizer, x, labels = _training(tiny_dataset)
    for epoch in range(2):
        train_pass, valid_pass = recorder.start_loader_pass(600), recorder.start_loader_pass(600)
        for k, start in enumerate(range(0, 480, 40)):
            batch, valid = x[start : start + 40], x[480 + 10 * k : 490 + 10 * k]
            recorder.loader_batch(train_pass, list(range(start, start + 40)), (batch, labels))
            recorder.loader_batch(
                valid_pass, list(range(480 + 10 * k, 490 + 10 * k)), (valid, labels[:10])
            )
            _train_step(recorder, net, optimizer, batch.reshape(-1, 28, 28), labels)
            with torch.no_grad():
                _call(recorder, net, valid)
        train_pass.complete = valid_pass.complete = True
    (entry,) = recorder.shared.optimizers.values()
    assert not entry.get("beside") and not entry.get("unattributed")
    facts = training(
        parse(
            {
                **recorder.export(),
                "model": {"param_serials": [serials.of(p) for p in net.parameters()]},
            }
        )
    )
    assert facts.pass_count == 2 and facts.trained.bit_count() == 480 and facts.beside_steps == 0


def test_a_second_loader_yielding_beside_the_extra_steps_hides_nothing(
    tiny_dataset: Dataset,
) -> None:
    """After each step on the loader's batch, one more on images drawn from the whole file, with a
    one-image DataLoader over the training set yielding just before it so that 'a loader yielded'
    holds: the step trained mostly on rows no loader named, so it is still a step beside them."""
    from grader.judge.run_facts import training

    recorder, serials, net, optimizer, x, labels = _training(tiny_dataset)
    for epoch in range(2):
        track, dummy = recorder.start_loader_pass(600), recorder.start_loader_pass(600)
        for start in range(0, 480, 40):
            batch = x[start : start + 40]
            recorder.loader_batch(track, list(range(start, start + 40)), (batch, labels))
            _train_step(recorder, net, optimizer, batch, labels)
            recorder.loader_batch(dummy, [599], (x[599:600], labels[:1]))
            _train_step(
                recorder, net, optimizer, x[(start + 200) % 560 : (start + 200) % 560 + 40], labels
            )
        track.complete = True
    (entry,) = recorder.shared.optimizers.values()
    assert entry["steps"] == 48 and entry["beside"] == 24
    facts = training(
        parse(
            {
                **recorder.export(),
                "model": {"param_serials": [serials.of(p) for p in net.parameters()]},
            }
        )
    )
    assert facts.beside_steps == 24
    # Graded through a fresh model that loaded those weights: the steps that made them are as
    # doubtful.
    recorder.on_capture(net)
    fresh = _Net()
    fresh.load_state_dict(net.state_dict())
    recorder.on_load(fresh)
    facts = training(
        parse(
            {
                **recorder.export(),
                "model": {"param_serials": [serials.of(p) for p in fresh.parameters()]},
            }
        )
    )
    assert facts.lineage == "loaded" and facts.beside_steps == 24


def test_a_step_on_a_yielded_batch_after_evaluating_the_training_rows_trains_on_its_loader(
    tiny_dataset: Dataset,
) -> None:
    """Between epochs the notebook evaluates every training row (a second loader over the same
    indices, under no_grad), then the next epoch's first batch is fed to the model as its loader
    yielded it (not read, to keep the loop quiet): the step trained on that loader, though its
    rows were all just evaluated."""
    from grader.judge.run_facts import training

    index, _, train = _index(tiny_dataset)
    serials = Serials()
    recorder = Recorder(index, 10, serials)
    # no spot check: the batch is not read
    recorder.observers.loaders._spot.randrange = lambda n: 1  # type: ignore[method-assign]
    net = _Net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)
    for epoch in range(3):
        track = recorder.start_loader_pass(600)
        for start in range(0, 480, 40):
            batch = x[start : start + 40]
            recorder.loader_batch(track, list(range(start, start + 40)), (batch, labels))
            _train_step(recorder, net, optimizer, batch, labels)
        track.complete = True
        evaluation = recorder.start_loader_pass(600)
        with torch.no_grad():
            for start in range(0, 480, 240):
                rows = x[start : start + 240]
                recorder.loader_batch(evaluation, list(range(start, start + 240)), (rows, labels))
                _call(recorder, net, rows.clone())
        evaluation.complete = True
    (entry,) = recorder.shared.optimizers.values()
    assert entry["steps"] == 36 and not entry.get("unattributed") and not entry.get("beside")
    facts = training(
        parse(
            {
                **recorder.export(),
                "model": {"param_serials": [serials.of(p) for p in net.parameters()]},
            }
        )
    )
    assert facts.pass_count == 3 and facts.trained.bit_count() == 480


def test_the_probe_changes_nothing_a_student_sees_under_their_modes(tmp_path: Path) -> None:
    """Validation and test in ``inference_mode`` (the probe's bookkeeping made there used to crash
    the
    next epoch), under bfloat16 autocast, float64 as the default dtype and a default device: with
    the
    probe installed the run prints the same, byte for byte, and the probe fails nowhere."""
    import json
    import subprocess
    import sys

    from tinydata import make_tiny_fashion_mnist

    root = make_tiny_fashion_mnist(tmp_path / "data", noise=0.25)
    script = Path(__file__).parent / "scripts" / "student_modes.py"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run(
            [sys.executable, str(script), str(root), *extra],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=600,
        )
        for extra in ([], [str(tmp_path / "record.json")])
    ]
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    bare, probed = (run.stdout for run in runs)
    assert bare == probed and bare.count("Test Accuracy") == 4
    seen = json.loads(runs[1].stderr.strip().splitlines()[-1])
    # (a trace's own
    assert seen["faults"] == [] and [p for p in seen["tests"] if p[1]] == [[200, True]] * 4
    # runs on its example batch are partial passes)


def test_a_failure_of_the_probe_never_reaches_the_student_and_sends_the_result_to_review() -> None:
    from grader.judge.tamper import probe_faults
    from grader.probe.guard import FAULTS, Faults, guarded

    def broken(x: int) -> int:
        raise IndexError(f"probe bug {x}")

    assert guarded(broken, fallback=-1)(3) == -1  # the student's code goes on
    assert any("broken" in line and "IndexError: probe bug 3" in line for line in FAULTS.export())
    faults = Faults()
    faults.record("Recorder.before_call", IndexError("x"))
    faults.record("Recorder.before_call", IndexError("y"))
    (line,) = faults.export()
    assert line == "Recorder.before_call: IndexError: x (2 times)"
    why = probe_faults(parse({"probe_faults": [line]}))
    assert why is not None and "probe failed" in why and line in why
    assert probe_faults(parse({"probe_faults": []})) is None and probe_faults(None) is None


def test_the_model_is_found_beside_its_torchscript_trace() -> None:
    """``scripted = torch.jit.trace(model, x)`` shares the model's weights: the model itself (which
    torch.export can capture) is the owner, not the trace."""
    from grader.probe.model import smallest_owner

    serials = Serials()
    net = _Net().eval()
    scripted = torch.jit.trace(net, torch.zeros(2, 784))
    owned = {serials.of(p) for p in scripted.parameters()}
    assert owned == {serials.of(p) for p in net.parameters()}
    assert smallest_owner(owned, serials, [scripted, net]) is net
    assert smallest_owner(owned, serials, [scripted]) is scripted


def test_the_notebooks_own_evaluation_is_captured_without_the_validation_pass_before_it(
    tiny_dataset: Dataset,
) -> None:
    """Per-pixel standardization inside a ``transforms.Lambda``: no content key names the rows, so
    the
    notebook's last evaluation of the final model is captured. Its validation pass came just before
    (12,000 rows before 10,000 on the real data: over the capture's cap); only the last batches
    covering a test set's worth of rows are the test pass."""
    from grader.probe import runtime
    from grader.probe.passes import Evaluation

    state = runtime._State({"num_classes": 10, "data_root": str(tiny_dataset.raw.parent.parent)})
    net = _Net().eval()
    evaluation = state.recorder.observers.evaluations.evaluation = Evaluation(
        state.recorder.shared.module_serial(net), 0
    )
    for rows in (64, 64, 64, 56, 64, 64, 64, 8):  # 248 validation-like rows, then a 200-row pass
        evaluation.add(torch.rand(rows, 784), torch.zeros(rows, dtype=torch.int8), "float32")
    captured = runtime._own_evaluation(state, net)
    assert [x.shape[0] for x in captured.inputs] == [64, 64, 64, 8]
    assert captured.row_classes[0].shape[0] == 200 and not captured.by_probe


def test_any_exit_of_the_probe_but_a_return_is_a_fault_and_an_interrupt_still_stops() -> None:
    """A student's BaseException raised in a callback the probe reads (``param_groups[0].get``)
    would
    skip the rest of the probe's step: it is a fault, not the student's exception; the grader's own
    interrupt at the time limit still goes through."""
    import pytest

    from grader.probe.guard import FAULTS, guarded

    class Hide(BaseException):
        pass

    def hidden() -> None:
        raise Hide("hidden")

    def interrupted() -> None:
        raise KeyboardInterrupt

    assert guarded(hidden)() is None
    assert any("hidden" in line and "Hide" in line for line in FAULTS.export())
    with pytest.raises(KeyboardInterrupt):
        guarded(interrupted)()


def test_a_step_seen_to_begin_and_never_to_end_is_lost(tiny_dataset: Dataset) -> None:
    """An optimizer's own post-hook runs before the probe's and can raise, so the probe never sees
    the
    step end: the global pre-hook saw it begin. A wrapper stepping an inner optimizer is no loss."""
    index, _, _ = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    outer, inner = (torch.optim.SGD(_Net().parameters(), lr=0.1) for _ in range(2))
    recorder.before_step(outer, (), {})
    recorder.before_step(inner, (), {})
    recorder.on_step(inner, (), {})
    recorder.on_step(outer, (), {})
    assert recorder.export()["lost_steps"] == 0
    recorder.before_step(outer, (), {})  # its post-hook never came
    recorder.before_step(outer, (), {})
    recorder.on_step(outer, (), {})
    assert recorder.export()["lost_steps"] == 1


def test_mirror_images_of_the_whole_test_set_are_seen_per_model_and_step(
    tiny_dataset: Dataset,
) -> None:
    """Test-time augmentation: the model evaluates each test batch, then its mirror images; the
    flipped rows are no prediction of the pass, but the capture says the pass had the mirror view
    (at
    the same weights). A whole pass over mirror images after the test pass is no such view."""
    index, test, _ = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net()
    x = test.float().div(255)
    mirror = x.reshape(-1, 28, 28).flip(-1).reshape(-1, 784)
    with torch.no_grad():
        for start in (0, 100):  # each batch, then its mirror images
            _call(recorder, net, x[start : start + 100])
            assert not recorder.observers.tests.mirrored_all(recorder.shared.module_serial(net), 0)
            _call(recorder, net, mirror[start : start + 100])
    (test_pass,) = recorder.observers.tests.test_passes
    assert test_pass.complete and recorder.observers.tests.mirrored_all(
        test_pass.predictor[0], test_pass.end_step
    )
    # a separate pass over the mirror images: a robustness check
    check = Recorder(index, 10, Serials())
    with torch.no_grad():
        for rows in (x, mirror):
            _call(check, net, rows[:100])
            _call(check, net, rows[100:])
    assert not check.observers.tests.mirrored_all(
        check.observers.tests.test_passes[0].predictor[0], 0
    )


def test_a_loaded_torchscript_model_is_captured_through_a_python_twin() -> None:
    """``torch.jit.load`` of a saved trace shares no weights with a Python module: a copy of the
    notebook's own model class with the script's weights stands in when it gives the same scores."""
    import io

    from grader.probe.capture import python_twin

    net = _Net().eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.zeros(2, 784)), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    sample = torch.rand(2, 784)
    twin = python_twin(loaded, sample)
    assert twin is not None and not isinstance(twin, torch.jit.ScriptModule) and twin is not net
    assert torch.equal(twin(sample), loaded(sample))


def _hooked_step(
    recorder: Recorder,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> None:
    """One training step as the probe sees it: the global pre-hook, the update, torch's
    ``_optimizer_step_code`` right after it (the probe's patch), the global post-hook."""
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(_call(recorder, net, x), y).backward()
    recorder.before_step(optimizer, (), {})
    optimizer.step()
    recorder.after_update(optimizer)
    recorder.on_step(optimizer, (), {})


def _moved(recorder: Recorder, serials: Serials, net: torch.nn.Module) -> int:
    from grader.judge.run_facts import training

    record = {
        **recorder.export(),
        "model": {
            "param_serials": [serials.of(p) for p in net.parameters()],
            "explained": recorder.observers.weights.continuity.explains(list(net.parameters())),
        },
    }
    facts = training(parse(record))
    return facts.moved + facts.foreign


def test_weights_changed_outside_the_counted_steps_are_counted(tiny_dataset: Dataset) -> None:
    """Updates the step hooks do not see: `step.__wrapped__` after the loop (more epochs), and a
    hand-written `p.data -= lr * p.grad` after every counted step. Both change the weights between
    (or after) the steps the probe counted, however they were made."""
    index, _, train = _index(tiny_dataset)
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)
    for hidden in ("wrapped", "by hand", "transposed"):
        serials = Serials()
        recorder = Recorder(index, 10, serials)
        torch.manual_seed(0)
        net = _Net().train()
        # the weights laid out transposed: ``reshape`` copies, a view would not see
        if hidden == "transposed":
            for layer in (net.fc1, net.fc2):
                layer.weight.data = layer.weight.data.t().contiguous().t()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        for start in range(0, 480, 40):
            _hooked_step(recorder, net, optimizer, x[start : start + 40], labels)
            if hidden == "by hand":
                with torch.no_grad():
                    for p in net.parameters():
                        p.data -= 1e-3 * p.grad.sign()
        if hidden in ("wrapped", "transposed"):
            for start in range(0, 480, 40):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(net(x[start : start + 40]), labels).backward()
                if hidden == "wrapped":
                    type(optimizer).step.__wrapped__(optimizer)  # type: ignore[attr-defined]
                else:
                    with torch.no_grad():
                        for layer in (net.fc1, net.fc2):
                            layer.weight -= 1e-3 * layer.weight.grad.sign()  # type: ignore[operator, union-attr]
        assert _moved(recorder, serials, net) == (12 if hidden == "by hand" else 1), hidden


def test_honest_changes_of_the_weights_are_explained(tiny_dataset: Dataset) -> None:
    """A perturbation undone before the next step (SAM), the best checkpoint loaded back after more
    training, a new optimizer each epoch, gradient clipping and weight decay, and the model
    converted
    to half precision after training: no change outside the counted steps."""
    index, _, train = _index(tiny_dataset)
    serials = Serials()
    recorder = Recorder(index, 10, serials)
    net = _Net().train()
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)
    best = None
    for epoch in range(3):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
        for start in range(0, 480, 40):
            with torch.no_grad():  # SAM's first step: climb, then come back before the real step
                saved = [p.detach().clone() for p in net.parameters()]
                for p in net.parameters():
                    p.add_(0.05 * torch.randn_like(p))
                for p, s in zip(net.parameters(), saved):
                    p.data = s
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(
                _call(recorder, net, x[start : start + 40]), labels
            ).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            recorder.before_step(optimizer, (), {})
            optimizer.step()
            recorder.after_update(optimizer)
            recorder.on_step(optimizer, (), {})
        if epoch == 1:
            state = net.state_dict()
            recorder.on_capture(net)
            best = {k: v.clone() for k, v in state.items()}
    assert best is not None
    net.load_state_dict(best)
    recorder.on_load(net)
    net.half()
    assert _moved(recorder, serials, net) == 0


def test_weights_from_beyond_the_runs_states_are_foreign(tiny_dataset: Dataset) -> None:
    """The best checkpoint and an EMA of the run's states (started before the first step), loaded
    into the model or graded as they are, lie within the hull of what the counted steps made; a copy
    trained further by hand through ``autograd.grad`` (no optimizer, no gradient hook), loaded back
    or
    graded as it is, does not (the attacker's 30 epochs graded as 10). Before any step nothing is
    decided; a parameter of a size no stepped one has is explained by nothing."""
    from grader.probe.continuity import Continuity

    assert Continuity().explains([torch.nn.Parameter(torch.randn(3))]) is None
    index, _, train = _index(tiny_dataset)
    x, labels = train.float() / 255, torch.arange(40) % 10
    for how in ("best", "ema", "further", "ema graded", "further graded"):
        serials = Serials()
        recorder = Recorder(index, 10, serials)
        torch.manual_seed(0)
        net = _Net().train()
        ema = copy.deepcopy(net)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        best: dict[str, torch.Tensor] = {}
        for epoch in range(3):
            for start in range(0, 480, 40):
                _hooked_step(recorder, net, optimizer, x[start : start + 40], labels)
                with torch.no_grad():
                    for e, q in zip(ema.parameters(), net.parameters()):
                        e.mul_(0.9).add_(q, alpha=0.1)
            if epoch == 1:
                best = {k: v.clone() for k, v in net.state_dict().items()}
                recorder.on_capture(net)
        shadow = copy.deepcopy(net)
        for _ in range(2):
            for start in range(0, 480, 40):
                loss = torch.nn.functional.cross_entropy(shadow(x[start : start + 40]), labels)
                grads = torch.autograd.grad(loss, list(shadow.parameters()))
                with torch.no_grad():
                    for q, g in zip(shadow.parameters(), grads):
                        q -= 0.01 * g.sign()
        graded = {"ema graded": ema, "further graded": shadow}.get(how, net)
        if graded is net:
            net.load_state_dict(
                {"best": best, "ema": ema.state_dict(), "further": shadow.state_dict()}[how]
            )
            recorder.on_load(net)
        assert _moved(recorder, serials, graded) == (1 if "further" in how else 0), how
    assert (
        recorder.observers.weights.continuity.explains([torch.nn.Parameter(torch.randn(7, 3))])
        is False
    )


def test_a_gone_candidates_checkpoint_is_still_a_state_the_run_made() -> None:
    """A sweep: each candidate trained by its own optimizer, the first gone (its name reused) before
    its best checkpoint is loaded into a fresh model (the rules fixture HW3_candidates_best.ipynb
    went
    to review when the hull of a collected candidate went with it); the fresh model's own init is
    not."""
    from grader.probe.continuity import Continuity

    continuity = Continuity()
    x, y = torch.randn(32, 784), torch.randint(0, 10, (32,))
    saved: dict[str, torch.Tensor] = {}
    for serial, lr in ((1, 0.1), (2, 0.01)):
        torch.manual_seed(serial)
        candidate = _Net()
        params = list(candidate.parameters())
        optimizer = torch.optim.SGD(params, lr=lr)
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(candidate(x), y).backward()
            continuity.check(serial, params)
            optimizer.step()
            continuity.keep(serial, params)
        saved = saved or {k: v.clone() for k, v in candidate.state_dict().items()}
        del candidate, params, optimizer
        gc.collect()
    torch.manual_seed(3)
    model = _Net()
    assert continuity.explains(list(model.parameters())) is False
    model.load_state_dict(saved)
    assert continuity.explains(list(model.parameters())) is True


def test_weights_written_back_within_the_runs_states_are_explained(tiny_dataset: Dataset) -> None:
    """Written back without a load: the best epoch's parameters copied in with ``copy_``, a Polyak
    average of the last epochs through ``vector_to_parameters``, Lookahead's slow weights copied in
    every 5 steps by a plain class (a writer's honest notebooks, once sent to review): each is a
    state
    the counted steps made, or an average of such states, so nothing changed outside them."""
    index, _, train = _index(tiny_dataset)
    x, labels = train.float() / 255, torch.arange(40) % 10
    for how in ("copy", "polyak", "lookahead"):
        serials = Serials()
        recorder = Recorder(index, 10, serials)
        torch.manual_seed(0)
        net = _Net().train()
        params = list(net.parameters())
        optimizer = torch.optim.Adam(params, lr=1e-2)
        slow = [q.detach().clone() for q in params]
        states: list[torch.Tensor] = []
        for epoch in range(4):
            for k, start in enumerate(range(0, 480, 40)):
                _hooked_step(recorder, net, optimizer, x[start : start + 40], labels)
                if how == "lookahead" and k % 5 == 4:
                    with torch.no_grad():
                        for s_, q in zip(slow, params):
                            s_.add_(q - s_, alpha=0.5)
                            q.copy_(s_)
            states.append(torch.nn.utils.parameters_to_vector(params).detach().clone())
        with torch.no_grad():
            if how == "copy":
                for q, v in zip(params, [t.clone() for t in _unflatten(states[1], params)]):
                    q.copy_(v)
            elif how == "polyak":
                torch.nn.utils.vector_to_parameters(torch.stack(states[-3:]).mean(0), params)
        assert _moved(recorder, serials, net) == 0, how


def _unflatten(vector: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    parts, at = [], 0
    for q in like:
        parts.append(vector[at : at + q.numel()].view_as(q))
        at += q.numel()
    return parts


def test_continuity_follows_parameters_across_optimizers_and_storage() -> None:
    """A new optimizer over the same parameters each epoch shares their windows (a change between
    the two is still seen); parameters moved into one flat vector (``vector_to_parameters``: views
    at
    an offset) and back compare where their values now live, equal or not."""
    from grader.probe.continuity import Continuity

    net = _Net()
    params = list(net.parameters())
    x, y = torch.randn(16, 784), torch.zeros(16, dtype=torch.long)

    def step(continuity: Continuity, optimizer: torch.optim.Optimizer, serial: int) -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        continuity.check(serial, params)
        optimizer.step()
        continuity.keep(serial, params)

    continuity = Continuity()
    for epoch in range(3):  # a new optimizer each epoch
        optimizer = torch.optim.SGD(params, lr=0.1)
        for _ in range(3):
            step(continuity, optimizer, epoch)
    flat = torch.nn.utils.parameters_to_vector(params).clone()
    torch.nn.utils.vector_to_parameters(flat, params)  # every parameter now a view into one vector
    assert continuity.export().between == {} and not continuity.export().after_last_step
    optimizer = torch.optim.SGD(params, lr=0.1)
    step(continuity, optimizer, 3)
    # same values
    torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(params).clone(), params)
    assert not continuity.export().after_last_step
    with torch.no_grad():
        params[2].add_(0.01)  # between this optimizer's last step and the next one's first
    step(continuity, torch.optim.SGD(params, lr=0.1), 4)
    moved = continuity.export()
    assert moved.between == {4: 1} and not moved.after_last_step


def test_the_module_that_predicted_is_the_graded_model_among_equal_owners() -> None:
    """`eval_net = nn.Sequential(model.fc1, ..., model.fc3)` holds exactly the trained model's
    parameters: of the two, the one that made the graded predictions is the graded model, whichever
    the garbage collector lists first (on the real data it listed the other: a capture refused); a
    TorchScript module that made them still yields to the Python model sharing its weights."""
    from grader.probe import model as models

    net = _Net()
    eval_net = torch.nn.Sequential(torch.nn.Flatten(), net.fc1, torch.nn.ReLU(), net.fc2)
    serials = Serials()
    owned = models.param_serials(net, serials)
    for order in ([net, eval_net], [eval_net, net]):
        assert models.smallest_owner(owned, serials, order, prefer=[eval_net]) is eval_net
        assert models.smallest_owner(owned, serials, order, prefer=[net]) is net
    # shares the weights; it made the predictions, but cannot be exported
    script = torch.jit.script(net)
    assert models.smallest_owner(owned, serials, [script, net], prefer=[script]) is net


def test_hooks_of_the_optimizers_own_and_a_coarse_parameter_hide_no_change(
    tiny_dataset: Dataset,
) -> None:
    """An optimizer's own post-hook runs before the probe's global one, and its own pre-hook after:
    a change made in either is not taken for the step's (the values are kept right after the update,
    in torch's ``_optimizer_step_code``; own pre-hooks count as a change). A bfloat16 parameter in
    the set loosens nothing for the float32 ones (each value is measured in its own dtype's
    rounding)."""
    index, _, train = _index(tiny_dataset)
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)

    def hidden(*_: Any) -> None:
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.99)

    for how in ("post-hook", "pre-hook", "bfloat16"):
        serials = Serials()
        recorder = Recorder(index, 10, serials)
        torch.manual_seed(0)
        net = _Net().train()
        extra = (
            [torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))] if how == "bfloat16" else []
        )
        optimizer = torch.optim.SGD(list(net.parameters()) + extra, lr=0.01)
        optimizer._optimizer_step_code = lambda: recorder.after_update(optimizer)  # type: ignore[method-assign]
        if how == "post-hook":
            optimizer.register_step_post_hook(hidden)
        elif how == "pre-hook":
            optimizer.register_step_pre_hook(hidden)
        for start in range(0, 200, 40):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(
                _call(recorder, net, x[start : start + 40]), labels
            ).backward()
            recorder.before_step(optimizer, (), {})
            optimizer.step()
            recorder.on_step(optimizer, (), {})
            if how == "bfloat16":
                hidden()
        assert _moved(recorder, serials, net) >= 4, how


def test_training_before_the_first_counted_step_is_a_change(tiny_dataset: Dataset) -> None:
    """Ten epochs trained by hand through `F.linear` before the optimizer's first step (no module
    call sees them), by ``backward()`` or by ``torch.autograd.grad`` (nothing accumulated into
    ``.grad``): the first gradient computed for a parameter fixed its initial values, and the first
    counted step finds them changed. An init after the parameters were made (before any gradient)
    changes nothing, and once a counted step covers a parameter its first-gradient hook is gone."""
    index, _, train = _index(tiny_dataset)
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)
    for hidden in ("backward", "autograd.grad", ""):
        serials = Serials()
        recorder = Recorder(index, 10, serials)
        net = _Net().train()
        # what the global parameter-registration hook does as the model is built
        for p in net.parameters():
            recorder.on_parameter(net, "", p)
        with torch.no_grad():
            torch.nn.init.kaiming_normal_(net.fc1.weight)
        if hidden:
            for _ in range(10):
                out = torch.nn.functional.linear(
                    torch.relu(torch.nn.functional.linear(x[:480], net.fc1.weight, net.fc1.bias)),
                    net.fc2.weight,
                    net.fc2.bias,
                )
                loss = torch.nn.functional.cross_entropy(out, torch.zeros(480, dtype=torch.long))
                if hidden == "backward":
                    loss.backward()
                    grads = [p.grad for p in net.parameters()]
                else:  # computes gradients without accumulating them into .grad
                    grads = list(
                        torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
                    )
                with torch.no_grad():
                    for p, g in zip(net.parameters(), grads):
                        if g is not None:
                            p -= 0.1 * g
                        p.grad = None
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        for start in range(0, 480, 40):
            _hooked_step(recorder, net, optimizer, x[start : start + 40], labels)
        assert _moved(recorder, serials, net) == (1 if hidden else 0), hidden
        assert not recorder.observers.weights._first_grads


def test_a_load_or_an_init_before_or_between_counted_steps_explains_the_change(
    tiny_dataset: Dataset,
) -> None:
    """A sanity forward and backward, then a checkpoint loaded, or a ``torch.nn.init`` chosen
    afterwards (on the parameter or its ``.data``), then training: the load or the init explains the
    weights' change (as a load does between steps). A change by hand does not, nor an init after
    counted steps (a range test's steps reset by ``reset_parameters()`` would still count as
    epochs)."""
    from types import SimpleNamespace

    from grader.probe import runtime
    from grader.probe.patches import Patches

    index, _, train = _index(tiny_dataset)
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)
    # after steps, an init is no load
    for how in ("load", "init", "reset after a range test", "by hand"):
        serials = Serials()
        recorder = Recorder(index, 10, serials)
        net, other = _Net().train(), _Net()
        for p in net.parameters():
            recorder.on_parameter(net, "", p)
        torch.nn.functional.cross_entropy(_call(recorder, net, x[:40]), labels).backward()
        patches = Patches()
        # as the probe installs it
        runtime._patch_inits(SimpleNamespace(recorder=recorder, patches=patches))
        try:
            if how == "load":
                net.load_state_dict(other.state_dict())
                recorder.on_load(net)
            elif how == "init":
                torch.nn.init.kaiming_normal_(net.fc1.weight.data)
                with torch.no_grad():
                    torch.nn.init.zeros_(net.fc1.bias)
            elif how == "by hand":
                with torch.no_grad():
                    net.fc1.weight.mul_(0.5)
            else:
                finder = torch.optim.SGD(net.parameters(), lr=0.01)
                for start in range(0, 120, 40):
                    _hooked_step(recorder, net, finder, x[start : start + 40], labels)
                net.fc1.reset_parameters()
                net.fc2.reset_parameters()
        finally:
            patches.undo()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        for start in range(0, 480, 40):
            _hooked_step(recorder, net, optimizer, x[start : start + 40], labels)
        assert _moved(recorder, serials, net) == (how in ("by hand", "reset after a range test")), (
            how
        )


def test_updates_beyond_one_a_counted_step_are_changes(tiny_dataset: Dataset) -> None:
    """An ``Adam`` subclass whose ``step()`` runs ``super().step()`` twice (the second on a gradient
    of other rows) makes two updates in one counted step; one ``super().step()`` is one update, as
    is a plain ``Adam``; ``step.__wrapped__`` (no step hook at all) is an update outside any."""
    from types import SimpleNamespace

    from grader.probe import runtime

    index, _, train = _index(tiny_dataset)
    x, labels = train.float() / 255, torch.zeros(40, dtype=torch.long)
    for how, expected in (("plain", 0), ("super once", 0), ("super twice", 12), ("wrapped", 12)):
        serials = Serials()
        recorder = Recorder(index, 10, serials)
        state = SimpleNamespace(recorder=recorder, updates={})
        saved = vars(torch.optim.Adam)["step"]  # hooked by torch if an earlier test made an Adam
        torch.optim.Adam.step = saved.__wrapped__ if getattr(saved, "hooked", False) else saved
        steps = {
            cls: vars(cls)["step"]
            for cls in vars(torch.optim).values()
            if isinstance(cls, type)
            and issubclass(cls, torch.optim.Optimizer)
            and "step" in vars(cls)
        }
        runtime._count_updates(state)  # as the probe installs it, before any optimizer is made
        try:

            class Once(torch.optim.Adam):
                def step(self, closure: Any = None) -> Any:
                    return super().step(closure)

            class Twice(torch.optim.Adam):
                def step(self, closure: Any = None) -> Any:
                    super().step(closure)
                    return super().step(closure)

            net = _Net().train()
            kind = {"super once": Once, "super twice": Twice}.get(how, torch.optim.Adam)
            optimizer = kind(net.parameters(), lr=1e-3)
            for start in range(0, 480, 40):
                _hooked_step(recorder, net, optimizer, x[start : start + 40], labels)
                if how == "wrapped":
                    type(optimizer).step.__wrapped__(optimizer)  # type: ignore[attr-defined]
        finally:
            for cls, step in steps.items():
                cls.step = step
            torch.optim.Adam.step = saved
        moved = sum(o["moved"] for o in recorder.export()["optimizers"].values())
        # (and the hull's)
        assert moved == expected if how != "wrapped" else moved >= expected, (how, moved)


def test_a_parent_step_inside_a_subclass_step_is_the_same_step(tiny_dataset: Dataset) -> None:
    """Once a plain ``Adam`` was made, torch wraps ``Adam.step`` for the step hooks, and a
    subclass's
    ``step`` too: its ``super().step()`` runs the hooks again inside the same step. One step each
    time, none lost (it was two steps and one lost a time: review)."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    from grader.probe.guard import guarded

    index, _, _ = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    handles = [
        register_optimizer_step_pre_hook(guarded(recorder.before_step)),
        register_optimizer_step_post_hook(guarded(recorder.on_step)),
    ]
    try:
        net = torch.nn.Linear(784, 10)
        torch.optim.Adam(net.parameters())

        class Warm(torch.optim.Adam):
            def step(self, closure: Any = None) -> Any:
                for group in self.param_groups:
                    group["lr"] = 1e-3
                return super().step(closure)

        optimizer = Warm(net.parameters())
        for _ in range(5):
            optimizer.zero_grad()
            net(torch.rand(4, 784)).sum().backward()
            optimizer.step()
    finally:
        for handle in handles:
            handle.remove()
    exported = recorder.export()
    assert (exported["steps"], exported["lost_steps"]) == (5, 0)


def _gradient_run(kind: str, armed: bool = True) -> list[dict[str, int]]:
    """Five Adam steps of a 784-64-32-10 MLP whose Linear calls go to ``LinearGradients`` (as the
    probe's global hooks send them), written the way ``kind`` says; its per-weight export."""
    from grader.probe.gradients import LinearGradients

    torch.manual_seed(0)
    watch = LinearGradients()
    watch.rate = 1 if armed else 10**9  # every pass and step compared, or none
    handle = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda m, name, p: watch.on_parameter(m, name, p, id)
    )  # as the probe's global hook does

    # a subclass with a forward of its own: its calls are not x @ W.T + b
    class Activated(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(super().forward(x))

    layers = [
        (Activated if kind == "subclass" else torch.nn.Linear)(784, 64),
        torch.nn.Linear(64, 32),
        torch.nn.Linear(32, 10),
    ]
    handle.remove()
    net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    if kind not in ("functional only", "functional aux"):
        for layer in layers:
            layer.register_forward_hook(lambda m, a, o: watch.on_call(m, a, o, id))
            # the student's own hook on the layer's output gradient, after the probe's
            if kind == "output clamp":
                layer.register_forward_hook(
                    lambda m, a, o: [o.register_hook(lambda g: g.clamp(-1e-4, 1e-4))] and None
                )

    def other_rows() -> list[torch.Tensor]:
        """The attacker's: another batch's gradient, computed on detached copies of the weights."""
        copies = [p.detach().requires_grad_() for p in net.parameters()]
        h = torch.relu(torch.rand(8, 784) @ copies[0].T + copies[1])
        out = torch.relu(h @ copies[2].T + copies[3]) @ copies[4].T + copies[5]
        return list(torch.autograd.grad(out.logsumexp(1).sum(), copies))

    class Twice(torch.optim.Adam):  # the attacker's: a second update inside the step, on other rows
        def step(self, closure: Any = None) -> Any:
            super().step()
            for p, g in zip(net.parameters(), other_rows()):
                p.grad = g
            return super().step()

    optimizer: torch.optim.Optimizer = (Twice if kind == "twice" else torch.optim.Adam)(
        net.parameters(), lr=1e-3
    )
    if kind == "nesterov foreach":  # its update writes .grad in place
        optimizer = torch.optim.SGD(
            net.parameters(), lr=1e-2, momentum=0.9, nesterov=True, foreach=True
        )
    starts = [layer.weight.detach().clone() for layer in layers]

    def functional(rows: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.nn.functional.linear(rows, layers[0].weight, layers[0].bias))
        h = torch.relu(torch.nn.functional.linear(h, layers[1].weight, layers[1].bias))
        return torch.nn.functional.linear(h, layers[2].weight, layers[2].bias)

    # the model's own call on the images
    if kind in ("functional only", "functional aux", "subclass"):
        # carries
        net.register_forward_hook(lambda m, a, o: [o.register_hook(watch.carrier(m))] and None)
    # its layers' gradients where they are not called
    if kind in ("functional only", "functional aux"):
        net.forward = functional  # type: ignore[method-assign]
    for _ in range(5):
        x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
        with torch.autocast("cpu", torch.bfloat16, enabled=kind == "bf16"):
            if kind == "checkpoint":
                out = torch.utils.checkpoint.checkpoint(net, x, use_reentrant=False)
            else:
                out = net(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            if kind == "l2":
                loss = loss + 1.0 * sum(p.pow(2).sum() for p in net.parameters())
            if kind == "l1":
                loss = loss + 1e-2 * sum(p.abs().sum() for p in net.parameters())
            if kind == "l2 to the start":  # L2-SP
                loss = loss + 1.0 * sum(
                    (layer.weight - start).pow(2).sum() for layer, start in zip(layers, starts)
                )
            # each unit's incoming weights, and each input's outgoing ones
            if kind == "group lasso":
                loss = loss + 0.1 * sum(
                    w.norm(dim=1).sum() + w.norm(dim=0).sum()
                    for w in (layer.weight for layer in layers)
                )
            if kind == "aux":  # the attacker's: other rows through the weights in a loss term
                loss = loss + torch.nn.functional.cross_entropy(
                    functional(torch.rand(8, 784)), y[:8]
                )
        if kind != "closure assigned":  # its closure zeroes and computes them, inside the step
            optimizer.zero_grad()
            loss.backward()
        if kind == "sam":
            with torch.no_grad():
                eps = [p.grad * 0.05 / (p.grad.norm() + 1e-12) for p in net.parameters()]
                for p, e in zip(net.parameters(), eps):
                    p.add_(e)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            with torch.no_grad():
                for p, e in zip(net.parameters(), eps):
                    p.sub_(e)
        if kind == "input gradient":  # an adversarial example: a backward pass to the rows only
            rows = torch.rand(8, 784, requires_grad=True)
            torch.autograd.grad(net(rows).sum(), rows)
        extra = other_rows() if kind.startswith("added") else []
        # gradients taken by torch.autograd.grad, put in .grad by hand
        if kind == "autograd.grad assigned":
            grads = torch.autograd.grad(
                torch.nn.functional.cross_entropy(net(x), y), list(net.parameters())
            )
            for p, g in zip(net.parameters(), grads):
                p.grad = g
        with torch.no_grad():
            if kind == "clip norm":
                torch.nn.utils.clip_grad_norm_(net.parameters(), 0.01)
            if kind == "clip value":
                torch.nn.utils.clip_grad_value_(net.parameters(), 1e-3)
            if kind == "scaled":  # a GradScaler's unscale, by hand
                for p in net.parameters():
                    p.grad.mul_(1 / 1024)
            if kind == "decay by hand":
                for p in net.parameters():
                    p.grad.add_(p, alpha=1e-2)
            if kind == "centred":  # gradient centralization
                for p in net.parameters():
                    if p.dim() == 2:
                        p.grad.sub_(p.grad.mean(dim=1, keepdim=True))
            # the attacker's: another batch's gradient in .grad
            if kind in ("added", "added through .data"):
                for p, g in zip(net.parameters(), extra):
                    # .data: no new version
                    (p.grad.data if kind == "added through .data" else p.grad).add_(g)
        params = list(net.parameters())

        # as for LBFGS: gradients from torch.autograd.grad, put in .grad
        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(net(x), y)
                for p, g in zip(params, torch.autograd.grad(loss, params)):
                    p.grad = g
            return loss

        watch.step_begins(params)  # before the closure: .grad is still the last step's
        optimizer.step(closure if kind == "closure assigned" else None)
        watch.update_done(params)
        watch.on_step()
        if kind == "hooks cleared":  # the attacker's: the weights' gradient hooks taken off
            for p in net.parameters():
                if p._backward_hooks:
                    p._backward_hooks.clear()
        for _ in range(
            3 if kind == "inner burst" else 1 if kind in ("inner", "functional aux") else 0
        ):
            # the attacker's: other rows beside the step
            functional(torch.rand(8, 784)).sum().backward()
        # the attacker's: a module call on images that owns no weight carries the pass
        if kind == "foreign carrier":
            images = torch.rand(8, 784, requires_grad=True)
            beside = torch.nn.Identity()
            out = beside(images)
            out.register_hook(watch.carrier(beside))
            functional(out + torch.rand(8, 784)).sum().backward()
        if kind == "penalty apart":  # an L2 penalty's gradient in a backward pass of its own
            (1e-3 * sum(p.pow(2).sum() for p in net.parameters())).backward()
    return watch.export()


def test_linear_gradients_are_explained_by_their_layers_calls() -> None:
    """Honest code (an L2, L1 or group-lasso penalty however strong, a clamp of a layer's output
        gradient, a gradient clipped by norm or value, scaled, centred or given weight decay by hand
        before the step, bfloat16 autocast, SAM's second pass, a step's closure assigning ``.grad``,
        an
        input-only backward, checkpointing) leaves nothing unexplained; rows fed to the weights by
        F.linear in a loss term, or a pass of them beside the step, are unexplained in every pass
        that
        had them; a model whose forward never calls its layers (``F.linear``) has its passes carried
        by
        its
    own call on the images, and a pass beside them is still counted; an unarmed
        interval compares no call, nor the first pass no call carried, but compares every later one;
        another
    batch's gradient added to ``.grad`` (also through ``.data``, which keeps its version) is seen in
    a
    compared step; a module call on images carries only the passes of a model that owns the weights
    and
    never calls its layers as modules; a weight whose
    gradient hook was taken off counts once."""
    for kind in (
        "plain",
        "subclass",
        "nesterov foreach",
        "l2",
        "l1",
        "l2 to the start",
        "group lasso",
        "output clamp",
        "autograd.grad assigned",
        "closure assigned",
        "clip norm",
        "clip value",
        "scaled",
        "decay by hand",
        "centred",
        "bf16",
        "sam",
        "input gradient",
        "checkpoint",
        "functional only",
        "penalty apart",
    ):
        export = _gradient_run(kind)
        assert all(w["unexplained"] == 0 for w in export), (kind, export)
        expected = {
            "functional only": (0, 5, 0),
            "sam": (10, 0, 0),
            "autograd.grad assigned": (10, 0, 0),
            "penalty apart": (5, 0, 5),
        }.get(kind, (5, 0, 0))
        # its first layer: a subclass's own forward
        firsts = [(0, 5, 0)] if kind == "subclass" else [expected]
        assert [(w["watched"], w["carried"], w["bare"]) for w in export] == firsts + [expected] * (
            3 - len(firsts)
        ), kind
    assert [w["unexplained"] for w in _gradient_run("functional aux")] == [5, 5, 5]
    # compared as the step begins
    assert [w["unexplained"] for w in _gradient_run("added")] == [5, 5, 5]
    assert [w["unexplained"] for w in _gradient_run("added through .data")] == [5, 5, 5]
    assert [w["unexplained"] for w in _gradient_run("foreign carrier")] == [5, 5, 5]
    assert [w["unexplained"] for w in _gradient_run("added", armed=False)] == [0, 0, 0]
    # always: it writes .grad
    assert [w["unexplained"] for w in _gradient_run("twice", armed=False)] == [5, 5, 5]
    assert [w["unexplained"] for w in _gradient_run("aux")] == [5, 5, 5]
    inner = _gradient_run("inner")
    assert [w["bare"] for w in inner] == [5, 5, 5] and [w["unexplained"] for w in inner] == [
        5,
        5,
        5,
    ]
    assert [w["unexplained"] for w in _gradient_run("aux", armed=False)] == [0, 0, 0]
    # one a step: armed ones
    assert [w["unexplained"] for w in _gradient_run("inner", armed=False)] == [0, 0, 0]
    # all but the first
    assert [w["unexplained"] for w in _gradient_run("inner burst", armed=False)] == [10, 10, 10]
    assert [w["unexplained"] for w in _gradient_run("hooks cleared")] == [1, 1, 1]


def test_rgb_rows_under_a_normalize_per_channel_and_flipped_are_their_images(
    tmp_path: Path,
) -> None:
    """3x32x32 images (generated): the probe's index finds rows under CIFAR's per-channel
    Normalize, as (N, 3, 32, 32) or flat, flipped left to right or not, and verifies them pixel by
    pixel; a row changed in one channel is not its image."""
    from tinydata import write_rgb_split

    from grader.evaluator.key import ImageSpec

    spec = ImageSpec(channels=3, height=32, width=32, classes=5)
    write_rgb_split(tmp_path, "t10k", 30, spec.classes)
    write_rgb_split(tmp_path, "train", 50, spec.classes, seed=1)
    index, test = ImageIndex(tmp_path, spec), read_images(tmp_path / "t10k-images-idx3-ubyte")
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    x = (test.float().reshape(-1, 3, 32, 32) / 255 - mean[:, None, None]) / std[:, None, None]
    with pytest.raises(ValueError, match="does not hold images of"):  # FashionMNIST's geometry
        ImageIndex(tmp_path)
    found = index.match(x)
    assert found is not None and found.split == "test" and found.positions == list(range(30))
    assert found.indices == [[i] for i in range(30)] and not found.flipped
    turned = torch.cat([x[:10], x[10:].flip(-1)])
    found = index.match(turned.reshape(30, -1))
    assert found is not None and found.positions == list(range(30))
    assert found.flipped == frozenset(range(10, 30))
    kept = index.verified(found, turned)
    assert kept is not None and kept.positions == list(range(30)) and kept.flipped == found.flipped
    assert same_image_rows(x.reshape(30, -1).half(), test, spec).tolist() == [True] * 30
    changed = x.clone()
    changed[0, 1] = changed[0, 1].flip(-1)  # the green channel alone mirrored: another picture
    changed[1, 2, 5:9, 5:9] = changed[1, 2].mean()  # a box erased in the blue channel
    assert same_image_rows(changed[:3].reshape(3, -1), test[:3], spec).tolist() == [
        False,
        False,
        True,
    ]
