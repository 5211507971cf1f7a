"""Run one submission, cell by cell, in a real Jupyter kernel (a child process) -> ExecutionRecord.

The only place that runs student code. The grader's process drives the kernel with nbclient
and reads back one plain file; it never imports what the notebook defined.

The run folder is the grader's: ``kernel/`` is the only part student code can write (the kernel's
sockets, the probe's file); the executed notebook and the kernel's log are written beside it,
where student code never had access. Sandboxed, the notebook works in RAM-backed scratch space.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from grader.model.dataset import Dataset
from grader.model.findings import Finding, Flag
from grader.model.record import read_probe, read_untrusted
from grader.model.results import ExecutionRecord, Status, cut
from grader.model.submission import Submission
from grader.run import cgroups
from grader.run.sandbox import (
    Sandbox,
    command,
    end_namespaces,
    end_orphans,
    lock_kernel_dir,
    namespace_inits,
    pass_fds,
    prepare_kernel_dir,
)
from grader.run.slots import Slot

PROBE_FILE = "probe.json"
CAPTURE_FILE = "capture.bin"  # the graded pass as a graph, weights and inputs (probe/capture.py)
MAX_CAPTURE_BYTES = 160 * 1024 * 1024  # 10,000 float inputs are 31 MB; weights a few MB
EXECUTED_FILE = "executed.ipynb"
KERNEL_LOG = "kernel.log"
# what is kept of the kernel's own stdout and stderr; the rest is counted
KERNEL_LOG_BYTES = 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")
SPIN_COUNT = 3000  # OpenMP busy-wait iterations before a thread sleeps (libgomp's default: 300,000)
_DIED = "the kernel died (a crash, os._exit, or the memory limit)"
EXPORT_GRACE_S = 120  # the probe's export after a failed or interrupted cell
# the probe's first cell (importing torch: 6 s on a loaded 2-core machine) is not held to a short
# per-cell limit
SETUP_S = 120


@dataclass(frozen=True)
class RunPlan:
    """How to run one submission: where, on which data, with which seed, limits and isolation."""

    rundir: Path  # the grader's folder for this run (see the module's docstring)
    dataset: Dataset  # what the notebook's FashionMNIST(...) reads (bound read-only in the sandbox)
    seed: int
    cell_timeout_s: float
    total_timeout_s: float
    sandbox: Sandbox | None = None  # None: a plain child process (a student's own machine)
    max_output_bytes: int = 20 * 1024 * 1024
    slot: Slot | None = None  # threads and GPU in a parallel batch; None: the whole machine
    kernel_name: str = "python3"
    # sandboxed: a group per run caps memory, processes and CPU
    cgroups: cgroups.Hierarchy | None = None
    gpu_memory_mb: int = 0  # the run's share of its GPU's memory (set by the probe); 0: no cap

    @property
    def kernel_dir(self) -> Path:
        return self.rundir / "kernel"

    @property
    def workdir(self) -> Path:
        """The notebook's working directory when it runs unsandboxed."""
        return self.rundir / "work"


class _SandboxedKernelManager(AsyncKernelManager):
    """Starts the kernel inside bubblewrap; talks to it over Unix sockets (no network inside)."""

    wrapper: list[str] = []

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return [*self.wrapper, *super().format_kernel_cmd(extra_arguments)]

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        # the sandbox's lifeline
        await super()._async_launch_kernel(kernel_cmd, **kw, pass_fds=pass_fds())

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        # the kernel runs as another user when the grader is root
        os.chmod(self.connection_file, 0o644)


class _LimitedClient(NotebookClient):
    """An nbclient that keeps at most ``budget`` bytes of output; the rest becomes one notice."""

    def __init__(self, notebook: NotebookNode, budget: int, **kwargs: Any) -> None:
        super().__init__(notebook, **kwargs)
        self.budget = budget
        self.truncated = False
        self._display_sizes: dict[str, int] = {}  # what each display id's current data was charged

    def output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        self.budget -= len(json.dumps(msg.get("content", {})))
        if self.budget >= 0:
            return super().output(outs, msg, display_id, cell_index)
        if not self.truncated:
            self.truncated = True
            outs.append(
                nbformat.v4.new_output(
                    "stream",
                    name="stderr",
                    text="\n[grader: the rest of this notebook's output was not kept]\n",
                )
            )
        return None

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        """A display update rewrites outputs shown before, outside ``output``: it is charged too,
        for
        the growth of every output it rewrites, and dropped past the budget."""
        places = self._display_id_map.get(display_id, {})
        count = sum(len(indices) for indices in places.values())
        size = len(json.dumps(msg.get("content", {}).get("data", {})))
        grown = (size - self._display_sizes.get(display_id, 0)) * count
        if grown > self.budget:
            self.budget = -1
            if not self.truncated:
                self.truncated = True
                first = next(iter(places), None)
                if first is not None:
                    self.nb["cells"][first]["outputs"].append(
                        nbformat.v4.new_output(
                            "stream",
                            name="stderr",
                            text="\n[grader: the rest of this notebook's output was not kept]\n",
                        )
                    )
            return
        self.budget -= grown
        self._display_sizes[display_id] = size
        super()._update_display_id(display_id, msg)


def _kernel_manager(plan: RunPlan, sandbox: Sandbox | None) -> AsyncKernelManager:
    # Async, as nbclient expects: a blocking client would wait forever for a dead kernel's output.
    if sandbox is None:
        return AsyncKernelManager(kernel_name=plan.kernel_name)
    sockets = plan.kernel_dir
    manager = _SandboxedKernelManager(
        kernel_name=plan.kernel_name,
        transport="ipc",
        ip=str(sockets / "s"),
        connection_file=str(sockets / "kernel.json"),
    )
    manager.wrapper = command(sandbox, _kernel_vars(plan))
    return manager


def build_notebook(submission: Submission) -> NotebookNode:
    """The submission as a v4 notebook (a .py becomes one code cell per exported cell)."""
    notebook = nbformat.v4.new_notebook()
    makers = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    notebook.cells = [
        makers.get(c.kind, nbformat.v4.new_raw_cell)(c.source) for c in submission.cells
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


def _probe_cells(plan: RunPlan) -> tuple[NotebookNode, NotebookNode]:
    config = {
        "seed": plan.seed,
        "data_root": str(plan.dataset.root),
        "dataset": plan.dataset.kind.name,  # the torchvision class the notebook reads
        "images": str(plan.dataset.raw),  # the IDX files of its images (model/dataset.py)
        "output": str(plan.kernel_dir / PROBE_FILE),
        "capture": str(plan.kernel_dir / CAPTURE_FILE),
        "image": plan.dataset.spec.to_text(),  # the images' geometry and class count
        "threads": plan.slot.threads if plan.slot else None,
        "gpu_memory_mb": plan.gpu_memory_mb,
    }
    setup = (
        "import grader.probe.runtime as "
        f"_gp\n_gp.install(__import__('json').loads({json.dumps(config)!r}))\ndel _gp"
    )
    export = "import grader.probe.runtime as _gp\n_gp.export()\ndel _gp"
    return nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(export)


def _where(submission: Submission, number: int, line: int | None) -> str:
    cell = next(c for c in submission.cells if c.number == number)
    return submission.where(cell, line)


def _error_line(error: CellExecutionError) -> int | None:
    # the line is named near the top
    match = _CELL_LINE.search(_ANSI.sub("", (error.traceback or "")[:20_000]))
    return int(match.group(1)) if match else None


def _printed_text(cells: list[NotebookNode]) -> str:
    parts: list[str] = []
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(str(output.get("text", "")))
            elif output.get("output_type") in ("execute_result", "display_data"):
                parts.append(str(output.get("data", {}).get("text/plain", "")) + "\n")
    return "".join(parts)


# What a CI runner gives its steps: files that become workflow commands and step outputs, tokens.
_CI_VARIABLES = ("GITHUB_", "RUNNER_", "ACTIONS_", "CI_", "GITLAB_")


def _host_environment() -> dict[str, str]:
    """The grader's environment for an unsandboxed kernel, less what a CI runner hands its steps:
    a notebook gets no $GITHUB_OUTPUT to append a forged `result=` to, and no token."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_CI_VARIABLES)}


def _kernel_vars(plan: RunPlan) -> dict[str, str]:
    """Variables the kernel gets on top of its environment (or, sandboxed, instead of it)."""
    variables = {
        "PYTHONHASHSEED": str(plan.seed),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # a grader.precheck() left in the notebook does nothing while graded
        "GRADER_PROBE": "1",
    }
    if plan.slot is not None:
        threads = str(plan.slot.threads)
        variables.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        if plan.sandbox is None:  # sandboxed, the one GPU it can open is cuda:0
            variables.update(
                CUDA_VISIBLE_DEVICES=plan.slot.gpu or "", CUDA_DEVICE_ORDER="PCI_BUS_ID"
            )
        if plan.slot.crowded:
            # Spinning OpenMP threads of jobs that share cores starve each other (4 template runs
            # with --jobs 2 on 2 cores: over 5 min spinning, 81 s passive).
            variables["OMP_WAIT_POLICY"] = "PASSIVE"
        else:
            # Spin briefly, then sleep: alone as fast as the default spin (within 3%), and beside
            # other load at its fair share instead of collapsing (benchmarks/bench_neighbour.py).
            variables.update(GOMP_SPINCOUNT=str(SPIN_COUNT), KMP_BLOCKTIME="1")
    return variables


def _namespace_inits(manager: AsyncKernelManager) -> list[int]:
    """The sandbox's namespace init, found while the kernel runs (its bwrap parent may die
    first)."""
    process = getattr(manager.provisioner, "process", None)
    return (
        namespace_inits(process.pid)
        if isinstance(manager, _SandboxedKernelManager) and process
        else []
    )


def _shut_down(manager: AsyncKernelManager, inits: list[int]) -> None:
    """Kill the kernel; for a sandbox, return only once every process inside has ended."""
    if manager.has_kernel:
        run_sync(manager.shutdown_kernel)(now=True)
    end_namespaces(inits)


@dataclass(frozen=True)
class _Outcome:
    status: Status
    reason: str | None = None
    failed_cell: int | None = None


def _interrupt(client: _LimitedClient) -> None:
    """Interrupt the running cell through the kernel's control channel: ipykernel raises
    KeyboardInterrupt in its own process, which a signal from here could not reach in a sandbox."""
    if client.kc is not None:
        client.kc.control_channel.send(client.kc.session.msg("interrupt_request", {}))


def _settle(client: _LimitedClient, limit_s: float) -> None:
    """Wait until the interrupted cell has ended. ipykernel aborts what was queued behind a cell
    that failed, so an empty request is sent until one is answered instead of aborted."""
    kernel = client.kc
    if not isinstance(kernel, AsyncKernelClient):
        return
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        request = kernel.execute("", silent=True, store_history=False)
        while time.monotonic() < deadline:
            try:
                reply = run_sync(kernel.get_shell_msg)(timeout=1)
            except Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == request:
                if reply.get("content", {}).get("status") != "aborted":
                    return
                break
        time.sleep(0.1)


def _run_cells(
    client: _LimitedClient,
    notebook: NotebookNode,
    submission: Submission,
    plan: RunPlan,
    started: float,
) -> _Outcome:
    """Execute the cells in order; after a student cell fails or is interrupted at the time limit,
    only the probe's export still runs (within a grace period), so what was recorded is judged."""
    outcome = _Outcome(Status.GRADED)
    last = len(notebook.cells) - 1
    for index, cell in enumerate(notebook.cells):
        if (
            cell.cell_type != "code"
            or not cell.source.strip()
            or (outcome.status is not Status.GRADED and index != last)
        ):
            continue  # after a failed student cell, only the probe's export still runs
        number = submission.cells[index - 1].number if 0 < index < last else None
        where = _where(submission, number, None) if number else "the grader's probe"
        remaining = plan.total_timeout_s - (time.monotonic() - started)
        # the probe: importing torch
        allowed = plan.cell_timeout_s if index else max(plan.cell_timeout_s, SETUP_S)
        client.timeout = max(1, int(min(allowed, remaining)))
        if outcome.status is not Status.GRADED:  # only the export is left: its failure adds nothing
            client.timeout = EXPORT_GRACE_S
            try:
                if outcome.status is Status.TIMEOUT:
                    _settle(client, EXPORT_GRACE_S)
                client.execute_cell(cell, index)
            except (CellTimeoutError, DeadKernelError, CellExecutionError):
                pass
            return outcome
        try:
            client.execute_cell(cell, index)
        except CellTimeoutError:
            limit = "total" if remaining < plan.cell_timeout_s else "per-cell"
            outcome = _Outcome(
                Status.TIMEOUT,
                f"{where}: still running at the {limit} time limit ({client.timeout} s); "
                "interrupted",
                number,
            )
            _interrupt(client)
        except DeadKernelError:
            return _Outcome(Status.ERROR, f"{where}: {_DIED}", number)
        except CellExecutionError as exc:
            if number is None:
                return _Outcome(
                    Status.ERROR, f"grader probe failed in the kernel: {exc.ename}: {exc.evalue}"
                )
            reason = (
                f"{_where(submission, number, _error_line(exc))}: {cut(str(exc.ename), 100)}: "
                f"{cut(str(exc.evalue))}"
            )
            if exc.ename == "MemoryError" and plan.sandbox is not None:
                reason += f" (the memory limit of {plan.sandbox.limits.memory_mb} MB was hit)"
            elif exc.ename == "ModuleNotFoundError":
                reason += " (not in the grading environment: see `grader env`)"
            outcome = _Outcome(Status.ERROR, reason, number)
    return outcome


def _group_limits(plan: RunPlan) -> cgroups.GroupLimits:
    """The run's cgroup caps: the sandbox's memory and processes, and the slot's threads as CPU
    share."""
    limits = plan.sandbox.limits if plan.sandbox is not None else None
    return cgroups.GroupLimits(
        memory_mb=limits.memory_mb if limits else 0,
        max_processes=limits.max_processes if limits else 0,
        cpus=float(plan.slot.threads if plan.slot else os.cpu_count() or 1),
    )


def _owner(plan: RunPlan) -> int | None:
    """Whose files the probe's may be: the sandbox's user when the grader is root (else anyone's:
    ours)."""
    return plan.sandbox.uid if plan.sandbox is not None and os.geteuid() == 0 else None


def _read_capture(plan: RunPlan) -> tuple[bytes | None, str | None]:
    """The capture's bytes (untrusted: grader/evaluator/ checks them), or why they were not
    taken."""
    try:
        data = read_untrusted(plan.kernel_dir, CAPTURE_FILE, _owner(plan), MAX_CAPTURE_BYTES)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"the probe's capture was not read: {exc}"
    return (data or None), None


def execute(submission: Submission, plan: RunPlan) -> ExecutionRecord:
    """Run the submission's cells in order with per-cell and total time limits.

    An exception in a student cell stops the run (like `jupyter nbconvert --execute`), but the
    probe still exports what it recorded, so the TA sees the accuracy reached before the error.
    The kernel is always shut down at the end; in a sandbox that ends every process it started,
    and the run's cgroup (where there is one) is read for peak memory and OOM kills, then removed.
    """
    plan.rundir.mkdir(parents=True, exist_ok=True)
    plan.workdir.mkdir(exist_ok=True)
    setup, export = _probe_cells(plan)
    notebook = build_notebook(submission)
    student_cells = list(notebook.cells)
    notebook.cells = [setup, *student_cells, export]
    hierarchy = plan.cgroups if plan.sandbox is not None else None
    group_limits = _group_limits(plan)
    started = time.monotonic()
    with cgroups.job_group(hierarchy, plan.slot.index if plan.slot else 0, group_limits) as group:
        sandbox = replace(plan.sandbox, group=group) if plan.sandbox is not None else None
        if sandbox is not None:
            end_orphans()  # a killed grader's sandboxes that never started
            prepare_kernel_dir(sandbox, (PROBE_FILE, CAPTURE_FILE))
        else:
            plan.kernel_dir.mkdir(exist_ok=True)
        outcome, truncated = _run(submission, plan, sandbox, notebook, started)
        usage = cgroups.usage(group) if group is not None else None
    notebook.cells = student_cells
    executed = plan.rundir / EXECUTED_FILE
    nbformat.write(notebook, str(executed))
    probe = read_probe(plan.kernel_dir, PROBE_FILE, _owner(plan))
    captured, capture_problem = _read_capture(plan)
    findings = [Finding(Flag.OUTPUT_TRUNCATED)] if truncated else []
    if probe.problem:
        findings.append(Finding(Flag.PROBE_FILE_REJECTED, probe.problem))
    if capture_problem:
        findings.append(Finding(Flag.PROBE_FILE_REJECTED, capture_problem))
    if usage is not None and usage.oom_kills:
        memory_mb = group_limits.memory_mb
        findings.append(
            Finding(
                Flag.MEMORY_LIMIT,
                f"the memory limit ({memory_mb} MB for all the notebook's processes "
                f"together) was reached {usage.oom_kills} time(s): the kernel or "
                "one of its processes was killed",
            )
        )
        if outcome.reason and outcome.reason.endswith(_DIED):
            where = outcome.reason[: -len(_DIED)]
            outcome = _Outcome(
                Status.ERROR,
                f"{where}the kernel was killed at the memory limit of {memory_mb} MB "
                "(all its processes together)",
                outcome.failed_cell,
            )
    return ExecutionRecord(
        status=outcome.status,
        reason=outcome.reason,
        failed_cell=outcome.failed_cell,
        duration_s=round(time.monotonic() - started, 2),
        executed_notebook=executed,
        probe=probe.record,
        outputs_text=_printed_text(student_cells),
        findings=tuple(findings),
        capture=captured,
        peak_memory_mb=usage.peak_memory_mb if usage else None,
    )


class _CappedLog:
    """A pipe for the kernel's stdout and stderr whose reader keeps the first ``cap`` bytes in
    ``path`` and counts the rest: what a notebook writes to fd 2 never fills the host's disk."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path, self.cap = path, cap
        self._read, self.fd = os.pipe()
        self._thread = threading.Thread(target=self._drain, name="kernel-log", daemon=True)

    def __enter__(self) -> _CappedLog:
        self._thread.start()
        return self

    def started(self) -> None:
        """The kernel holds the write end now: drop this process's copy, so its end reads as
        end-of-file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __exit__(self, *exc: object) -> None:
        self.started()
        self._thread.join(timeout=30)  # the kernel and its children are gone by now

    def _drain(self) -> None:
        dropped = 0
        with self.path.open("wb") as log, os.fdopen(self._read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                room = self.cap - log.tell()
                log.write(chunk[: max(0, room)])
                dropped += max(0, len(chunk) - max(0, room))
            if dropped:
                log.write(
                    f"\n[grader: {dropped} more bytes the kernel wrote were not kept]\n".encode()
                )


def _run(
    submission: Submission,
    plan: RunPlan,
    sandbox: Sandbox | None,
    notebook: NotebookNode,
    started: float,
) -> tuple[_Outcome, bool]:
    """Start the kernel, run every cell, shut it all down: (outcome, whether output was cut)."""
    manager = _kernel_manager(plan, sandbox)
    # sandboxed, bwrap changes into its scratch home
    cwd = plan.workdir if sandbox is None else plan.rundir
    client = _LimitedClient(
        notebook,
        plan.max_output_bytes,
        km=manager,
        timeout=int(plan.cell_timeout_s),
        kernel_name=plan.kernel_name,
        resources={"metadata": {"path": str(cwd)}},
        allow_errors=False,
        record_timing=False,
    )
    inits: list[int] = []
    # the kernel's own stderr, off the TA's terminal
    with _CappedLog(plan.rundir / KERNEL_LOG, KERNEL_LOG_BYTES) as log:
        try:
            with client.setup_kernel(
                env={**_host_environment(), **_kernel_vars(plan)}, stdout=log.fd, stderr=log.fd
            ):
                log.started()
                inits = _namespace_inits(manager)
                if sandbox is not None:
                    # its sockets exist; nothing may be added there any more
                    lock_kernel_dir(sandbox)
                outcome = _run_cells(client, notebook, submission, plan, started)
        except RuntimeError as exc:  # the kernel did not come up
            outcome = _Outcome(
                Status.ERROR, f"the notebook's kernel did not start ({exc}); see {KERNEL_LOG}"
            )
        finally:
            _shut_down(manager, inits)
    return outcome, client.truncated
