"""Run one submission's notebook for grading: its data view, its sandbox and limits, then the
kernel."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grader.intake.dataset import kernel_view, label_copies
from grader.model.context import Context
from grader.model.dataset import KernelView
from grader.model.errors import GraderError
from grader.model.results import ExecutionRecord
from grader.model.submission import Submission
from grader.run.evaluate import Evaluation, Evaluator, Warm, pool
from grader.run.gpus import Gpu, find as find_gpu
from grader.run.sandbox import Sandbox
from grader.run.slots import MAX_RUNNING, Slot, claim_index


@dataclass(frozen=True)
class Launched:
    """What a run gave: the kernel's record and the data view it ran on (how its test set maps on
    the official one)."""

    record: ExecutionRecord
    view: KernelView


def _gpu(slot: Slot | None) -> Gpu | None:
    """The physical GPU of the slot; a slot naming a GPU this machine does not have is a setup
    error."""
    if slot is None or slot.gpu is None:
        return None
    gpu = find_gpu(slot.gpu)
    if gpu is None:
        raise GraderError(
            f"GPU {slot.gpu} is not on this machine (no such entry under /proc/driver/nvidia/gpus)"
        )
    return gpu


def launch(
    sub: Submission, context: Context, rundir: Path, slot: Slot | None, seed: int | None
) -> Launched:
    """Execute the notebook in a kernel under ``rundir`` (sandboxed when the context says so);
    ``seed`` replaces the rubric's (a borderline result's re-run, scoring/seeds.py)."""
    if slot is not None or not context.sandboxed:
        return _launch(sub, context, rundir, slot, seed, slot.index if slot else 0)
    # A run outside a batch claims a machine-wide number too, so that its sandbox's user is its own
    # and its process limit counts its processes alone (two `grader check --run` at once).
    with claim_index() as index:
        return _launch(sub, context, rundir, slot, seed, index)


def _launch(
    sub: Submission,
    context: Context,
    rundir: Path,
    slot: Slot | None,
    seed: int | None,
    index: int,
) -> Launched:
    # Imported here so the static path (`grader check FILE`) never loads nbclient or the kernel
    # machinery.
    from grader.run.cgroups import find_hierarchy
    from grader.run.execute import RunPlan, execute
    from grader.run.sandbox import SANDBOX_UID, Sandbox, SandboxLimits, python_paths, visible_roots

    assert context.dataset is not None
    rubric, limits = context.rubric, context.rubric.limits
    view = kernel_view(context.dataset, rundir / "data", rubric.hide_test_labels)
    sandbox = None
    if context.sandboxed:
        readonly = python_paths() + view.dataset.files
        masked = (
            label_copies(context.dataset, visible_roots(readonly))
            if rubric.hide_test_labels
            else ()
        )
        sandbox = Sandbox(
            kernel_dir=rundir / "kernel",
            readonly=readonly,
            limits=SandboxLimits(
                limits.memory_mb, limits.max_processes, limits.max_file_mb, limits.scratch_mb
            ),
            gpu=_gpu(slot),
            uid=SANDBOX_UID - index,
            cores=slot.cores if slot else (),
            masked=masked,
        )
    plan = RunPlan(
        rundir=rundir,
        dataset=view.dataset,
        seed=rubric.seed if seed is None else seed,
        cell_timeout_s=limits.cell_timeout_s,
        total_timeout_s=limits.total_timeout_s,
        sandbox=sandbox,
        max_output_bytes=limits.max_output_mb * 1024 * 1024,
        slot=slot,
        cgroups=find_hierarchy()[0] if sandbox is not None else None,
        gpu_memory_mb=limits.per_gpu_memory_mb if slot and slot.gpu else 0,
    )
    return Launched(execute(sub, plan), view)


def start_evaluator(context: Context, rundir: Path, slot: Slot | None) -> Evaluation:
    """The trusted evaluator for this run (run/evaluate.py), started now so that its imports overlap
    the notebook's run. A sandboxed run's evaluator is sandboxed too, apart from the kernel's: it
    sees the interpreter and the official test images, no submission's files, no network, and
    writes nothing that outlives it (it deserializes a graph the student's process wrote). In a
    batch (``warm_evaluators``) it is a fork of the slot's warm server, started on first use."""
    from grader.model.dataset import TEST_IMAGES, TRAIN_IMAGES
    from grader.run.sandbox import command, pass_fds
    from grader.static.layers import widest_way

    assert context.dataset is not None
    images, train = context.dataset.raw / TEST_IMAGES, context.dataset.raw / TRAIN_IMAGES
    spec = context.dataset.spec
    widest = widest_way(context.facts.weight_layers, spec)  # the template's, never the capture's
    if not context.sandboxed:
        return Evaluator(images, train_images=train, spec=spec, widest=widest)
    cores = slot.cores if slot else ()

    def once() -> Evaluator:
        sandbox = _evaluator_sandbox(
            context, rundir / "evaluator", slot.index if slot else 0, cores
        )
        return Evaluator(
            images, command(sandbox, {}), pass_fds(), train_images=train, spec=spec, widest=widest
        )

    def warm() -> Warm:
        holds = contextlib.ExitStack()
        try:
            # its own numbers, apart from the jobs' (whose number picks their cores)
            index = holds.enter_context(claim_index(WARM_LOCKS))
            folder = Path(holds.enter_context(tempfile.TemporaryDirectory(prefix="grader-eval-")))
            sandbox = _evaluator_sandbox(context, folder, MAX_RUNNING + index, cores)
            return Warm(
                images,
                command(sandbox, {}),
                pass_fds(),
                train,
                holds,
                sandbox.uid,
                spec=spec,
                widest=widest,
            )
        except BaseException:
            holds.close()
            raise

    batch = pool()
    if batch is None or os.geteuid() != 0:  # without root, the sandbox's user owns its folders
        return once()
    key = (images, train, spec, widest, cores, context.rubric.limits.memory_mb)
    return batch.take(key, warm, once)


# the warm servers' machine-wide numbers (run/slots.py claim_index); their users come after the
# one-shot evaluators'
WARM_LOCKS = Path(tempfile.gettempdir()) / f"grader-warm-evaluators-{os.geteuid()}"


def _evaluator_sandbox(
    context: Context, folder: Path, index: int, cores: tuple[int, ...]
) -> Sandbox:
    """The evaluator's sandbox: the interpreter and the official images, read-only; ``folder``
    (root's, the evaluator writes nothing there) as its kernel folder; its own user by ``index``."""
    from grader.model.dataset import TEST_IMAGES, TRAIN_IMAGES
    from grader.run.sandbox import EVALUATOR_UID, SandboxLimits, python_paths

    assert context.dataset is not None
    images, train = context.dataset.raw / TEST_IMAGES, context.dataset.raw / TRAIN_IMAGES
    limits = context.rubric.limits
    folder.mkdir(parents=True, exist_ok=True)
    return Sandbox(
        kernel_dir=folder,
        readonly=python_paths() + (images, train),
        limits=SandboxLimits(limits.memory_mb, 256, 1, 0),  # writes nothing anywhere
        uid=EVALUATOR_UID - index,
        cores=cores,
    )
