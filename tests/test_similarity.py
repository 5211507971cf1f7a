"""Similar code across a class: two students who share their own changes are listed (formatting and
comments do not hide it), the template's own lines never make a pair, and the pair page escapes
code."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from grader.model.context import Context
from grader.model.pairs import load
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.run.slots import plan_slots

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = (ROOT / "reference" / "HW3_template.py").read_text()
OWN = """
# my improvements
import torch.optim as optim
model.fc1.weight.data.normal_(0, 0.01)
optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, epochs=10, steps_per_epoch=len(train_loader))
augment = transforms.RandomHorizontalFlip(p=0.5)
label_smoothing = 0.1
criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
note = "<script>alert('x')</script>"
print('setup done', note)
"""  # noqa: E501


def test_a_shared_solution_is_listed_and_the_template_is_not(
    tmp_path: Path, tiny_context: Context
) -> None:
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "HW3_amy.py").write_text(TEMPLATE + OWN)
    copied = OWN.replace("# my improvements", "# tuned by me").replace(
        "lr=3e-3, weight_decay=1e-2", "lr = 3e-3 , weight_decay = 1e-2"
    )
    (folder / "HW3_ben.py").write_text(TEMPLATE + copied)
    (folder / "HW3_cat.py").write_text(
        TEMPLATE
        + "\noptimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)\n"
        + "\n".join(f"extra_{i} = {i} * 2" for i in range(12))
        + "\n"
    )
    shutil.copy(ROOT / "reference" / "HW3_template.py", folder / "HW3_dan.py")
    # two untouched templates: no pair
    shutil.copy(ROOT / "reference" / "HW3_template.py", folder / "HW3_eve.py")
    out = tmp_path / "out"
    grade_directory(
        folder,
        out,
        dataclasses.replace(tiny_context, dataset=None),
        LocalExecutor(plan_slots(1, 2, (), 1, 1)),
    )
    pairs = load(out)
    assert [(p.a, p.b) for p in pairs] == [("amy", "ben")] and pairs[0].score == 1.0
    index = (out / "index.html").read_text()
    assert 'href="similar/amy--ben.html"' in index and "100% alike" in index
    page = (out / "similar" / "amy--ben.html").read_text()
    assert "AdamW" in page and "&lt;script&gt;" in page and "<script>alert" not in page
