"""The warm evaluator of a batch (run/evaluate.py ``Warm``, grader/evaluator/serve.py): the same
answer as a fresh evaluator, and a capture that took over its child cannot reach the next
student's evaluation: what it leaves running is ended, the server's memory is out of its reach,
nothing is writable, and a server it kills costs only its own evaluation a second run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_evaluator import Net, _capture

from grader.model.context import Context
from grader.model.dataset import TEST_IMAGES, Dataset
from grader.model.rubric import FrozenFacts, Rubric
from grader.run.evaluate import Evaluator, Pool, Warm
from grader.run.launch import WARM_LOCKS, _evaluator_sandbox, start_evaluator
from grader.run.sandbox import EVALUATOR_UID, command, pass_fds, unavailable_reason
from grader.run.slots import MAX_RUNNING, claim_index

pytestmark = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"no sandbox here: {unavailable_reason()}"
)

GRADER_PARENT = Path(__file__).resolve().parents[1]
# A server whose children do what a capture that took over the evaluator could: the capture names
# the deed.
COMPROMISED = f"""
import os, signal, socket, sys, time
sys.path.insert(0, {str(GRADER_PARENT)!r})
from grader.evaluator.serve import serve

def work():
    deed = sys.stdin.buffer.read().decode()
    if deed == "daemon":  # a process that outlives the child, in a session of its own
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(3600)
            os._exit(0)
        time.sleep(0.2)
        print("left one behind")
    elif deed == "look":  # what of this user runs beside it
        mine = []
        for pid in os.listdir("/proc"):
            try:
                status = open(f"/proc/{{pid}}/status").read()
            except OSError:
                continue
            if pid.isdigit() and f"Uid:\\t{{os.getuid()}}\\t" in status:
                mine.append(int(pid))
        print(sorted(set(mine) - {{os.getpid(), os.getppid()}}))
    elif deed == "reach":  # the server's memory, and somewhere to leave a file
        found = []
        try:
            open(f"/proc/{{os.getppid()}}/mem", "rb").close()  # the open is ptrace's check
            found.append("opened the server's memory")
        except OSError:
            pass
        for folder in ("/tmp", "/dev/shm", "/content", os.path.dirname(sys.argv[-1])):
            try:
                open(os.path.join(folder, "left"), "w").close()
                found.append(folder)
            except OSError:
                pass
        print(found)
    elif deed == "kill":
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(1)
    elif deed == "limit":  # the server's data limit lowered, which its next children would inherit
        import resource
        resource.prlimit(os.getppid(), resource.RLIMIT_DATA, (200 << 20, 200 << 20))
        print("lowered")
    elif deed == "slow":  # the server made the machine's least urgent work
        os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)
        print("lowered")
    elif deed == "io":  # the server's disk reads made the idle class's (x86-64's ioprio_set)
        import ctypes
        print("lowered" if ctypes.CDLL(None).syscall(251, 1, os.getppid(), 3 << 13) == 0 else "")
    elif deed == "group":  # the session's scheduler group made the least urgent (autogroups)
        import ctypes
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable again: its own /proc files are its own
        try:
            with open(f"/proc/{{os.getppid()}}/autogroup", "w") as group:
                group.write("19")
            print("lowered")
        except OSError:
            with open("/proc/self/autogroup", "w") as group:  # its own session's, not the server's
                group.write("19")
            print("apart")
    elif deed == "shm":  # a System V segment, which outlives its process
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print("lowered" if libc.shmget(0, 64 << 20, 0o1600) >= 0 else "no segment")

argv = sys.argv[1:]
serve(socket.socket(fileno=int(argv[1])), work, argv[2] == "--sweep")
"""


@pytest.fixture(scope="module")
def sandboxed(rubric: Rubric, facts: FrozenFacts, tiny_dataset: Dataset) -> Context:
    limits = dataclasses.replace(rubric.limits, memory_mb=3072)
    return Context(dataclasses.replace(rubric, limits=limits), facts, tiny_dataset, sandboxed=True)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        state = next((ln for ln in status.splitlines() if ln.startswith("State:")), "")
        if entry.name.isdigit() and f"Uid:\t{uid}\t" in status and "zombie" not in state:
            found.append(int(entry.name))
    return found


@contextlib.contextmanager
def _compromised(context: Context, folder: Path) -> Iterator[tuple[Warm, int]]:
    holds = contextlib.ExitStack()
    index = holds.enter_context(claim_index(WARM_LOCKS))
    sandbox = _evaluator_sandbox(context, folder, MAX_RUNNING + index, ())
    assert context.dataset is not None
    images = context.dataset.raw / TEST_IMAGES
    warm = Warm(
        images, command(sandbox, {}), pass_fds(), None, holds, sandbox.uid, ("-c", COMPROMISED)
    )
    try:
        yield warm, sandbox.uid
    finally:
        warm.close()
    deadline = time.monotonic() + 10
    while _processes_of(sandbox.uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(sandbox.uid) == []


def _said(warm: Warm, deed: str) -> str:
    found = warm.evaluate(deed.encode())
    assert found is not None and found.problem is None, found
    assert found.output is not None
    return found.output.strip()


def test_what_a_child_leaves_running_is_ended_before_the_next_capture(
    sandboxed: Context, tmp_path: Path
) -> None:
    with _compromised(sandboxed, tmp_path / "evaluator") as (warm, uid):
        assert _said(warm, "daemon") == "left one behind" and warm.usable
        assert _processes_of(uid) == [warm_pid := _processes_of(uid)[0]]  # the server alone
        assert _said(warm, "look") == "[]"
        assert _said(warm, "reach") == "[]"  # no memory of the server, no writable folder
        assert _processes_of(uid) == [warm_pid] and warm.served == 3 and warm.usable
    assert list((tmp_path / "evaluator").iterdir()) == []


@pytest.mark.parametrize(
    "deed", ["limit", "slow", "shm", *(["io"] if platform.machine() == "x86_64" else [])]
)
def test_a_server_a_child_changed_is_not_lent_again(
    sandboxed: Context, tmp_path: Path, deed: str
) -> None:
    """Limits, priority and IPC objects a process of the server's user may change or leave: the
    server says it is not clean, and ends with its sandbox."""
    with _compromised(sandboxed, tmp_path / "evaluator") as (warm, _):
        assert _said(warm, "look") == "[]" and warm.usable
        assert _said(warm, deed) == "lowered"
        assert not warm.usable and warm.process.poll() is not None


def test_a_child_is_a_session_of_its_own(sandboxed: Context, tmp_path: Path) -> None:
    """Its session's scheduler group is not the server's (a child that lowered its own made the
    next children 36 times slower when they shared it)."""
    if not Path("/proc/self/autogroup").exists():
        pytest.skip("no scheduler autogroups in this kernel")
    with _compromised(sandboxed, tmp_path / "evaluator") as (warm, _):
        assert _said(warm, "group") == "apart" and warm.usable
        assert _said(warm, "look") == "[]" and warm.usable


def test_a_child_that_kills_its_server_is_evaluated_again_alone(
    sandboxed: Context, tmp_path: Path
) -> None:
    """Its own evaluation runs once more, in a fresh evaluator; the next run gets a new server."""
    assert sandboxed.dataset is not None
    images = sandboxed.dataset.raw / TEST_IMAGES
    fresh: list[Evaluator] = []

    def once() -> Evaluator:
        sandbox = _evaluator_sandbox(sandboxed, tmp_path / "once", 0, ())
        fresh.append(Evaluator(images, command(sandbox, {}), pass_fds()))
        return fresh[-1]

    pool = Pool()
    with _compromised(sandboxed, tmp_path / "evaluator") as (warm, _):
        evaluation = pool.take(("key",), lambda: warm, once)
        found = evaluation.finish(b"kill")
        evaluation.close()
        assert not warm.usable and len(fresh) == 1
        assert found.output is not None and "refused" in json.loads(found.output)
        started: list[int] = []
        pool.take(("key",), lambda: started.append(1) or warm, once).close()
        assert started == [1]  # the dead server was not lent again
    pool.close()


@pytest.mark.slow
def test_a_warm_server_answers_every_capture_as_a_fresh_evaluator_does(
    sandboxed: Context, tiny_dataset: Dataset, tmp_path: Path
) -> None:
    """The batch's pool: two students' captures on one server, each answered as by its own
    process (the secret sample of training images drawn afresh); the server ends with the pool."""
    from grader.evaluator.key import read_images
    from grader.run.evaluate import warm_evaluators

    images = read_images(tiny_dataset.raw / TEST_IMAGES)
    inputs = ((images.float() / 255 - 0.286) / 0.353).reshape(-1, 1, 28, 28)
    torch.manual_seed(0)
    captures = [_capture(Net(), inputs), _capture(Net(), inputs)]
    alone = start_evaluator(dataclasses.replace(sandboxed, sandboxed=False), tmp_path, None)
    try:
        expected = [json.loads(alone.finish(captures[0]).output or "null")]
    finally:
        alone.close()
    with warm_evaluators() as pool:
        answers = []
        for capture in captures:
            evaluation = start_evaluator(sandboxed, tmp_path, None)
            try:
                answers.append(json.loads(evaluation.finish(capture).output or "null"))
            finally:
                evaluation.close()
        servers = list(pool._all)
    samples = [answer.pop("train_sample")["indices"] for answer in [*answers, *expected]]
    assert answers[0] == expected[0] and answers[1]["classes"] != answers[0]["classes"]
    assert samples[0] != samples[1]  # each child draws its own secret sample
    assert len(servers) == 1 and servers[0].served == 2
    assert servers[0].uid <= EVALUATOR_UID - MAX_RUNNING  # no job's or one-shot evaluator's user
    uid = servers[0].uid
    deadline = time.monotonic() + 10
    while _processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_of(uid) == []  # none left once the pool ended
