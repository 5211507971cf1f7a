"""The Ray executor grades a class to the same results as the local one, against a real local
Ray instance that this test starts (`ray start --head`) and stops."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.model.context import Context
from grader.model.results import Result, Status
from grader.pipeline.batch import grade_directory
from grader.pipeline.cache import environment_key
from grader.pipeline.executors.local import LocalExecutor
from grader.run.sandbox import unavailable_reason
from grader.run.slots import plan_slots

ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install -e '.[ray]'")
from grader.pipeline.executors.ray import RayPlan, ray_executor  # noqa: E402

# a Ray cluster started for the module, and a class graded on it and locally (minutes)
pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A one-node Ray cluster on this machine, as a course would start its head node."""
    port = _free_port()
    # short: Ray's Unix socket paths must fit in 107 bytes
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    subprocess.run(
        [
            str(RAY),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=4",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _class(folder: Path) -> Path:
    """Good, violating, crashing and hostile submissions, and a notebook with a differing .py
    twin."""
    ok = (FIXTURES / "HW3_tinyok.py").read_text()
    folder.mkdir()
    shutil.copy(FIXTURES / "HW3_tinyok.py", folder / "HW3_good.py")
    wide = ok.replace("nn.Linear(28 * 28, 512)", "nn.Linear(28 * 28, 640)").replace(
        "nn.Linear(512, 256)", "nn.Linear(640, 256)"
    )
    (folder / "HW3_wide.py").write_text(wide)
    (folder / "HW3_crash.py").write_text(
        ok.replace("model = Net()", "model = Net()\nraise ValueError('oops')")
    )
    (folder / "HW3_bomb.py").write_text(ok + "\nimport os\nwhile True:\n    os.fork()\n")
    (folder / "HW3_Report_good.pdf").write_bytes(b"%PDF-1.4")
    return folder


def _comparable(result: Result) -> tuple[object, ...]:
    # Whether a fork bomb's probe still got its record out before the run was stopped is a race on a
    # loaded machine: a failed run's run-time verdicts are not compared, its status and points are.
    failed = result.status in (Status.ERROR, Status.TIMEOUT)
    checks = tuple(
        (c.id, c.ok, c.stage) for c in result.checks if not (failed and c.stage == "run")
    )
    return (
        result.student,
        result.source,
        result.status,
        result.accuracy,
        result.score,
        result.bonus,
        result.flags,
        checks,
        result.report_pdf,
        result.cache_key,
    )


@pytest.mark.skipif(unavailable_reason() is not None, reason="needs bubblewrap")
def test_ray_grades_a_class_like_the_local_executor(
    tmp_path: Path, tiny_context: Context, ray_head: str
) -> None:
    context = dataclasses.replace(tiny_context, sandboxed=True)
    folder = _class(tmp_path / "class")
    local = grade_directory(
        folder, tmp_path / "local", context, LocalExecutor(plan_slots(2, 2, (), 1, 1))
    )
    seen: list[str] = []
    with ray_executor(ray_head, RayPlan(threads=1, per_gpu=1, use_gpus=True)) as executor:
        assert executor.device_kind == "cpu" and executor.width == 4  # 4 CPUs, 1 thread per job
        remote = grade_directory(
            folder,
            tmp_path / "ray",
            context,
            executor,
            lambda p: seen.append(p.result.student) if p.result else None,
        )

    assert [_comparable(r) for r in remote.results] == [_comparable(r) for r in local.results]
    by_name = {r.student: r for r in remote.results}
    assert by_name["good"].status is Status.GRADED and by_name["wide"].status is Status.VIOLATION
    assert by_name["crash"].status is Status.ERROR and "ValueError" in (
        by_name["crash"].reason or ""
    )
    assert sorted(seen) == ["bomb", "crash", "good", "wide"]
    for name in ("good", "wide"):  # the executed notebooks came back to the driver
        assert (tmp_path / "ray" / "executed" / f"{name}.ipynb").stat().st_size > 1000
        assert Result.read(tmp_path / "ray" / "results" / f"{name}.json") == by_name[name]
    assert (tmp_path / "ray" / "gradebook.csv").read_text().count("\n") == 5

    # The same OUT again: everything from the cache, nothing sent to Ray.
    with ray_executor(ray_head, RayPlan(threads=1, per_gpu=1, use_gpus=True)) as executor:
        again = grade_directory(folder, tmp_path / "ray", context, executor)
    assert again.cached == 4


def test_unreachable_cluster_and_infeasible_tasks_are_one_line_errors(ray_head: str) -> None:
    from grader.model.errors import GraderError

    with pytest.raises(
        GraderError, match="cannot reach the Ray cluster at 127.0.0.1:1 .*ray start --head"
    ):
        with ray_executor("127.0.0.1:1", RayPlan(1, 1, True)):
            pass
    with pytest.raises(GraderError, match="no Ray node has 64 CPUs"):
        with ray_executor(ray_head, RayPlan(64, 1, True)):
            pass


def test_a_node_with_other_versions_refuses_with_its_name(tiny_context: Context) -> None:
    from grader.pipeline.executors.ray import _node_problem

    assert _node_problem(tiny_context, environment_key("cpu")) is None
    problem = _node_problem(tiny_context, "0.0.1|3.9.0|2.0.0|0.15.0|cpu")
    assert problem is not None and problem.startswith(
        f"node {socket.gethostname()} has grader|python|torch|torchvision"
    )
    assert problem.endswith(
        "the batch was started with 0.0.1|3.9.0|2.0.0|0.15.0; install the same "
        "versions on every node"
    )


def test_a_task_reads_only_what_was_shipped_not_the_class_folder(
    tmp_path: Path, tiny_context: Context
) -> None:
    """A Ray task on another machine cannot see the folder the batch started from: every file
    grading
    reads (the notebook, its .py twin, the report PDF) travels as bytes (Submission.inputs())."""
    from pdfs import make_pdf

    from grader.intake.discover import discover
    from grader.pipeline.executors.local import Job
    from grader.pipeline.executors.ray import grade_shipped, shipped
    from grader.run.slots import Slot

    folder = tmp_path / "class"
    folder.mkdir()
    code = (FIXTURES / "HW3_tinyok.py").read_text()
    import nbformat

    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]),
        str(folder / "HW3_amy.ipynb"),
    )
    (folder / "HW3_amy.py").write_text(code + "\nprint('only in the twin')\n")
    make_pdf(folder / "HW3_Report_amy.pdf", ["Best accuracy: 91.5%"])
    sub = discover(folder, tiny_context.rubric.files).submissions[0]
    assert {p.name for p in sub.inputs()} == {"HW3_amy.ipynb", "HW3_amy.py", "HW3_Report_amy.pdf"}
    job, files = Job(sub, "key"), shipped(sub)
    shutil.rmtree(folder)  # what a node elsewhere sees of it
    graded = grade_shipped(
        job, files, dataclasses.replace(tiny_context, dataset=None), Slot(0, 1, None)
    )
    result = graded.result
    assert result.report_accuracy == 91.5 and result.report_pdf == "HW3_Report_amy.pdf", (
        result.notes
    )
    assert "script-differs" in result.flags and result.source == "HW3_amy.ipynb"
