"""A dataset other than FashionMNIST, described by the rubric (model/datasets.py): CIFAR-10's python
batches read by a restricted unpickler (model/cifar.py), prepared and converted (intake/dataset.py),
redirected in the kernel (probe/runtime.py), and a generated CIFAR-format class graded end to end
in both label modes."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from classes import grade_class
from tinydata import make_tiny_cifar

from grader.intake import dataset as data
from grader.intake.dataset import kernel_view, label_copies, prepare
from grader.model import cifar
from grader.model.context import Context
from grader.model.dataset import Dataset, digest
from grader.model.datasets import KINDS, DataChoice
from grader.model.errors import DataError, RubricError
from grader.model.results import Result
from grader.model.rubric import Rubric, parse_rubric

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "cifar-10-batches-py"


def _choice(folder: Path, **more: Any) -> DataChoice:
    """CIFAR10 with the generated files' own sha256 (the TA's copy, not the official one)."""
    files = tuple((name, digest(folder / name, "sha256")) for name in KINDS["CIFAR10"].files)
    return DataChoice(name="CIFAR10", files=files, **more)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cifar(tmp_path_factory.mktemp("cifar-source")) / FOLDER


@pytest.fixture(scope="module")
def cifar_data(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return prepare(source, cache=tmp_path_factory.mktemp("cifar-cache"), choice=_choice(source))


# -- the table ------------------------------------------------------------------------------------
def test_the_table_knows_each_class_its_format_folder_and_files() -> None:
    assert set(KINDS) >= {"FashionMNIST", "MNIST", "KMNIST", "CIFAR10"}
    fashion, digits, colour = KINDS["FashionMNIST"], KINDS["MNIST"], KINDS["CIFAR10"]
    assert fashion.folder == "FashionMNIST/raw" and colour.folder == FOLDER
    assert (fashion.format, colour.format) == ("idx", "cifar") and not fashion.converted
    assert colour.files[-2:] == ("test_batch", "batches.meta") and len(colour.train) == 5
    assert len(fashion.classes) == len(colour.classes) == len(digits.classes) == 10
    # official checksums where known: FashionMNIST's sha256, CIFAR10's md5 (torchvision's); none
    # for MNIST's uncompressed files, which a rubric must then give
    assert {a for _, (a, _) in fashion.checksums} == {"sha256"} and len(fashion.checksums) == 4
    assert {a for _, (a, _) in colour.checksums} == {"md5"}
    assert set(dict(colour.checksums)) == set(colour.files)
    assert set(DataChoice(name="CIFAR10").checksums()) == set(colour.files)
    assert not digits.checksums
    assert DataChoice().kind is fashion and Dataset(Path("r")).raw == Path("r/FashionMNIST/raw")


# -- the reader -----------------------------------------------------------------------------------
def test_the_reader_reads_a_batch_and_the_meta(source: Path) -> None:
    images, labels = cifar.read_batch(source / "test_batch")
    assert len(images) == 200 * 3072 and len(labels) == 200 and set(labels) == set(range(5))
    assert cifar.label_names(source / "batches.meta")[:2] == ("airplane", "automobile")


class _Shell:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_the_reader_refuses_a_pickle_that_names_anything_else(
    tmp_path: Path, protocol: int
) -> None:
    """A batch that would call os.system (or anything but numpy's array reconstruction) is refused
    before any call, whatever the protocol."""
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({"data": _Shell(), "labels": [1]}, protocol=protocol))
    with pytest.raises(DataError, match=r"may not name (posix|os)\.system"):
        cifar.read_batch(bad)
    for payload in (b"cos\nsystem\n(S'echo pwned'\ntR.", b"not a pickle"):
        bad.write_bytes(payload)
        with pytest.raises(DataError, match="is not a CIFAR python batch"):
            cifar.read_batch(bad)
    # a well-formed pickle of the wrong things: one line, no crash
    bad.write_bytes(pickle.dumps({"data": [[1, 2]], "labels": [0]}))
    with pytest.raises(DataError, match="not a uint8 array"):
        cifar.read_batch(bad)
    assert pickle.loads(io.BytesIO(pickle.dumps([1])).read()) == [1]


class _Uninitialized:
    """numpy.ndarray((4, 3072), 'u1') called by the pickle: an array of whatever memory held."""

    def __reduce__(self) -> tuple[Any, ...]:
        import numpy

        return (numpy.ndarray, ((4, 3072), "u1"))


class _Python2:
    """An array as Python 2's numpy pickles it (the official files): numpy's own reconstruction,
    its bytes a str (read as latin-1), ``size`` bytes of a (``rows``, 3072) array."""

    def __init__(self, raw: bytes, rows: int) -> None:
        self.raw, self.rows = raw, rows

    def __reduce__(self) -> tuple[Any, ...]:
        import numpy

        reconstruct = numpy.zeros(1, numpy.uint8).__reduce__()[0]
        state = (1, (self.rows, 3072), numpy.dtype("u1"), False, self.raw.decode("latin1"))
        return (reconstruct, (numpy.ndarray, (0,), "b"), state)


def test_the_reader_builds_arrays_only_from_the_pickles_own_bytes(tmp_path: Path) -> None:
    """numpy.ndarray(shape) called by a pickle (memory no one wrote, of any size a few bytes
    name) and an array whose bytes fall short of its shape are refused in one line; Python 2's
    pickle of a batch (the official files) and numpy's own in Python 3's protocols, in Fortran
    order too, read back byte for byte."""
    import numpy

    batch = tmp_path / "data_batch_1"
    short = _Python2(bytes(10), 4)
    for bad, says in ((_Uninitialized(), "only from its own bytes"), (short, "holds 10 bytes")):
        batch.write_bytes(pickle.dumps({"data": bad, "labels": [0] * 4}, protocol=2))
        with pytest.raises(DataError, match=says) as refused:
            cifar.read_batch(batch)
        assert "\n" not in str(refused.value)
    images = numpy.random.default_rng(0).integers(0, 256, (3, 3072), dtype=numpy.uint8)
    old = {"data": _Python2(images.tobytes(), 3), "labels": [0, 1, 2]}
    batch.write_bytes(pickle.dumps(old, protocol=2))
    assert cifar.read_batch(batch) == (images.tobytes(), (0, 1, 2))
    for protocol in (3, 4, 5):
        for array in (images, numpy.asfortranarray(images)):
            batch.write_bytes(pickle.dumps({"data": array, "labels": [0, 1, 2]}, protocol=protocol))
            assert cifar.read_batch(batch) == (images.tobytes(), (0, 1, 2))


# -- preparing ------------------------------------------------------------------------------------
def test_prepared_cifar_is_converted_and_its_geometry_read_from_the_data(
    cifar_data: Dataset, source: Path
) -> None:
    spec = cifar_data.spec
    assert (spec.channels, spec.height, spec.width, spec.classes) == (3, 32, 32, 5)
    assert cifar_data.classes == ("airplane", "automobile", "bird", "cat", "deer")
    images, labels = cifar.read_batch(source / "test_batch")
    assert cifar_data.test_labels() == labels and len(cifar_data.train_labels()) == 500
    pair = images[3 * 3072 : 4 * 3072] + images[7 * 3072 : 8 * 3072]
    assert cifar_data.test_images([3, 7]) == pair
    assert not cifar_data.official  # generated files: the rubric's ceiling is not about them
    assert data._is_verified(cifar_data.raw, cifar_data.choice)
    renamed = dataclasses.replace(cifar_data.choice, classes=tuple("abcde"))
    assert Dataset(cifar_data.root, renamed).classes == tuple("abcde")
    # again, from the cache alone
    again = prepare(cache=cifar_data.root, choice=cifar_data.choice, allow_download=False)
    assert again.spec == spec


def test_files_that_fail_the_rubrics_checksums_are_refused(source: Path, tmp_path: Path) -> None:
    official = DataChoice(name="CIFAR10")  # torchvision's md5s: not these generated files
    with pytest.raises(DataError, match="missing or corrupt: data_batch_1.*dataset.files"):
        prepare(source, cache=tmp_path / "a", choice=official)
    with pytest.raises(DataError, match="CIFAR10 not found: run `grader data --from DIR`"):
        prepare(cache=tmp_path / "b", choice=official, allow_download=False)


def test_the_hidden_view_permutes_the_test_batch_and_the_idx_files_alike(
    cifar_data: Dataset, tmp_path: Path
) -> None:
    view = kernel_view(cifar_data, tmp_path / "view", hide_test_labels=True)
    assert view.order is not None and sorted(view.order) == list(range(200))
    seen, seen_labels = cifar.read_batch(view.dataset.raw / "test_batch")
    k = next(k for k, i in enumerate(view.order) if k != i)
    assert seen[k * 3072 : (k + 1) * 3072] == cifar_data.test_images([view.order[k]])
    assert view.dataset.test_images([k]) == cifar_data.test_images([view.order[k]])
    assert seen_labels == view.dataset.test_labels() != view.labels(cifar_data.test_labels())
    assert view.dataset.spec == cifar_data.spec
    assert all(p.exists() for p in view.dataset.files)
    visible = kernel_view(cifar_data, tmp_path / "visible", hide_test_labels=False)
    assert visible.order is None and (visible.dataset.raw / "test_batch").is_symlink()
    planted = tmp_path / "opt" / "test_batch"
    planted.parent.mkdir()
    planted.write_bytes(b"x")
    assert planted in label_copies(cifar_data, (tmp_path / "opt",))


def test_the_probe_points_cifar10_at_the_verified_copy(cifar_data: Dataset) -> None:
    """torchvision's CIFAR10 checks the official md5s; the redirect trusts the copy the grader
    verified (below the data root only), whatever root and download flag the notebook passes."""
    import torchvision.datasets.cifar as module
    from torchvision.datasets import CIFAR10

    from grader.probe import runtime

    config = {
        "data_root": str(cifar_data.root),
        "dataset": "CIFAR10",
        "images": str(cifar_data.raw),
        "image": cifar_data.spec.to_text(),
    }
    state = runtime._State(config)
    assert state.recorder.shared.index.sizes == {"test": 200, "train": 500}
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(cifar_data.root), train=False)
    runtime._patch_dataset(state)
    try:
        test = CIFAR10("data", train=False, download=True)
        assert len(test) == 200 and test.targets == list(cifar_data.test_labels())
        assert test.classes == list(cifar_data.classes) and state.test_sets == [test]
        assert runtime._train_mapping(CIFAR10("data", train=True), CIFAR10) is None
        elsewhere = Path(cifar_data.root).parent / "elsewhere"
        assert not module.check_integrity(str(elsewhere / "test_batch"), "0" * 32)
    finally:
        state.patches.undo()
    with pytest.raises(ValueError, match="redirects no dataset class 'SVHN'"):
        runtime._State({**config, "dataset": "SVHN"})


# -- the rubric's section -------------------------------------------------------------------------
def _rubric(dataset: Any) -> Rubric:
    content = yaml.safe_load((ROOT / "rubric.yaml").read_text())
    content["dataset"] = dataset
    return parse_rubric(content, ROOT / "rubric.yaml")


def test_the_rubrics_dataset_section() -> None:
    content = yaml.safe_load((ROOT / "rubric.yaml").read_text())
    del content["dataset"]
    assert parse_rubric(content, ROOT / "rubric.yaml").dataset == DataChoice()  # an old rubric
    sha = "ab" * 32
    section = {"name": "CIFAR10", "files": {"test_batch": sha.upper()}, "classes": ["a", "b"]}
    chosen = _rubric(section)
    assert chosen.dataset.checksums()["test_batch"] == ("sha256", sha)
    assert chosen.dataset.checksums()["data_batch_1"][0] == "md5"  # the table's, kept
    assert chosen.dataset.class_names() == ("a", "b")
    assert _rubric({"name": "CIFAR10"}).dataset.class_names()[0] == "airplane"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"name": "SVHN"}, "dataset.name must be one of FashionMNIST, MNIST, KMNIST, CIFAR10"),
        ({"nme": "CIFAR10"}, "field dataset.name is missing (dataset.nme is not a field"),
        ({"name": "CIFAR10", "file": {}}, "dataset.file: unknown field; did you mean files?"),
        ({"name": "CIFAR10", "files": {"test": "ab" * 32}}, "dataset.files.test is not a file"),
        ({"name": "CIFAR10", "files": {"test_batch": "abc"}}, "dataset.files.test_batch must"),
        ({"name": "CIFAR10", "files": ["x"]}, "dataset.files must be a mapping"),
        ({"name": "MNIST"}, "dataset.files must give the sha256 of MNIST's train-images"),
        ({"name": "CIFAR10", "classes": ["a", "a"]}, "dataset.classes must name two classes"),
        ({"name": "CIFAR10", "classes": "ab"}, "dataset.classes must be a list of strings"),
        ("CIFAR10", "dataset must be a mapping"),
    ],
)
def test_a_wrong_dataset_field_is_one_line_naming_it(section: Any, expected: str) -> None:
    with pytest.raises(RubricError) as info:
        _rubric(section)
    assert expected in str(info.value) and "\n" not in str(info.value)


# -- a CIFAR-format class graded end to end -------------------------------------------------------
TEMPLATE = (
    """import torch
import numpy as np
import torch.nn as nn
from torchvision import datasets
import torchvision.transforms as transforms
from torch.utils.data.sampler import SubsetRandomSampler

batch_size = 32
valid_size = 0.2
transform = transforms.Compose([
    transforms.ToTensor(),
    transforms.Normalize(mean=(0.2, 0.25, 0.3), std=(0.3, 0.35, 0.4)),
])
train_data = datasets.CIFAR10(root='data', train=True, download=True, transform=transform)
test_data = datasets.CIFAR10(root='data', train=False, download=True, transform=transform)
indices = list(range(len(train_data)))
np.random.shuffle(indices)
split = int(np.floor(valid_size * len(train_data)))
train_idx, valid_idx = indices[split:], indices[:split]
train_loader = torch.utils.data.DataLoader(train_data, batch_size=batch_size,
    sampler=SubsetRandomSampler(train_idx))
valid_loader = torch.utils.data.DataLoader(train_data, batch_size=batch_size,
    sampler=SubsetRandomSampler(valid_idx))
test_loader = torch.utils.data.DataLoader(test_data, batch_size=batch_size, shuffle=False)""",
    """class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(-1, 8 * 8 * 8))

model = Net()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.002)""",
    """n_epochs = 2
for epoch in range(n_epochs):
    model.train()
    for data, target in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(data), target)
        loss.backward()
        optimizer.step()
    model.eval()
    valid_loss = 0.0
    with torch.no_grad():
        for data, target in valid_loader:
            valid_loss += criterion(model(data), target).item() * data.size(0)
    print('Epoch: {} \\tValidation Loss: {:.6f}'.format(epoch + 1, valid_loss / len(valid_idx)))""",
    """correct, total = 0, 0
model.eval()
with torch.no_grad():
    for data, target in test_loader:
        _, pred = torch.max(model(data), 1)
        correct += int((pred == target).sum())
        total += len(target)
print('\\nTest Accuracy (Overall): %.2f%% (%d/%d)' % (100. * correct / total, correct, total))""",
)


@pytest.fixture(scope="module")
def cifar_class(
    cifar_data: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Context]:
    """The template notebook (a conv layer, pooling and a Linear on CIFAR10, with a Normalize per
    channel) as the handout and as a student's submission, and a rubric naming CIFAR10 and the
    generated files' checksums, its weight layers frozen."""
    from grader.model.findings import RuleId
    from grader.model.rubric import load_rubric
    from grader.static.reference import derive_facts

    folder = tmp_path_factory.mktemp("cifar-class")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in TEMPLATE]
    template = folder / "HW3_template.ipynb"
    nbformat.write(notebook, template)
    nbformat.write(notebook, folder / "HW3_alice.ipynb")
    frozen = (RuleId.EPOCHS, RuleId.VALID_SIZE, RuleId.WEIGHT_LAYERS)
    rubric = dataclasses.replace(
        load_rubric(ROOT / "rubric.yaml"),
        template=template,
        dataset=cifar_data.choice,
        frozen=frozen,
    )
    return folder, Context(rubric, derive_facts(template), cifar_data)


def _graded(
    cifar_class: tuple[Path, Context], factory: pytest.TempPathFactory, hidden: bool
) -> Result:
    folder, context = cifar_class
    label = "cifar-hidden" if hidden else "cifar-visible"
    results = grade_class(folder, ["HW3_alice.ipynb"], context, factory, label, hidden, noise=None)
    return results["HW3_alice.ipynb"]


@pytest.mark.slow
def test_a_cifar_class_is_graded_with_the_accuracy_recomputed_in_both_label_modes(
    cifar_class: tuple[Path, Context], tmp_path_factory: pytest.TempPathFactory
) -> None:
    seen = _graded(cifar_class, tmp_path_factory, hidden=False)
    failing = [(c.id, c.message) for c in seen.checks if c.ok is not True]
    shown = (seen.reason, seen.flags, seen.notes, failing)
    assert seen.status.value == "graded" and not seen.flags, shown
    assert seen.measured_by == "student-test-pass" and seen.recomputed, shown
    assert seen.accuracy is not None and seen.accuracy > 60, shown
    assert seen.accuracy == pytest.approx(seen.reported_accuracy, abs=0.01), shown
    hidden = _graded(cifar_class, tmp_path_factory, hidden=True)
    shown = (hidden.reason, hidden.flags, hidden.notes)
    assert hidden.status.value == "graded" and not hidden.flags and hidden.recomputed, shown
    assert hidden.accuracy == seen.accuracy and hidden.score == seen.score, shown
    # the conv layer judged on the captured graph too, in both modes
    for result in (seen, hidden):
        layers = next(c for c in result.checks if c.id == "weight_layers" and c.stage == "run")
        assert layers.ok is True, layers


def test_the_pages_name_the_classes_of_the_data(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`grader grade` with a rubric naming CIFAR10: the dataset prepared from --data, and the
    pages' class names the data's (its batches.meta: five), not the table's ten."""
    from grader.pipeline.commands import Setup, context_of

    content = yaml.safe_load((ROOT / "rubric.yaml").read_text())
    content["reference"]["template"] = str(ROOT / "reference" / "HW3_template.ipynb")
    content["dataset"] = {"name": "CIFAR10", "files": dict(_choice(source).files)}
    (tmp_path / "rubric.yaml").write_text(yaml.safe_dump(content))
    monkeypatch.setenv("GRADER_DATA_CACHE", str(tmp_path / "cache"))
    context = context_of(Setup(rubric=tmp_path / "rubric.yaml", data=source), run=True)
    assert context.dataset is not None and context.dataset.spec.classes == 5
    assert context.rubric.dataset.class_names() == context.dataset.classes
    assert context.dataset.classes == ("airplane", "automobile", "bird", "cat", "deer")
    assert context.dataset.raw == tmp_path / "cache" / FOLDER


def test_the_probe_redirects_the_rubrics_class_alone(tmp_path: Path) -> None:
    """MNIST named: MNIST(...) reads the prepared data; torchvision's FashionMNIST, a subclass of
    MNIST in the table, is another dataset and is left as it is (no data there: not found)."""
    from tinydata import make_tiny_fashion_mnist
    from torchvision.datasets import MNIST, FashionMNIST

    from grader.probe import runtime

    root = make_tiny_fashion_mnist(tmp_path / "data", train=30, test=20)
    shutil.copytree(root / "FashionMNIST", root / "MNIST")  # FashionMNIST's would be found too
    state = runtime._State({"data_root": str(root), "dataset": "MNIST"})
    runtime._patch_dataset(state)
    try:
        assert len(MNIST("elsewhere", train=False, download=True)) == 20
        assert len(MNIST("elsewhere", train=True)) == 30 and len(state.test_sets) == 1
        with pytest.raises(RuntimeError, match="Dataset not found"):
            FashionMNIST(str(tmp_path / "nowhere"), train=False)
    finally:
        state.patches.undo()
