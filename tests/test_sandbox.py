"""Hostile notebooks inside the bubblewrap sandbox: each is contained and ends with a status and
reason."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import nbformat
import pytest
from sandboxing import MODEL, TEST_UID, adopting_orphans, left_behind, sandboxed_processes

from grader.intake.read import read_submission
from grader.model.context import Context
from grader.model.dataset import Dataset
from grader.model.results import Result, Status
from grader.model.rubric import FrozenFacts, Rubric, load_rubric
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.pipeline.grade import grade_in
from grader.run.cgroups import find_hierarchy
from grader.run.sandbox import unavailable_reason
from grader.run.slots import plan_slots
from grader.static.reference import derive_facts

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = [
    pytest.mark.skipif(
        unavailable_reason() is not None, reason=f"no sandbox here: {unavailable_reason()}"
    ),
    # what a test's sandboxes leave stays among its descendants (tests/sandboxing.py), so each
    # test checks its own leftovers while other tests grade beside it
    pytest.mark.usefixtures("adopting"),
]


@pytest.fixture(scope="module")
def sandboxed(rubric: Rubric, facts: FrozenFacts, tiny_dataset: Dataset) -> Context:
    limits = dataclasses.replace(
        rubric.limits,
        total_timeout_s=60,
        cell_timeout_s=60,
        memory_mb=3072,
        max_processes=64,
        max_output_mb=1,
    )
    return Context(
        dataclasses.replace(rubric, frozen=(), limits=limits), facts, tiny_dataset, sandboxed=True
    )


def _grade(tmp_path: Path, context: Context, *cells: str) -> Result:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    path = tmp_path / "submissions" / "HW3_mallory.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(notebook, str(path))
    return grade_in(
        tmp_path / "run",
        read_submission(path, "mallory"),
        context,
        keep_executed=tmp_path / "out" / "executed.ipynb",
    )


def _printed(tmp_path: Path) -> str:
    notebook = nbformat.read(str(tmp_path / "out" / "executed.ipynb"), as_version=4)
    return "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))


def test_no_escape_through_network_or_files(tmp_path: Path, sandboxed: Context) -> None:
    marker = f"escape-{uuid.uuid4().hex}"
    (tmp_path / "submissions" / "HW3_sibling.ipynb").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "submissions" / "HW3_sibling.ipynb").write_text("{}")
    (tmp_path / "out").mkdir()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(20)
    accepted: list[object] = []
    threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True).start()
    targets = [
        Path.home() / marker,
        Path("/tmp") / marker,
        tmp_path / "run" / marker,
        tmp_path / "out" / marker,
        tmp_path / "submissions" / marker,
    ]
    attack = f"""
import os, socket, urllib.request
def attempt(what, action):
    try:
        action()
        print(what, "SUCCEEDED")
    except Exception as exc:
        print(what, "failed:", type(exc).__name__)
attempt("grader's loopback", lambda: socket.create_connection(("127.0.0.1", {server.getsockname()[1]}), timeout=3))
attempt("internet", lambda: urllib.request.urlopen("http://1.1.1.1", timeout=3))
for target in {[str(t) for t in targets]!r}:
    attempt("write " + target, lambda: open(target, "w").write("x"))
attempt("write ../", lambda: open("../{marker}", "w").write("x"))
print("listing:", sorted(os.listdir("..")), os.listdir({str(tmp_path / "submissions")!r}) if os.path.exists({str(tmp_path / "submissions")!r}) else "no submissions dir")
print("home:", os.path.expanduser("~") == os.getcwd(), "uid:", os.getuid())
"""  # noqa: E501
    result = _grade(tmp_path, sandboxed, MODEL, attack)
    printed = _printed(tmp_path)
    assert result.status is Status.GRADED, result.reason
    # /tmp inside is private
    assert "SUCCEEDED" not in printed.replace(f"write /tmp/{marker} SUCCEEDED", ""), printed
    assert "grader's loopback failed" in printed and "internet failed" in printed
    assert not accepted or accepted == [None]
    for target in targets:
        assert not target.exists(), target
    # its work dir is RAM, not the host
    assert not any(p.name == marker for p in (tmp_path / "run").rglob("*"))
    assert "HW3_sibling" not in printed and "no submissions dir" in printed
    server.close()


def _accept(server: socket.socket) -> object:
    try:
        return server.accept()
    except OSError:
        return None


def test_memory_bomb_hits_the_limit(tmp_path: Path, sandboxed: Context) -> None:
    result = _grade(
        tmp_path,
        sandboxed,
        MODEL,
        "hog = []\nwhile True:\n    hog.append(bytearray(200 * 1024 * 1024))",
    )
    assert result.status is Status.ERROR
    assert (
        result.reason is not None
        and result.reason.startswith("code cell 2 (")
        and ("), line 3: MemoryError") in result.reason
    )
    assert "memory limit of 3072 MB" in result.reason


def test_bounded_fork_bomb_is_stopped_and_leaves_nothing(
    tmp_path: Path, sandboxed: Context
) -> None:
    bomb = (
        "import os, time\nchildren = 0\nfor i in range(400):\n    if os.fork() == 0:\n        "
        "time.sleep(300)\n        os._exit(0)\n    children += 1"
    )
    result = _grade(tmp_path, sandboxed, MODEL, bomb)
    assert result.status is Status.ERROR
    assert result.reason is not None and "BlockingIOError" in result.reason
    assert left_behind() == []


@pytest.mark.parametrize("crash", ["import ctypes\nctypes.string_at(0)", "import os\nos._exit(7)"])
def test_crashes_are_errors_naming_the_cell(tmp_path: Path, sandboxed: Context, crash: str) -> None:
    result = _grade(tmp_path, sandboxed, MODEL, crash)
    assert result.status is Status.ERROR
    assert (
        result.reason is not None
        and result.reason.startswith("code cell 2 (")
        and ("): the kernel died") in result.reason
    )


def test_infinite_loop_times_out_and_leaves_nothing(tmp_path: Path, sandboxed: Context) -> None:
    # the loop hits the cell limit; the first cell (importing torch) has room on a loaded machine
    limits = dataclasses.replace(sandboxed.rubric.limits, total_timeout_s=60, cell_timeout_s=20)
    context = dataclasses.replace(
        sandboxed, rubric=dataclasses.replace(sandboxed.rubric, limits=limits)
    )
    result = _grade(
        tmp_path,
        context,
        MODEL,
        "import subprocess\nsubprocess.Popen(['sleep', '600'])\nwhile True:\n    pass",
    )
    assert result.status is Status.TIMEOUT
    assert (
        result.reason is not None
        and result.reason.startswith("code cell 2 (")
        and ("): still running") in result.reason
    )
    assert left_behind() == []


def test_a_flood_of_output_is_cut(tmp_path: Path, sandboxed: Context) -> None:
    flood = "line = 'x' * 1000\nfor i in range(200_000):\n    print(line)\nprint('done')"
    result = _grade(tmp_path, sandboxed, MODEL, flood)  # 200 MB printed
    assert "output-truncated" in result.flags
    assert (tmp_path / "out" / "executed.ipynb").stat().st_size < 3 * 1024 * 1024


def test_patched_comparisons_cannot_raise_the_measured_accuracy(
    tmp_path: Path, sandboxed: Context
) -> None:
    cheat = """
torch.Tensor.eq = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
torch.Tensor.__eq__ = torch.Tensor.eq
correct = 0
for data, target in test_loader:
    correct += (model(data).argmax(1) == target).sum().item()
print('Test Accuracy (Overall): %.2f%%' % (100 * correct / len(test_data)))
"""
    result = _grade(tmp_path, sandboxed, MODEL, cheat)
    assert result.reported_accuracy == 100.0
    assert result.accuracy is not None and result.accuracy < 50
    assert "reported-accuracy-mismatch" in result.flags


def test_hidden_labels_keep_the_truth_out_of_the_kernel(tmp_path: Path, sandboxed: Context) -> None:
    context = dataclasses.replace(
        sandboxed, rubric=dataclasses.replace(sandboxed.rubric, hide_test_labels=True)
    )
    peek = "print('labels seen:', test_data.targets[:40].tolist())"
    result = _grade(tmp_path, context, MODEL, peek)
    seen = [int(x) for x in _printed(tmp_path).split("labels seen: [")[1].split("]")[0].split(",")]
    assert seen != list(context.dataset.test_labels()[:40])  # type: ignore[union-attr]
    assert sorted(seen) != seen and result.accuracy is not None


def test_one_hostile_submission_costs_the_others_nothing(
    tmp_path: Path, sandboxed: Context, tiny_context: Context
) -> None:
    """Good, violating, crashing and hostile submissions with --jobs 2: the good ones as alone."""
    ok = (FIXTURES / "HW3_tinyok.py").read_text()
    late = ok.replace("lr=0.001", "lr=0.0000003")  # barely trained: an accuracy that is not 100%
    alone = {
        name: grade_in(tmp_path / f"alone-{name}", read_submission(path, name), tiny_context)
        for name, path in (
            ("alice", FIXTURES / "HW3_tinyok.py"),
            ("bea", _write(tmp_path / "HW3_bea.py", late)),
        )
    }
    batch = tmp_path / "class"
    batch.mkdir()
    shutil.copy(FIXTURES / "HW3_tinyok.py", batch / "HW3_alice.py")
    (batch / "HW3_bea.py").write_text(late)
    (batch / "HW3_mallory.py").write_text(ok + "\nimport os\nwhile True:\n    os.fork()\n")
    (batch / "HW3_wide.py").write_text(
        ok.replace("nn.Linear(256, 10)", "nn.Linear(256, 10)\n        self.fc4 = nn.Linear(10, 10)")
    )
    (batch / "HW3_crash.py").write_text(
        ok.replace("model = Net()", "model = Net()\nraise RuntimeError('CUDA out of memory')")
    )
    context = dataclasses.replace(tiny_context, sandboxed=True)
    results = {
        r.student: r
        for r in grade_directory(
            batch, tmp_path / "out", context, LocalExecutor(plan_slots(2, 2, (), 1, 1))
        ).results
    }
    for name in ("alice", "bea"):
        assert (
            results[name].status is Status.GRADED and results[name].accuracy == alone[name].accuracy
        )
    assert alone["alice"].accuracy != alone["bea"].accuracy  # two different good results, each kept
    assert (
        results["mallory"].status is Status.ERROR
        and results["mallory"].measured_by == "model-at-error"
    )
    assert results["wide"].status is Status.VIOLATION
    assert results["crash"].status is Status.ERROR and "CUDA out of memory" in (
        results["crash"].reason or ""
    )
    assert left_behind() == []


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_batch_killed_with_sigkill_resumes_without_losing_or_doubling(
    tmp_path: Path, tiny_dataset: Dataset
) -> None:
    import signal
    import sys
    import time

    batch = tmp_path / "class"
    batch.mkdir()
    for account in ("ann", "ben", "cid"):
        shutil.copy(FIXTURES / "HW3_tinyok.py", batch / f"HW3_{account}.py")
    out = tmp_path / "out"
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.intake.dataset import Dataset
from grader.pipeline.grade import Context
from grader.static.reference import derive_facts
from grader.model.rubric import load_rubric
from grader.run.slots import plan_slots
rubric = load_rubric(Path({str(Path(__file__).parent.parent / "rubric.yaml")!r}))
context = Context(rubric, derive_facts(rubric.template), Dataset(Path({str(tiny_dataset.root)!r})), sandboxed=True)
grade_directory(Path({str(batch)!r}), Path({str(out)!r}), context, LocalExecutor(plan_slots(1, 2, (), 1, 1)))
"""  # noqa: E501
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 240
    while not list((out / "results").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)  # power loss in the middle of the batch
    child.wait()
    finished = {p.stem for p in (out / "results").glob("*.json")}
    assert 1 <= len(finished) < 3
    # bwrap's --die-with-parent kills them; on a loaded machine that takes a moment
    assert left_behind() == []  # its sandboxes died with it

    rubric = load_rubric(Path(__file__).parent.parent / "rubric.yaml")
    context = Context(rubric, derive_facts(rubric.template), tiny_dataset, sandboxed=True)
    again = grade_directory(batch, out, context, LocalExecutor(plan_slots(1, 2, (), 1, 1)))
    assert again.cached == len(finished) and [r.student for r in again.results] == [
        "ann",
        "ben",
        "cid",
    ]
    hierarchy = find_hierarchy()[0]
    if hierarchy is not None:  # the killed grader's cgroups were swept by this one
        assert not [f for base in hierarchy.bases for f in base.glob(f"job-{child.pid}-*")]
    rows = (out / "gradebook.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == ["ann", "ben", "cid"]
    assert sorted(p.name for p in (out / "results").iterdir()) == [
        "ann.json",
        "ben.json",
        "cid.json",
    ]
    started = time.monotonic()
    third = grade_directory(batch, out, context, LocalExecutor(plan_slots(1, 2, (), 1, 1)))
    assert third.cached == 3 and time.monotonic() - started < 5


def test_a_sandbox_dies_with_its_grader_even_when_the_grader_dies_while_it_starts() -> None:
    import sys
    import time

    from grader.run.sandbox import die_with

    # The grader is already gone when the guard looks (here: a parent pid that is not the parent).
    late = subprocess.run([*die_with(1), "sleep", "600"], timeout=30)
    assert late.returncode == 125
    # The grader dies after the guard armed the signal: what the guard started dies with it.
    parent = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys\nfrom grader.run.sandbox import die_with\n"
            "child = subprocess.Popen([*die_with(os.getpid()), 'sleep', '600'])\n"
            "print(child.pid, flush=True)\nimport time; time.sleep(1)\nos._exit(0)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    orphan = int(parent.stdout.split()[0])
    gone = time.monotonic() + 10
    while Path(f"/proc/{orphan}").exists() and time.monotonic() < gone:
        time.sleep(0.1)
    state = (
        Path(f"/proc/{orphan}/stat").read_text().split()[2]
        if Path(f"/proc/{orphan}").exists()
        else "gone"
    )
    assert state in ("gone", "Z")


def test_a_sandbox_dies_with_its_grader_even_when_the_grader_dies_while_bwrap_sets_it_up(
    tmp_path: Path,
) -> None:
    """bwrap's namespace init arms --die-with-parent only after its mounts: a grader killed in
    between
    left a sandbox running forever (CI, a SIGKILLed batch). The lifeline ends it whenever it
    dies."""
    import sys
    import time

    script = (
        "import os, subprocess, sys, time\nfrom pathlib import Path\n"
        "from grader.run.sandbox import Sandbox, SandboxLimits, command, pass_fds, "
        "prepare_kernel_dir, python_paths\n"
        f"box = Sandbox(Path({str(tmp_path)!r}) / sys.argv[2], python_paths(), "
        f"SandboxLimits(2000, 64, 100, 64), uid={TEST_UID})\nprepare_kernel_dir(box, ())\n"
        "subprocess.Popen([*command(box, {}), 'sleep', '600'], pass_fds=pass_fds())\n"
        "time.sleep(float(sys.argv[1]))\nos._exit(0)\n"
    )
    from grader.run.sandbox import end_orphans

    # as without a test around it: an orphaned sandbox becomes init's child
    with adopting_orphans(False):
        # some land while bwrap mounts
        for n, delay in enumerate((0.002, 0.01, 0.03, 0.06, 0.15, 0.5) * 2):
            subprocess.run(
                [sys.executable, "-c", script, str(delay), f"box{n}"], check=True, timeout=60
            )
        time.sleep(3)
        # One killed within microseconds of bwrap's clone waits forever for its other half,
        # before anything runs inside; the next grader ends it before its first run.
        end_orphans()
    assert left_behind(tmp_path, within=15) == []


def test_a_job_uid_without_a_passwd_entry_still_has_a_user_name(tmp_path: Path) -> None:
    """Every parallel job gets its own uid, which /etc/passwd does not list; torch 2.11 asks
    getpass.getuser() for its cache folder, and that failed every job but the first on an H200."""
    import sys

    from grader.run.sandbox import Sandbox, SandboxLimits, command, prepare_kernel_dir, python_paths

    box = Sandbox(tmp_path / "box", python_paths(), SandboxLimits(2000, 64, 100, 64), uid=TEST_UID)
    prepare_kernel_dir(box, ())
    done = subprocess.run(
        [*command(box, {}), sys.executable, "-c", "import getpass; print(getpass.getuser())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "student", done.stderr


def test_the_trusted_evaluator_runs_in_a_sandbox_of_its_own(
    tmp_path: Path, sandboxed: Context
) -> None:
    """As another user than any submission's, without network or a writable host folder; a capture
    that is not one is refused, and nothing is left running."""
    import time

    from grader.probe.capture import CAPTURE_VERSION
    from grader.run.launch import start_evaluator
    from grader.run.sandbox import EVALUATOR_UID

    evaluator = start_evaluator(sandboxed, tmp_path, None)
    try:
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while time.monotonic() < deadline and not any("python" in p for p in seen):
            seen = [p for p in sandboxed_processes() if p.startswith(f"{EVALUATOR_UID} ")]
            time.sleep(0.2)
        assert any("python" in p for p in seen), sandboxed_processes()
        answer = evaluator.finish(b'{"version": %d}\n' % CAPTURE_VERSION)
    finally:
        evaluator.close()
    assert (
        answer.output is not None
        and "refused" in answer.output
        and "the capture has no graph" in answer.output
    )
    assert list((tmp_path / "evaluator").iterdir()) == []
    assert left_behind() == []
