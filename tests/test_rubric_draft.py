"""Frozen facts from any template (every weight layer, the other constants) and `grader rubric
TEMPLATE`, which writes a rubric draft that loads and gives the template's facts back."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from grader.cli import ExitCode, main
from grader.model.errors import RubricError
from grader.model.rubric import LinearLayer, WeightLayer, load_rubric
from grader.static.reference import derive_facts

ROOT = Path(__file__).resolve().parent.parent
HW3 = ROOT / "reference" / "HW3_template.ipynb"

CNN_CELLS = (
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
    "from torch.utils.data import DataLoader, Subset",
    "EPOCHS = 8\nholdout = 0.15\nBATCH = 128\nlr = 1e-3\nrunning_loss = 0.0",
    "n_valid = int(holdout * len(train_set))\n"
    "valid_set = Subset(train_set, range(n_valid))\n"
    "train_loader = DataLoader(Subset(train_set, range(n_valid, len(train_set))), "
    "batch_size=BATCH)",
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1)\n"
    "        self.conv2 = nn.Conv2d(32, 64, kernel_size=(3, 3), stride=1, padding='same', "
    "bias=False)\n"
    "        self.pool = nn.MaxPool2d(2)\n"
    "        self.fc = nn.Linear(64 * 14 * 14, 10)\n"
    "    def forward(self, x):\n"
    "        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))\n"
    "        return self.fc(x.flatten(1))",
    "model = Net()\noptimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"
    "for epoch in range(EPOCHS):\n"
    "    for images, labels in train_loader:\n"
    "        optimizer.zero_grad()\n"
    "        loss = F.cross_entropy(model(images), labels)\n"
    "        loss.backward()\n"
    "        optimizer.step()\n"
    "        running_loss += loss.item()",
)


def _notebook(path: Path, cells: tuple[str, ...]) -> Path:
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(book, str(path))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_hw3_keeps_its_facts_and_lists_its_weight_layers() -> None:
    facts = derive_facts(HW3)
    assert (facts.epochs_name, facts.epochs, facts.valid_name, facts.valid_size) == (
        "n_epochs",
        10,
        "valid_size",
        0.2,
    )
    assert facts.linear_layers == (
        LinearLayer(784, 512, "self.fc1"),
        LinearLayer(512, 256, "self.fc2"),
        LinearLayer(256, 10, "self.fc3"),
    )
    assert facts.weight_layers == tuple(
        WeightLayer(
            kind="Linear", name=f"self.fc{i}", args=(("in_features", a), ("out_features", b))
        )
        for i, (a, b) in enumerate(((784, 512), (512, 256), (256, 10)), start=1)
    )
    # batch_size and num_workers; an accumulator updated with += is no constant
    assert dict(facts.constants) == {"num_workers": 0, "batch_size": 64}


def test_a_cnn_template_gives_its_conv_layers_and_constants(tmp_path: Path) -> None:
    facts = derive_facts(_notebook(tmp_path / "CNN_template.ipynb", CNN_CELLS))
    assert (facts.epochs_name, facts.epochs, facts.valid_name, facts.valid_size) == (
        "EPOCHS",
        8,
        "holdout",
        0.15,
    )
    conv1, conv2, fc = facts.weight_layers
    assert conv1 == WeightLayer(
        kind="Conv2d",
        name="self.conv1",
        args=(
            ("in_channels", 1),
            ("out_channels", 32),
            ("kernel_size", 3),
            ("stride", 1),
            ("padding", 1),
        ),
    )
    assert conv2.kind == "Conv2d" and conv2.name == "self.conv2"
    assert dict(conv2.args) == {
        "in_channels": 32,
        "out_channels": 64,
        "kernel_size": (3, 3),
        "stride": 1,
        "padding": "same",
        "bias": False,
    }
    assert fc == WeightLayer(
        kind="Linear", name="self.fc", args=(("in_features", 12544), ("out_features", 10))
    )
    assert facts.linear_layers == (LinearLayer(12544, 10, "self.fc"),)
    assert dict(facts.constants) == {"BATCH": 128, "lr": 1e-3}


@pytest.mark.parametrize(
    "imports, prefix",
    [
        ("from torch import nn as tnn", "tnn."),
        ("import torch.nn", "torch.nn."),
        ("from torch.nn import Conv1d as C1, Linear as Dense", ""),
    ],
)
def test_weight_layers_however_imported(tmp_path: Path, imports: str, prefix: str) -> None:
    conv = f"{prefix}Conv1d" if prefix else "C1"
    linear = f"{prefix}Linear" if prefix else "Dense"
    cells = (
        "import torch\n" + imports,
        CNN_CELLS[1],
        CNN_CELLS[2],
        f"layers = [{conv}(1, 8, kernel_size=5, groups=1, device='cpu'), "
        f"{linear}(in_features=8 * 24, out_features=10, bias=True), torch.nn.ReLU()]",
        CNN_CELLS[4],
    )
    facts = derive_facts(_notebook(tmp_path / "T.ipynb", cells))
    assert facts.weight_layers == (
        WeightLayer(
            kind="Conv1d",
            name=None,
            args=(("in_channels", 1), ("out_channels", 8), ("kernel_size", 5), ("groups", 1)),
        ),
        WeightLayer(
            kind="Linear",
            name=None,
            args=(("in_features", 192), ("out_features", 10), ("bias", True)),
        ),
    )


def test_an_argument_that_is_no_constant_is_none(tmp_path: Path) -> None:
    layers = "width = compute()\nc = nn.Conv2d(1, width, 3)\nfc = nn.Linear(10, 10)"
    cells = (*CNN_CELLS[:3], layers, CNN_CELLS[4])
    conv, _ = derive_facts(_notebook(tmp_path / "T.ipynb", cells)).weight_layers
    assert conv.name == "c" and conv.args == (
        ("in_channels", 1),
        ("out_channels", None),
        ("kernel_size", 3),
    )


@pytest.mark.parametrize("template", ["hw3", "cnn"])
def test_grader_rubric_writes_a_draft_that_loads_and_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str
) -> None:
    if template == "hw3":
        path = tmp_path / "course" / "HW3_template.ipynb"
        path.parent.mkdir()
        shutil.copy(HW3, path)
    else:
        path = _notebook(tmp_path / "CNN_template.ipynb", CNN_CELLS)
    out = tmp_path / "drafts" / "rubric.yaml"
    out.parent.mkdir()
    code, printed, err = _run(["rubric", str(path), "--out", str(out)], capsys)
    assert code == ExitCode.OK, err
    lines = printed.splitlines()
    facts = derive_facts(path)
    assert lines[0] == f"homework: {path.stem.split('_')[0]}"
    assert lines[1] == f"epochs: {facts.epochs_name} = {facts.epochs}"
    assert lines[2].startswith(f"validation fraction: {facts.valid_name} = 0.")
    assert sum(line.startswith("weight layer: ") for line in lines) == len(facts.weight_layers)
    assert sum(line.startswith("constant: ") for line in lines) == len(facts.constants)
    assert lines[-1].startswith(f"wrote {out}")

    rubric = load_rubric(out)
    assert rubric.template.resolve() == path.resolve()
    assert "../" in out.read_text()  # the template relative to the draft's folder
    assert derive_facts(rubric.template) == facts
    assert rubric.files.handout == "template"
    shipped = load_rubric(ROOT / "rubric.yaml")
    assert rubric.accuracy == shipped.accuracy and rubric.limits == shipped.limits
    assert rubric.allowed_layers == shipped.allowed_layers
    assert rubric.allowed_packages == shipped.allowed_packages
    if template == "hw3":
        assert rubric.homework == "HW3" and rubric.frozen == shipped.frozen
        assert "  batch_size = 64" in out.read_text()
    else:
        # the template's layers (Conv2d among them) frozen under the rule's weight_layers name
        assert rubric.homework == "CNN"
        assert rubric.frozen == ("epochs", "valid_size", "weight_layers")
        assert "weight_layers keeps them" in out.read_text()
        assert "self.conv1 = nn.Conv2d(in_channels=1, out_channels=32" in printed
        assert "constant: BATCH = 128" in lines


def test_the_default_draft_is_beside_the_template_and_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "HW3_template.ipynb"
    shutil.copy(HW3, path)
    draft = tmp_path / "rubric.draft.yaml"
    code, _, _ = _run(["rubric", str(path)], capsys)
    assert code == ExitCode.OK and load_rubric(draft).template.resolve() == path.resolve()
    draft.write_text("# the TA's edits\n")
    code, printed, err = _run(["rubric", str(path)], capsys)
    assert code == ExitCode.USAGE and printed == ""
    assert err == f"grader: {draft} exists; pass --force to overwrite it\n"
    assert draft.read_text() == "# the TA's edits\n"
    code, _, _ = _run(["rubric", str(path), "--force"], capsys)
    assert code == ExitCode.OK and load_rubric(draft).homework == "HW3"


def test_a_template_without_a_training_loop_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _notebook(tmp_path / "T.ipynb", CNN_CELLS[:4])
    with pytest.raises(RubricError, match="no training loop"):
        derive_facts(path)
    code, printed, err = _run(["rubric", str(path)], capsys)
    assert code == ExitCode.USAGE and printed == ""
    assert err == (
        "grader: reference template T.ipynb: no training loop `for ... in range(n_epochs)` found\n"
    )
    assert not (tmp_path / "rubric.draft.yaml").exists()


def test_an_epoch_loop_that_calls_a_training_function(tmp_path: Path) -> None:
    cells = (
        *CNN_CELLS[:4],
        "def train_one_epoch(model, loader, optimizer):\n"
        "    for images, labels in loader:\n"
        "        optimizer.zero_grad()\n"
        "        F.cross_entropy(model(images), labels).backward()\n"
        "        optimizer.step()",
        "model = Net()\noptimizer = torch.optim.Adam(model.parameters(), lr=lr)\n"
        "for i in range(3):\n    print(i)\n"
        "for epoch in range(1, EPOCHS + 1):\n"
        "    train_one_epoch(model, train_loader, optimizer)",
    )
    facts = derive_facts(_notebook(tmp_path / "T.ipynb", cells))
    assert (facts.epochs_name, facts.epochs) == ("EPOCHS", 8)
