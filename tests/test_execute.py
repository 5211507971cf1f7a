"""Real kernel runs on the tiny dataset: every fault becomes a status with a reason."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import nbformat
import pytest

from grader.intake.read import read_submission
from grader.model.context import Context
from grader.model.results import Result, Status
from grader.pipeline.grade import grade_in

FIXTURES = Path(__file__).parent / "fixtures"

DATA = """
import torch, torch.nn as nn, torch.nn.functional as F
from torchvision import datasets, transforms
test_data = datasets.FashionMNIST('/content/drive/MyDrive/data', train=False, download=True, transform=transforms.ToTensor())
test_loader = torch.utils.data.DataLoader(test_data, batch_size=16)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 512)
        self.fc2 = nn.Linear(512, 256)
        self.fc3 = nn.Linear(256, 10)
    def forward(self, x):
        x = x.view(-1, 28 * 28)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
model = Net()
"""  # noqa: E501
TEST_LOOP = """
correct = 0
for data, target in test_loader:
    pred = model(data).argmax(1)
    correct += (pred == target).sum().item()
print('Test Accuracy (Overall): %.2f%% (%d/%d)' % (100 * correct / len(test_data), correct, len(test_data)))
"""  # noqa: E501


def _grade(
    tmp_path: Path, context: Context, cells: list[str], name: str = "HW3_student.ipynb"
) -> Result:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path = tmp_path / name
    nbformat.write(notebook, str(path))
    return grade_in(
        tmp_path / "work",
        read_submission(path, "student"),
        context,
        keep_executed=tmp_path / "executed.ipynb",
    )


@pytest.mark.slow
def test_tiny_training_is_graded_from_the_students_own_test_pass(
    tmp_path: Path, tiny_context: Context
) -> None:
    sub = read_submission(FIXTURES / "HW3_tinyok.py", "tinyok")
    result = grade_in(
        tmp_path / "work", sub, tiny_context, keep_executed=tmp_path / "executed.ipynb"
    )
    assert result.status is Status.GRADED, result.reason
    assert result.measured_by == "student-test-pass"
    assert result.accuracy is not None and result.accuracy >= 90
    assert result.reported_accuracy == result.accuracy and not result.flags
    assert (result.score, result.bonus) == (60, 5)
    assert [(c.stage, c.ok) for c in result.checks] == [("static", True)] * 3 + [("run", True)] * 3
    executed = nbformat.read(str(tmp_path / "executed.ipynb"), as_version=4)
    assert len(executed.cells) == len(sub.cells)  # the probe's cells are not in the saved notebook
    assert "Test Accuracy (Overall)" in json.dumps(executed.cells[-1].outputs)
    # What the grader recorded of the training itself: the loss at each step, the rate, where epochs
    # began.
    curve = result.curve
    assert (
        curve is not None
        and curve["every"] == 1
        and len(curve["loss"]) == len(curve["lr"]) == 10 * 24
    )
    assert curve["loss"][-1] < curve["loss"][0] / 10 and set(curve["lr"]) == {0.001}
    assert curve["epochs"] == [24 * epoch for epoch in range(10)]
    # The validation pass after each epoch, scored here against the training labels; the final test
    # pass.
    assert [step for step, _ in curve["validation"]] == [24 * epoch for epoch in range(1, 11)]
    assert (
        curve["validation"][-1][1] >= curve["validation"][0][1] > 50
        and curve["validation"][-1][1] >= 90
    )
    assert curve["test"] == [[240, result.accuracy]]
    assert (
        sum(map(sum, result.confusion or ())) == 200
        and result.environment
        and "seed 0" in result.environment
    )


def test_printed_accuracy_is_not_believed(tmp_path: Path, run_context: Context) -> None:
    fake = TEST_LOOP.replace("print(", "print('Test Accuracy (Overall): 95.00% (9500/10000)')\n#")
    result = _grade(tmp_path, run_context, [DATA, fake])
    assert result.reported_accuracy == 95.0
    assert result.accuracy is not None and result.accuracy < 40  # an untrained model
    # The surest mistakes: wrong, sorted by the model's softmax, with the official file's pixels.
    wrong, dataset = result.wrong, run_context.dataset
    assert dataset is not None and len(wrong) == 10
    labels = dataset.test_labels()
    assert all(p != y == labels[i] for i, y, p, _ in wrong)
    assert [c for *_, c in wrong] == sorted((c for *_, c in wrong), reverse=True) and 0.1 < wrong[
        0
    ][3] <= 1
    assert result.wrong_images and base64.b64decode(result.wrong_images) == dataset.test_images(
        [i for i, *_ in wrong]
    )
    assert dataset.test_images([wrong[0][0]]) != dataset.test_images([wrong[1][0]])
    assert "reported-accuracy-mismatch" in result.flags and result.score == 0


def test_exception_names_cell_and_line_and_labels_the_accuracy_at_the_error(
    tmp_path: Path, run_context: Context
) -> None:
    result = _grade(
        tmp_path,
        run_context,
        [DATA, TEST_LOOP, "dataiter = iter(test_loader)\nimages, labels = dataiter.next()"],
    )
    assert result.status is Status.ERROR and result.score == 0
    assert (
        result.reason is not None
        and result.reason.startswith("code cell ")
        and (", line 2: AttributeError") in result.reason
    )
    # measured, but not as the student's
    assert result.accuracy is None and result.measured_by == "model-at-error"
    assert any("the model as it was at that point scores" in note for note in result.notes)


def test_timeout_names_the_cell(tmp_path: Path, run_context: Context) -> None:
    limits = dataclasses.replace(run_context.rubric.limits, total_timeout_s=20, cell_timeout_s=20)
    context = dataclasses.replace(
        run_context, rubric=dataclasses.replace(run_context.rubric, limits=limits)
    )
    result = _grade(tmp_path, context, ["x = 1", "import time\nwhile True:\n    time.sleep(0.1)"])
    assert result.status is Status.TIMEOUT
    assert (
        result.reason is not None
        and result.reason.startswith("code cell 2 (")
        and ("): still running") in result.reason
    )


SLOW_TRAINING = """
import time
train_data = datasets.FashionMNIST('data', train=True, download=True, transform=transforms.ToTensor())
train_loader = torch.utils.data.DataLoader(train_data, batch_size=100)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(1000):
    for data, target in train_loader:
        optimizer.zero_grad()
        F.cross_entropy(model(data), target).backward()
        optimizer.step()
    if epoch == 11:
        time.sleep(3600)  # the limit stops it here, between two epochs
"""  # noqa: E501


def test_a_run_stopped_at_the_time_limit_is_still_judged(
    tmp_path: Path, tiny_context: Context
) -> None:
    """The cell is interrupted and the probe exports: 1000 epochs were running, 12 ran before the
    limit (then it sleeps, so the interruption never lands inside an optimizer step: 20 s for 12
    epochs, 7 of which once took 8 s on a loaded machine)."""
    limits = dataclasses.replace(tiny_context.rubric.limits, total_timeout_s=60, cell_timeout_s=20)
    context = dataclasses.replace(
        tiny_context, rubric=dataclasses.replace(tiny_context.rubric, limits=limits)
    )
    result = _grade(tmp_path, context, [DATA, SLOW_TRAINING])
    run = {c.id: c for c in result.checks if c.stage == "run"}
    assert run["epochs"].ok is False and "passes over the training data" in run["epochs"].message, (
        run
    )
    assert (
        result.status is Status.VIOLATION
        and "the run also failed: code cell 2 (" in (result.reason or "")
        and "): still running" in (result.reason or "")
    )


def test_kernel_death_is_an_error_with_the_cell(tmp_path: Path, run_context: Context) -> None:
    result = _grade(tmp_path, run_context, ["x = 1", "import os\nos._exit(3)"])
    assert result.status is Status.ERROR
    assert (
        result.reason is not None
        and result.reason.startswith("code cell 2 (")
        and ("): the kernel died") in result.reason
    )


def test_colab_only_calls_do_not_break_the_run(tmp_path: Path, run_context: Context) -> None:
    colab = (
        "from google.colab import drive, "
        "files\ndrive.mount('/content/drive')\nfiles.download('model.pt')"
    )
    result = _grade(tmp_path, run_context, [colab, DATA, TEST_LOOP])
    assert result.status is Status.GRADED, result.reason


def test_pip_installs_never_reach_for_the_network(tmp_path: Path, run_context: Context) -> None:
    cells = [
        "!pip install numpy\n%pip install -q surely-absent-package-xyz==1.0",
        "import surely_absent_package_xyz",
    ]
    result = _grade(tmp_path, run_context, cells)
    printed = json.dumps(
        nbformat.read(str(tmp_path / "executed.ipynb"), as_version=4).cells[0].outputs
    )
    assert "pip install numpy: already installed; skipped" in printed
    assert (
        "surely-absent-package-xyz not in the grading environment" in printed
        and ("grader env --install") in printed
    )
    assert (
        result.reason is not None
        and result.reason.startswith("code cell 2 (")
        and ("), line 1: ModuleNotFoundError") in result.reason
    )
    assert result.duration_s < 60


def test_a_notebook_without_a_model(tmp_path: Path, run_context: Context) -> None:
    result = _grade(tmp_path, run_context, ["import numpy as np\nprint(np.arange(3))"])
    assert result.status is Status.ERROR
    assert result.reason is not None and "never built a model" in result.reason


def test_a_one_call_evaluation_is_the_students_test_pass(
    tmp_path: Path, run_context: Context
) -> None:
    direct = "with torch.no_grad():\n    out = model(test_data.data.float() / 255)\nprint('done')"
    result = _grade(tmp_path, run_context, [DATA, direct])
    assert result.status is Status.GRADED
    assert result.measured_by == "student-test-pass" and "no-test-pass" not in result.flags


def test_without_a_test_pass_the_grader_predicts_itself(
    tmp_path: Path, run_context: Context
) -> None:
    result = _grade(tmp_path, run_context, [DATA, "print('no time left to evaluate')"])
    assert result.status is Status.GRADED
    assert result.measured_by == "probe-pass" and "no-test-pass" in result.flags
    # the notebook's test dataset has its transform
    assert "assumed-preprocessing" not in result.flags
    assert any("the notebook's test dataset and its transform" in note for note in result.notes)


TRAIN_NORMALIZED = """
train_data = datasets.FashionMNIST('data', train=True, download=False, transform=transforms.ToTensor())
train_loader = torch.utils.data.DataLoader(train_data, batch_size=32, shuffle=True)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(3):
    for data, target in train_loader:
        opt.zero_grad()
        F.cross_entropy(model(1 - data), target).backward()
        opt.step()
"""  # noqa: E501


def test_preprocessing_inside_the_test_loop_is_honoured(
    tmp_path: Path, run_context: Context
) -> None:
    """The model was trained on inverted images and the test loop inverts too; a shuffled loader
    with worker processes still maps every output to its test index."""
    loop = TEST_LOOP.replace("model(data)", "model(1 - data)")
    loader = (
        "test_loader = torch.utils.data.DataLoader(test_data, batch_size=16, shuffle=True, "
        "num_workers=2)"
    )
    result = _grade(tmp_path, run_context, [DATA, TRAIN_NORMALIZED, loader, loop])
    assert result.status is Status.GRADED, result.reason
    assert result.measured_by == "student-test-pass"
    assert result.accuracy is not None and result.accuracy >= 90
    assert result.reported_accuracy == result.accuracy  # inverted images are still the test images


def test_what_a_notebook_writes_is_budgeted_where_it_enters(
    tmp_path: Path, run_context: Context
) -> None:
    """Display updates (outside nbclient's output path), the kernel's own stderr and an exception's
    message: each is cut at its budget, and the TA reads a reason of a few hundred characters."""
    limits = dataclasses.replace(run_context.rubric.limits, max_output_mb=1)
    context = dataclasses.replace(
        run_context, rubric=dataclasses.replace(run_context.rubric, limits=limits)
    )
    result = _grade(
        tmp_path,
        context,
        [
            "from IPython.display import display\nhandles = [display('x', display_id=True) for _ "
            "in range(6)]",
            "for h in handles:\n    h.update('y' * 3_000_000)",
            "import os\nos.write(2, b'e' * 3_000_000)",
            "raise ValueError('z' * 2_000_000)",
        ],
    )
    assert result.status is Status.ERROR and "output-truncated" in [str(f) for f in result.flags]
    assert (
        result.reason is not None and len(result.reason) < 600 and "characters cut" in result.reason
    )
    # six updates of 3 MB were not kept
    assert (tmp_path / "executed.ipynb").stat().st_size < 2 * 1024 * 1024
    (log,) = (tmp_path / "work").rglob("kernel.log")
    assert (
        log.stat().st_size < 1024 * 1024 + 200
        and b"more bytes the kernel wrote were not kept" in log.read_bytes()
    )
