"""The probe's recorder without a kernel: content keys, test passes by content, training passes,
and parameter numbers that are never reused. (The kernel side is exercised for real by
test_patterns.py; these pin the mechanisms down quickly.)"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from grader.probe.content import ImageIndex, read_images
from grader.probe.identity import Serials
from grader.probe.passes import Recorder
from grader.model.dataset import Dataset


def _index(dataset: Dataset) -> tuple[ImageIndex, torch.Tensor, torch.Tensor]:
    index = ImageIndex(dataset.raw)
    return index, read_images(dataset.raw / "t10k-images-idx3-ubyte"), read_images(dataset.raw / "train-images-idx3-ubyte")


def test_test_images_are_recognised_under_any_affine_preprocessing(tiny_dataset: Dataset) -> None:
    index, test, train = _index(tiny_dataset)
    normalized = test.float().div(255).sub(0.2860).div(0.3530)
    for variant in (test, normalized, normalized.half(), normalized.view(-1, 1, 28, 28), 1 - test.float() / 255,
                    normalized[torch.randperm(len(normalized))]):
        match = index.match(variant)
        assert match is not None and match.split == "test" and len(match.positions) == len(test)
    shuffled = torch.randperm(len(test))
    match = index.match(normalized[shuffled])
    assert match is not None and [group[0] for group in match.indices] == shuffled.tolist()  # exact, any order
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
    again = [torch.nn.Parameter(torch.zeros(3)) for _ in range(200)]  # one of them likely reuses the address
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


def test_forward_called_directly_pairs_the_first_input_with_the_last_output(tiny_dataset: Dataset) -> None:
    index, test, _ = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net()
    x = test.float().div(255)
    with torch.no_grad():
        for start in range(0, len(x), 50):  # model.forward(x): only fc1 and fc2 are called as modules
            hidden = _call(recorder, net.fc1, x[start:start + 50])
            _call(recorder, net.fc2, hidden)
    (test_pass,) = recorder.test_passes
    assert test_pass.complete and test_pass.batches == 4
    expected = net(x).argmax(1)
    assert torch.equal(test_pass.predictions.long(), expected)


def test_a_new_pass_starts_when_an_image_comes_back(tiny_dataset: Dataset) -> None:
    index, test, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for epoch in range(3):
        for start in range(0, 480, 32):
            _call(recorder, net, train[start:start + 32].float())
            recorder.on_step(optimizer, (), {})
    with torch.no_grad():
        _call(recorder, net, test.float())
        _call(recorder, net, test[:100].float())  # a second, partial pass
    content = [p for p in recorder.train_passes if p.source == "content"]
    assert [int(p.drawn.sum()) for p in content] == [480, 480, 480]
    assert all(sum(p.steps.values()) == 15 for p in content)
    assert [(p.complete, int((p.predictions >= 0).sum())) for p in recorder.test_passes] == [(True, 200), (False, 100)]


def test_a_look_at_one_loader_batch_then_preloaded_training(tiny_dataset: Dataset) -> None:
    """The template's `next(iter(train_loader))` before training on preloaded tensors: the epochs are
    the content passes, and the grader (run_facts) counts them, not the one-batch loader pass."""
    from grader.judge.run_facts import training

    index, _, train = _index(tiny_dataset)
    serials = Serials()
    recorder = Recorder(index, 10, serials)
    net = _Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    recorder.loader_batch(recorder.start_loader_pass(len(train)), list(range(20)), (train[:20].float(), None))
    for epoch in range(10):
        for start in range(0, 480, 32):
            _call(recorder, net, train[start:start + 32].float())
            recorder.on_step(optimizer, (), {})
    record = {**recorder.export(), "model": {"param_serials": [serials.of(p) for p in net.parameters()]}}
    facts = training(record)
    assert facts.lineage == "direct" and len(facts.passes) == 10
    assert all(p.source == "content" for p in facts.passes)
    assert facts.trained.bit_count() >= 480 - 32  # the first batch may be left to the loader pass


def test_steps_decide_which_draws_trained_the_model(tiny_dataset: Dataset) -> None:
    """A notebook that calls model.eval() for validation and forgets model.train(): its batches still
    trained the model (a step followed each), and its validation calls did not."""
    index, _, train = _index(tiny_dataset)
    recorder = Recorder(index, 10, Serials())
    net = _Net().eval()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for epoch in range(2):
        for start in range(0, 480, 32):
            _call(recorder, net, train[start:start + 32].float())
            recorder.on_step(optimizer, (), {})
        with torch.no_grad():
            _call(recorder, net, train[480:].float())
    recorder.export()
    trained = [p for p in recorder.train_passes if p.stepping]
    validated = [p for p in recorder.train_passes if not p.stepping]
    assert [int(p.drawn.sum()) for p in trained] == [480, 480] and [int(p.drawn.sum()) for p in validated] == [120, 120]
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
"""


def test_the_module_hooks_are_out_while_a_loader_fetches_and_back_for_the_model(tiny_dataset: Dataset,
                                                                               tmp_path: Path) -> None:
    """A dataset's per-image transforms are modules: the probe's hooks are taken out while a batch is
    built (hundreds of thousands of calls a run), and the model's calls after it are still seen."""
    import json
    import subprocess
    import sys

    out = tmp_path / "probe.json"
    done = subprocess.run([sys.executable, "-c", _FETCH_SCRIPT, str(tiny_dataset.root), str(out)],
                          capture_output=True, text=True, timeout=120, check=True)
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["seen"] == [0] * 8 and counts["after"] == 2
    record = json.loads(out.read_text())
    assert record["integrity"] == []
    assert sum(entry["steps"] for entry in record["optimizers"].values()) == 2
    assert record["optimizers"] and next(iter(record["optimizers"].values())).get("curve", {}).get("loss")


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
"""


def test_a_prefetching_thread_hides_nothing_and_training_inside_a_dataset_is_counted(tiny_dataset: Dataset,
                                                                                    tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "probe.json"
    subprocess.run([sys.executable, "-c", _THREAD_SCRIPT, str(tiny_dataset.root), str(out)],
                   capture_output=True, text=True, timeout=120, check=True)
    record = json.loads(out.read_text())
    assert record["integrity"] == [] and record["steps"] == 5 and record["unwatched_steps"] == 2
    curve = next(iter(record["optimizers"].values()))["curve"]
    assert [loss is not None for loss in curve["loss"]] == [True, True, True, False, False]  # the 3 watched steps
