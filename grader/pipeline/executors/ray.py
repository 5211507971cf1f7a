"""The Ray executor: each submission is a Ray task, on any node of a cluster, with a fraction of a
GPU. Results come back to this process, which writes them exactly as the local executor's.

Every node needs what a local batch needs: this grader installed (same versions), bubblewrap,
and the dataset (`grader data`). Ray is an optional extra: `pip install 'grader[ray]'`."""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from grader.intake.dataset import prepare
from grader.model.context import Context
from grader.model.errors import GraderError
from grader.model.results import failed_result
from grader.model.submission import Submission
from grader.pipeline.cache import environment_key
from grader.pipeline.executors.local import Graded, Job, Listener, grade_job
from grader.run.slots import Slot


@dataclass(frozen=True)
class RayPlan:
    """What each task asks Ray for."""

    threads: int  # CPUs per task: the rubric's torch threads
    per_gpu: int  # tasks sharing one GPU; each asks for 1/per_gpu of a GPU
    use_gpus: bool  # False: CPU only even where the cluster has GPUs


def _node_problem(context: Context, environment: str) -> str | None:
    """Why this node cannot grade like the one that started the batch, or None."""
    from grader.run.sandbox import unavailable_reason

    node = socket.gethostname()
    here = environment_key(environment.rsplit("|", 1)[-1])  # the key ends with the device kind
    if here != environment:
        return (
            f"node {node} has grader|python|torch|torchvision {here.rsplit('|', 1)[0]}, the "
            "batch was started with "
            f"{environment.rsplit('|', 1)[0]}; install the same versions on every node"
        )
    reason = unavailable_reason() if context.sandboxed else None
    return f"node {node} cannot sandbox: {reason}" if reason else None


def shipped(sub: Submission) -> dict[str, bytes]:
    """The bytes of every file grading reads, by name: nodes need not share a file system."""
    return {path.name: path.read_bytes() for path in sub.inputs()}


def grade_shipped(job: Job, files: dict[str, bytes], context: Context, slot: Slot) -> Graded:
    """Grade a job from the files shipped with it, written to a folder of this node's own."""
    with tempfile.TemporaryDirectory(prefix="grader-ray-") as folder:
        for name, data in files.items():
            (Path(folder) / Path(name).name).write_bytes(data)
        graded = grade_job(
            replace(job, submission=job.submission.moved(Path(folder))), context, slot
        )
    # Back on the driver, the result names the file as the TA submitted it.
    return Graded(job, graded.result, graded.executed)


def _on_node(
    job: Job, files: dict[str, bytes], context: Context, environment: str, threads: int
) -> Graded:
    """The Ray task: grade one submission on whichever node Ray chose."""
    import ray

    sub = job.submission
    problem = _node_problem(context, environment)
    if (
        problem is None
        and context.dataset is not None
        and not all(f.is_file() for f in context.dataset.files)
    ):
        try:
            choice = context.rubric.dataset
            context = replace(context, dataset=prepare(allow_download=False, choice=choice))
        except GraderError as exc:
            problem = f"node {socket.gethostname()}: {exc}"
    if problem is not None:
        return Graded(
            job,
            failed_result(sub.account, sub.path, problem, context.rubric.accuracy.max_points),
            None,
        )
    gpus = ray.get_gpu_ids()
    return grade_shipped(
        job, files, context, Slot(index=0, threads=threads, gpu=str(gpus[0]) if gpus else None)
    )


@dataclass(frozen=True)
class RayExecutor:
    """Sends each job to a connected Ray cluster as a task."""

    plan: RayPlan
    gpus: float  # GPUs in the cluster, when this batch uses them; else 0
    cpus: float

    @property
    def device_kind(self) -> str:
        return "gpu" if self.gpus else "cpu"

    @property
    def width(self) -> int:
        by_cpu = self.cpus // self.plan.threads
        return max(1, int(min(by_cpu, self.gpus * self.plan.per_gpu) if self.gpus else by_cpu))

    def run(self, jobs: Sequence[Job], context: Context, listener: Listener) -> None:
        import ray

        task = ray.remote(_on_node).options(
            num_cpus=self.plan.threads, num_gpus=1 / self.plan.per_gpu if self.gpus else 0
        )
        shared = ray.put(context)
        environment = environment_key(self.device_kind)
        pending: dict[Any, Job] = {}
        for job in jobs:
            ref = task.remote(job, shipped(job.submission), shared, environment, self.plan.threads)
            pending[ref] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    graded = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost node or worker costs only this job
                    reason = (
                        f"the Ray task failed: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:200]}"
                    )
                    graded = Graded(
                        job,
                        failed_result(
                            job.submission.account,
                            job.submission.path,
                            reason,
                            context.rubric.accuracy.max_points,
                        ),
                        None,
                    )
                listener.finished(graded)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when nothing listens at host:port."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit():
        return  # "auto", or a Ray Client URL: Ray resolves it itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise GraderError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); "
            f"start its head with `ray start --head --port {port}` or give its address"
        ) from None


def _use_token_if_present() -> None:
    """Send this machine's Ray token (~/.ray/auth_token, RAY_AUTH_TOKEN) to the cluster. Ray 2.6x
    does so by
    itself only for the address "auto"; with an explicit address the cluster would refuse us. The
    helper is
    Ray's own (private, so absent from Rays without token authentication, which need nothing)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@contextmanager
def ray_executor(address: str | None, plan: RayPlan) -> Iterator[RayExecutor]:
    """Connect to the Ray cluster at ``address`` (None: start a local one), yield the executor,
    disconnect."""
    try:
        import ray
    except ImportError:
        raise GraderError(
            "--executor ray needs Ray: pip install 'grader[ray]' (on every node)"
        ) from None
    if address:
        _check_reachable(address)
        _use_token_if_present()
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise GraderError(
            f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
            f"{str(exc).strip().splitlines()[0][:200]}; start it with `ray start "
            "--head`, and give this "
            "machine the cluster's token (~/.ray/auth_token, or RAY_AUTH_TOKEN)"
        ) from None
    try:
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0)) if plan.use_gpus else 0.0
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(
            n.get("CPU", 0) >= plan.threads and (not gpus or n.get("GPU", 0) > 0) for n in nodes
        ):
            raise GraderError(
                f"no Ray node has {plan.threads} CPUs{' and a GPU' if gpus else ''} "
                "for one submission; "
                "give the nodes more CPUs (`ray start --num-cpus N`) or lower the "
                "rubric's cpu_threads"
            )
        yield RayExecutor(plan, gpus, float(resources.get("CPU", 1)))
    finally:
        ray.shutdown()
