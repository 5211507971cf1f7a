"""A student who attacks the grader: what the notebook leaves behind, prints, patches and reads.

Every test checks from the host's side: a victim file made by the test keeps its content and
mtime, the batch finishes, pages show markup as text, no forged accuracy counts, and the result
says what happened. The sandboxed ones run as root in CI (cgroups, a dropped uid, a locked folder).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
from pathlib import Path

import nbformat
import pytest
from browser import CHROMIUM, leads_with_verdict, seen_at
from sandboxing import MODEL, left_behind

from grader.intake.dataset import kernel_view, label_copies
from grader.intake.read import read_submission
from grader.model.context import Context
from grader.model.dataset import Dataset
from grader.model.findings import Finding, Flag
from grader.model.probe_facts import parse
from grader.model.record import read_probe, read_untrusted
from grader.model.results import Check, Result, StaticReport, Status
from grader.model.rubric import Rubric
from grader.outputs.pages import write_batch_reports
from grader.outputs.text import check_text, render
from grader.pipeline.cache import batch_key, cache_key, environment_key
from grader.pipeline.executors.local import LocalExecutor
from grader.pipeline.grade import grade_in
from grader.probe import RECORD_VERSION
from grader.run.cgroups import GroupLimits, find_hierarchy, job_group, sweep, usage
from grader.run.gpus import find as find_gpu, installed, sandbox_args
from grader.run.sandbox import Sandbox, SandboxLimits, command, unavailable_reason
from grader.run.slots import cores_for, plan_slots
from grader.static.rules import check_static

FIXTURES = Path(__file__).parent / "fixtures"
HOSTILE = "<script>alert('pwned')</script><img src=x onerror=alert(1)>"
needs_sandbox = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"no sandbox here: {unavailable_reason()}"
)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the uid drop, folder lock and cgroups need root"
)

TEST_PASS = """
correct = 0
with torch.no_grad():
    for data, target in test_loader:
        correct += (model(data).argmax(1) == target).sum().item()
print('Test Accuracy (Overall): %.2f%%' % (100 * correct / len(test_data)))
"""


# -- what the grader reads from a folder student code could write --------------------------------
def test_untrusted_files_are_never_followed_blocked_on_or_read_whole(tmp_path: Path) -> None:
    victim = tmp_path / "secret"
    victim.write_text('{"secret": 1}')
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "link.json").symlink_to(victim)
    os.mkfifo(folder / "fifo.json")
    (folder / "big.json").write_bytes(b" " * 2048)
    (folder / "dir.json").mkdir()
    (folder / "ok.json").write_text('{"version": 1}')
    for name, said in (
        ("link.json", "could not be opened"),
        ("fifo.json", "not a regular file"),
        ("big.json", "over the 1024-byte cap"),
        ("dir.json", "not a regular file"),
    ):
        with pytest.raises(ValueError, match=said):
            read_untrusted(folder, name, None, 1024)
    with pytest.raises(ValueError, match="belongs to uid"):
        read_untrusted(folder, "ok.json", os.geteuid() + 1, 1024)
    assert read_untrusted(folder, "ok.json", os.geteuid(), 1024) == b'{"version": 1}'
    assert read_probe(folder, "fifo.json", None).problem == (
        "the probe's file was not read: fifo.json is not a regular file"
    )
    # not believed
    assert f"format '1', not {RECORD_VERSION}" in (
        read_probe(folder, "ok.json", None).problem or ""
    )
    (folder / "ok.json").write_text(f'{{"version": "{RECORD_VERSION}"}}')
    assert read_probe(folder, "ok.json", None).record is None
    (folder / "ok.json").write_text(f'{{"version": {RECORD_VERSION}}}')
    assert read_probe(folder, "ok.json", None).record == parse({"version": RECORD_VERSION})
    assert read_probe(folder, "missing.json", None) == read_probe(folder, "missing.json", None)
    assert (
        read_probe(folder, "missing.json", None).record is None
        and read_probe(folder, "missing.json", None).problem is None
    )
    (folder / "deep.json").write_text("[" * 100_000)
    assert read_probe(folder, "deep.json", None).problem == "the probe's file is not valid JSON"
    # a folder swapped for a link is refused too
    (tmp_path / "swapped").symlink_to(folder)
    with pytest.raises(OSError):
        read_untrusted(tmp_path / "swapped", "ok.json", None, 1024)


# -- pages and terminal text escape everything --------------------------------------------------
def _hostile_result() -> Result:
    return Result(
        student="mallory",
        source=f"HW3_mallory{HOSTILE}.ipynb",
        status=Status.ERROR,
        accuracy=10.0,
        reported_accuracy=None,
        score=0,
        max_score=60,
        bonus=0,
        checks=(Check("epochs", False, f"cell 2: {HOSTILE}", "f.ipynb", 2, 3),),
        flags=(f"flag{HOSTILE}",),
        duration_s=1.0,
        reason=f"cell 3, line 1: RuntimeError: {HOSTILE}\x1b]0;owned\x07",
        notes=(f"note {HOSTILE}",),
    )


def test_every_page_shows_markup_as_text(tmp_path: Path, rubric: Rubric) -> None:
    write_batch_reports(
        tmp_path, [_hostile_result()], rubric, [(f"HW3 {HOSTILE}.zip", f"why {HOSTILE}")]
    )
    pages = [tmp_path / "index.html", tmp_path / "students" / "mallory.html"]
    for page in pages:
        html = page.read_text()
        # the class table's sorting script, and no other
        ours = 1 if page.name == "index.html" else 0
        assert html.count("<script") == ours and "<img" not in html
        assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
        assert "&lt;script&gt;" in html
    texts = [
        check_text(_hostile_result(), rubric, how="in the sandbox"),
        render(
            "summary.txt.j2",
            results=[_hostile_result()],
            skipped=[("x\x1b[2J", "y")],
            out=tmp_path,
            cached=0,
            seconds=1.0,
            counts=[("error", 1)],
        ),
    ]
    for text in texts:
        assert "\x1b" not in text and "\x07" not in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_a_real_browser_shows_the_markup_as_text(tmp_path: Path, rubric: Rubric) -> None:
    write_batch_reports(tmp_path, [_hostile_result()], rubric, [])
    for page in (tmp_path / "index.html", tmp_path / "students" / "mallory.html"):
        shown = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert "<body" in shown  # the page rendered
        # the class table's sorting script, and no other
        ours = 1 if page.name == "index.html" else 0
        # no element came from the student's text
        assert shown.count("<script") == ours and "<img" not in shown
        assert "&lt;script&gt;alert('pwned')&lt;/script&gt;" in shown  # shown as text


# -- the cache key is what was used ---------------------------------------------------------------
def test_cache_key_covers_overrides_twin_report_and_copies(
    tmp_path: Path, tiny_context: Context
) -> None:
    notebook = tmp_path / "HW3_ann.ipynb"
    shutil.copy(FIXTURES / "HW3_quickeval.ipynb", notebook)
    sub = read_submission(notebook, "ann")
    batch = batch_key(tiny_context, environment_key("cpu"))
    base = cache_key(sub, batch)
    longer = dataclasses.replace(
        tiny_context.rubric,
        limits=dataclasses.replace(tiny_context.rubric.limits, total_timeout_s=5),
    )
    assert (
        cache_key(
            sub, batch_key(dataclasses.replace(tiny_context, rubric=longer), environment_key("cpu"))
        )
        != base
    )
    twin, report = tmp_path / "HW3_ann.py", tmp_path / "HW3_Report_ann.pdf"
    twin.write_text("print(1)\n")
    report.write_bytes(b"%PDF-1.4 one")
    with_both = dataclasses.replace(sub, script=twin, report=report)
    keyed = cache_key(with_both, batch)
    assert keyed != base
    report.write_bytes(b"%PDF-1.4 two")
    assert cache_key(with_both, batch) != keyed
    assert (
        cache_key(
            dataclasses.replace(
                sub, findings=(Finding(Flag.OTHER_COPIES, "another copy differs"),)
            ),
            batch,
        )
        != base
    )
    assert cache_key(sub, batch) == base


# -- tampering found in the code as written -------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "evidence"),
    [
        (
            "import grader.probe.runtime as gp\ngp._probe_pass = lambda *a: []",
            "imports the grader's probe",
        ),
        ("from grader.probe import runtime", "imports the grader's probe"),
        # the content key the probe runs in the kernel (blinding it blinds every content check)
        (
            "import grader.evaluator.key as k\nk.pack = lambda found: [bytes(196)] * len(found)",
            "imports the grader's probe",
        ),
        ("from grader import evaluator", "imports the grader's probe"),
        ("import grader\ngrader.evaluator.key.keys = None", "reaches the grader's probe"),
        ("import sys\nprobe = sys.modules[name]", "reads sys.modules"),
        ("import sys as s\nfor m in list(s.modules.values()):\n    pass", "reads sys.modules"),
        (
            "import importlib\nr = importlib.import_module('grader.probe.runtime')",
            "names the grader's probe",
        ),
        (
            "from torch.optim.optimizer import _global_optimizer_post_hooks as h\nhook = "
            "next(iter(h.values()))",
            "imports torch's global hook tables",
        ),
        (
            "import torch\nfor hook in torch.nn.modules.module._global_forward_hooks.values():\n   "
            " pass",
            "reaches torch's global hook tables",
        ),
        (
            "import torch\nt = getattr(torch.optim.optimizer, '_global_optimizer_pre_hooks')",
            "names torch's global hook",
        ),
        ("labels = %r" % ("".join(str(i % 10) for i in range(10_000)),), "the test labels?"),
        (
            "labels = [%s]" % ",".join(str(i * 7 % 10) for i in range(10_000)),
            "literal list of 10000+ values",
        ),
        (
            "labels = %r" % ("".join("abcdefghij"[i * 7 % 10] for i in range(10_000)),),
            "alphabet of ten",
        ),
        (
            "labels = %r" % ("".join("abcdefghij"[i * 3 % 10] for i in range(10_000)).encode(),),
            "alphabet of ten",
        ),
        (
            "labels = [%s]" % ",".join(repr("TSPDCNHBGA"[i * 7 % 10]) for i in range(10_000)),
            "literal list of 10000+ values",
        ),
        (
            "labels = %r" % (", ".join("TSPDCNHBGA"[i * 7 % 10] for i in range(10_000)),),
            "alphabet of ten",
        ),
    ],
)
def test_static_tampering_evidence(
    tmp_path: Path, tiny_context: Context, code: str, evidence: str
) -> None:
    result = _static(tmp_path, tiny_context, code)
    assert result.status is Status.ERROR and "probe-tampered" in result.flags
    assert (
        result.reason is not None and evidence in result.reason and result.reason.count("\n") == 0
    )


def test_embedded_labels_are_found_through_base64_and_compression(
    tmp_path: Path, tiny_context: Context
) -> None:
    import base64
    import gzip
    import random

    rng = random.Random(0)
    # real labels do not compress to nothing
    labels = bytes(rng.randrange(10) for _ in range(10_000))
    idx = b"\x00\x00\x08\x01\x00\x00'\x10" + labels
    blob = base64.b64encode(gzip.compress(idx)).decode()
    result = _static(
        tmp_path,
        tiny_context,
        f"import base64, gzip\nL = gzip.decompress(base64.b64decode({blob!r}))[8:]",
    )
    assert result.status is Status.ERROR and "the test labels?" in (result.reason or "")


def test_embedded_labels_are_looked_for_in_the_rubrics_alphabet(tmp_path: Path) -> None:
    """A dataset of five classes (the rubric's): its test labels as a run of five symbols are
    evidence, as FashionMNIST's ten are; the default alphabet of ten does not see them."""
    import random

    from grader.model.datasets import DataChoice
    from grader.static.pyast import parse_cells
    from grader.static.tamper import LabelRun, label_run, static_evidence

    rng = random.Random(0)
    path = tmp_path / "HW4_eve.py"
    path.write_text(f"L = {''.join(rng.choice('abcde') for _ in range(10_000))!r}\n")
    sub = read_submission(path, "eve")
    cells = parse_cells(sub)
    assert static_evidence(sub, cells).evidence == ()
    found = static_evidence(sub, cells, LabelRun(length=10_000, classes=5))
    assert found.evidence and "over an alphabet of five (the test labels?)" in found.evidence[0]
    cifar = label_run(DataChoice(name="CIFAR10", classes=tuple("abcde")))
    assert cifar == LabelRun(length=10_000, classes=5)


@pytest.mark.slow
def test_tens_of_kilobytes_of_literal_data_go_to_review(tmp_path: Path, sandboxed: Context) -> None:
    """The public labels as letters beside a short hash of each image (60 KB of small literals, no
    long run of ten symbols) are no tampering evidence, but a graded run of them goes to review."""
    import hashlib

    pairs = ",\n".join(
        f"{hashlib.sha1(str(i).encode()).hexdigest()[:10]!r}: {'abcdefghij'[i * 7 % 10]!r}"
        for i in range(5_000)
    )
    code = (FIXTURES / "HW3_tinyok.py").read_text() + f"\nANSWERS = {{\n{pairs}\n}}\n"
    static = _static(tmp_path, sandboxed, code)
    assert "literal-data" in static.flags and "probe-tampered" not in static.flags
    path = tmp_path / "HW3_eve.py"
    path.write_text(code)
    result = grade_in(tmp_path / "graded", read_submission(path, "eve"), sandboxed)
    assert result.status is Status.REVIEW and result.score == 0 and result.accuracy is not None
    assert (
        result.reason is not None
        and "KB of literal data" in result.reason
        and "at line " in result.reason
    )


def _table(size: int = 6_200) -> bytes:
    """A keyless retrieval table's worth of random bytes (a 3-wise XOR filter of 10,000 labels)."""
    import random

    return random.Random(size).randbytes(size)


@pytest.mark.parametrize("where", ["docstring", "comments", "bytes", "numbers", "names"])
def test_a_table_of_answers_anywhere_in_the_code_text_is_literal_data(
    tmp_path: Path, tiny_context: Context, where: str
) -> None:
    """Six KB of data (what a keyless table of the test labels needs) in a docstring, in comments (a
    notebook reads its own cells through IPython's history), in a bytes literal, in small numbers or
    in the names of variables: all of it is text of the code, measured by what it holds."""
    import base64

    table = _table()
    text = base64.b64encode(table).decode()
    code = {
        "docstring": f'def lookup(h):\n    """{text}"""\n    return h',
        "comments": "\n".join(f"# {text[i : i + 70]}" for i in range(0, len(text), 70)),
        "bytes": f"TABLE = {table!r}",
        "numbers": "SLOTS = [%s]" % ", ".join(str(b) for b in table),
        "names": "\n".join(f"v{table[i : i + 6].hex()} = {i}" for i in range(0, len(table), 6)),
    }[where]
    static = _static_report(
        tmp_path, tiny_context, (FIXTURES / "HW3_tinyok.py").read_text() + "\n" + code
    )
    assert (
        static.literal_data is not None
        and "KB of literal data" in static.literal_data
        and not static.tampering
    )


def test_prose_and_the_templates_own_text_are_not_literal_data(
    tmp_path: Path, tiny_context: Context
) -> None:
    """A well-commented notebook (7 KB of the lecture as comments), the template's cells run a
    second
    time and a long ruler hold little beyond the template: no review."""
    lecture = (
        Path(__file__).resolve().parents[2] / "shared" / "homework" / "lecture3-training-skills.txt"
    ).read_text()
    prose = "\n".join(f"# {line}" for line in lecture[:7_000].splitlines())
    template = tiny_context.rubric.template.with_suffix(".py").read_text()
    code = (
        f"{(FIXTURES / 'HW3_tinyok.py').read_text()}\n{prose}\nRULER = "
        f"{'-=' * 6000!r}\n{template}\n"
    )
    static = _static_report(tmp_path, tiny_context, code)
    assert static.literal_data is None, static.literal_data


def _static_report(tmp_path: Path, context: Context, code: str) -> StaticReport:
    """The static check alone (what `grader check FILE` runs first), in milliseconds."""
    path = tmp_path / "HW3_eve.py"
    path.write_text(code + "\n")
    return check_static(read_submission(path, "eve"), context.facts, context.rubric)


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nIN_COLAB = 'google.colab' in sys.modules",
        "import sys\nif sys.modules.get('torch') is not None:\n    pass",
        "import grader\ngrader_name = 'my grader'",
        "import torch\nh = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: "
        "None)\nh.remove()",
        "image = %r" % ("iVBORw0KGgo" + "A" * 5000,),
        "RULER = %r" % ("-=" * 6000,),
        "TEXT = %r" % (" ".join(["the quick brown fox jumps over the lazy dog"] * 300),),
    ],
)
def test_legal_code_is_not_tampering(tmp_path: Path, tiny_context: Context, code: str) -> None:
    result = _static(tmp_path, tiny_context, code)
    assert "probe-tampered" not in result.flags, result.reason


def test_gc_walks_are_a_flag_not_an_error(tmp_path: Path, tiny_context: Context) -> None:
    result = _static(
        tmp_path,
        tiny_context,
        "import gc, torch\nleaks = [o for o in gc.get_objects() if torch.is_tensor(o)]",
    )
    assert "probe-reachable" in result.flags and "probe-tampered" not in result.flags


def _static(tmp_path: Path, context: Context, code: str) -> Result:
    path = tmp_path / "HW3_eve.py"
    path.write_text(code + "\n")
    return grade_in(
        tmp_path / "run", read_submission(path, "eve"), dataclasses.replace(context, dataset=None)
    )


# -- hidden labels ---------------------------------------------------------------------------------
def test_hidden_view_permutes_images_and_hides_labels(
    tmp_path: Path, tiny_dataset: Dataset
) -> None:
    view = kernel_view(tiny_dataset, tmp_path / "view", hide_test_labels=True)
    assert (
        view.order is not None
        and sorted(view.order) == list(range(200))
        and list(view.order) != list(range(200))
    )
    official = tiny_dataset.test_labels()
    seen_images = (view.dataset.raw / "t10k-images-idx3-ubyte").read_bytes()
    real_images = (tiny_dataset.raw / "t10k-images-idx3-ubyte").read_bytes()
    k = 5
    assert (
        seen_images[16 + k * 784 : 16 + (k + 1) * 784]
        == real_images[16 + view.order[k] * 784 : 16 + (view.order[k] + 1) * 784]
    )
    assert view.labels(official)[k] == official[view.order[k]]
    assert (view.dataset.raw / "t10k-labels-idx1-ubyte").read_bytes() != (
        tiny_dataset.raw / "t10k-labels-idx1-ubyte"
    ).read_bytes()
    planted = tmp_path / "opt" / "lib" / "copy-of-t10k-labels-idx1-ubyte.gz"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"x")
    assert planted in label_copies(tiny_dataset, (tmp_path / "opt",))


# -- machine sharing: cores, GPUs, cgroups ---------------------------------------------------------
def test_jobs_get_disjoint_core_blocks() -> None:
    cpus = tuple(range(8))
    assert [cores_for(i, 2, cpus) for i in range(5)] == [(0, 1), (2, 3), (4, 5), (6, 7), ()]
    assert cores_for(0, 2, (0, 1)) == ()  # one job on the whole machine: nothing to pin


def test_each_job_sees_exactly_its_gpu(tmp_path: Path) -> None:
    driver = tmp_path / "gpus"
    for bus, minor, uuid in (("0000:3b:00.0", 2, "GPU-b"), ("0000:1a:00.0", 5, "GPU-a")):
        (driver / bus).mkdir(parents=True)
        (driver / bus / "information").write_text(
            f"Model: H100\nDevice Minor: {minor}\nGPU UUID: {uuid}\nBus Location: {bus}\n"
        )
    # PCI order, not minor order
    assert [(g.index, g.minor) for g in installed(driver)] == [("0", 5), ("1", 2)]
    gpu = find_gpu("1", driver)
    assert (
        gpu is not None
        and find_gpu("GPU-a", driver) == installed(driver)[0]
        and find_gpu("2", driver) is None
    )
    args = sandbox_args(gpu, driver)
    assert "/dev/nvidia2" in args and "/dev/nvidia5" not in args and "/dev/nvidia1" not in args
    assert args[args.index("--tmpfs") + 1] == str(driver) and str(driver / "0000:3b:00.0") in args
    limits = SandboxLimits(1024, 64, 16, 64)
    cpu_only = command(Sandbox(tmp_path / "k", (), limits), {})
    assert cpu_only[cpu_only.index("CUDA_VISIBLE_DEVICES") + 1] == ""
    assert sandbox_args(None, driver) == ["--tmpfs", str(driver)]  # a CPU job lists no GPU at all
    with_gpu = command(Sandbox(tmp_path / "k", (), limits, gpu=gpu), {"CUDA_VISIBLE_DEVICES": "1"})
    assert "CUDA_VISIBLE_DEVICES" not in with_gpu  # its one GPU is cuda:0


def test_cgroup_v2_layout_and_values(tmp_path: Path) -> None:
    """The v2 path on a stand-in tree (these machines mount v1): controllers, base folder, caps."""
    from grader.run.cgroups import create

    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    hierarchy, why = find_hierarchy(tmp_path)
    assert (
        hierarchy is not None
        and hierarchy.version == 2
        and hierarchy.bases == (tmp_path / "grader",)
    ), why
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    group = create(hierarchy, 3, GroupLimits(memory_mb=512, max_processes=40, cpus=2))
    assert group.memory.name == f"job-{os.getpid()}-3"
    assert (group.memory / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (group.memory / "pids.max").read_text() == "40"
    assert usage(group).oom_kills == 0 and usage(group).peak_memory_mb is None
    (tmp_path / "no-memory").mkdir()
    (tmp_path / "no-memory" / "cgroup.controllers").write_text("cpu io\n")
    assert find_hierarchy(tmp_path / "no-memory") == (
        None,
        f"cgroup v2 at {tmp_path / 'no-memory'} has no memory or pids controller",
    )


@needs_root
def test_cgroups_cap_count_and_clean_up() -> None:
    hierarchy, why = find_hierarchy()
    if hierarchy is None:
        pytest.skip(why)
    with job_group(hierarchy, 7, GroupLimits(memory_mb=200, max_processes=32, cpus=1)) as group:
        assert group is not None
        script = "x = bytearray(400 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1"
        ran = subprocess.run(
            [
                "/bin/sh",
                "-c",
                'echo $$ > "$1"; shift; exec "$@"',
                "sh",
                str(group.memory / "cgroup.procs"),
                "python3",
                "-c",
                script,
            ]
        )
        assert ran.returncode == -9  # killed at the cap of the whole group
        seen = usage(group)
        assert (
            seen.oom_kills >= 1
            and seen.peak_memory_mb is not None
            and 150 < seen.peak_memory_mb <= 201
        )
        folders = group.folders
        # a grader killed with -9 leaves its groups; the next one removes them, and only them
        # (other graders' groups may be there too: tests grade beside this one)
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = [base / f"job-{dead.pid}-0" for base in hierarchy.bases]
        for folder in stale:
            folder.mkdir()
        assert sweep(hierarchy) >= 1 and not any(f.exists() for f in stale)
        assert all(f.is_dir() for f in folders)  # this living grader's group stays
    assert not any(f.exists() for f in folders)


# -- the whole attack, sandboxed, in one batch
# -------------------------------------------------------
ATTACK_FILES = """
import os, glob
kernel_dirs = [line.split()[1] for line in open('/proc/self/mounts') if line.split()[1].endswith('/kernel')]
def attempt(what, action):
    try:
        action()
        print(what, 'SUCCEEDED')
    except Exception as exc:
        print(what, 'failed:', type(exc).__name__)
for folder in kernel_dirs:
    for name in ('probe.json', 'kernel.json', 'executed.ipynb', 'kernel.log', 'new.json'):
        path = os.path.join(folder, name)
        attempt('unlink ' + path, lambda: os.unlink(path))
        attempt('link ' + path, lambda: os.symlink(VICTIM, path))
        attempt('fifo ' + path, lambda: os.mkfifo(path))
for folder in (os.getcwd(), '/tmp', '/dev/shm'):
    for name in ('probe.json', 'executed.ipynb', 'kernel.log', '.kernel'):
        path = os.path.join(folder, name)
        attempt('link ' + path, lambda: os.symlink(VICTIM, path))
        attempt('fifo ' + path + '.fifo', lambda: os.mkfifo(path + '.fifo'))
attempt('write victim', lambda: open(VICTIM, 'w').write('owned'))
attempt('fill the disk', lambda: open('big', 'wb').write(b'x' * (200 * 1024 * 1024)))
"""  # noqa: E501

PATCH_AT_RUN_TIME = """
mods = getattr(__import__('s' + 'ys'), 'mod' + 'ules')
probe = mods['.'.join(['grader', 'pro' + 'be', 'runtime'])]
setattr(probe, '_graded_' + 'pass', lambda recorder: None)
"""

MEMORY_ACROSS_PROCESSES = """
import multiprocessing as mp
def hold(mb):
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    import time; time.sleep(3)
procs = [mp.get_context('fork').Process(target=hold, args=(900,)) for _ in range(4)]
for p in procs: p.start()
for p in procs: p.join()
print('exit codes', [p.exitcode for p in procs])
"""


@pytest.fixture(scope="module")
def sandboxed(rubric: Rubric, tiny_context: Context) -> Context:
    limits = dataclasses.replace(
        rubric.limits,
        total_timeout_s=120,
        cell_timeout_s=120,
        memory_mb=3072,
        max_processes=64,
        max_output_mb=1,
        scratch_mb=128,
    )
    return dataclasses.replace(
        tiny_context, rubric=dataclasses.replace(rubric, frozen=(), limits=limits), sandboxed=True
    )


def _notebook(path: Path, *cells: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(notebook, str(path))


def _printed(out: Path, account: str) -> str:
    notebook = nbformat.read(str(out / "executed" / f"{account}.ipynb"), as_version=4)
    return "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))


@needs_sandbox
@needs_root
@pytest.mark.usefixtures("adopting")  # what its sandboxes leave stays among its descendants
def test_a_class_of_attackers_changes_nothing_on_the_host(
    tmp_path: Path, sandboxed: Context
) -> None:
    from grader.pipeline.batch import grade_directory

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.chmod(victim, 0o644)
    before = (victim.read_text(), victim.stat().st_mtime_ns)
    batch = tmp_path / "class"
    batch.mkdir()
    shutil.copy(FIXTURES / "HW3_tinyok.py", batch / "HW3_alice.py")
    _notebook(
        batch / "HW3_links.ipynb", MODEL, f"VICTIM = {str(victim)!r}\n" + ATTACK_FILES, TEST_PASS
    )
    _notebook(
        batch / "HW3_markup.ipynb", MODEL, f"print({HOSTILE!r})", f"raise RuntimeError({HOSTILE!r})"
    )
    _notebook(batch / "HW3_patcher.ipynb", MODEL, PATCH_AT_RUN_TIME)
    _notebook(
        batch / "HW3_importer.ipynb",
        MODEL,
        "import grader.probe.runtime as gp\ngp._state.graded = None",
        TEST_PASS,
    )
    _notebook(batch / "HW3_hog.ipynb", MODEL, MEMORY_ACROSS_PROCESSES, TEST_PASS)
    out = tmp_path / "out"
    summary = grade_directory(batch, out, sandboxed, LocalExecutor(plan_slots(2, 2, (), 1, 1)))
    results = {r.student: r for r in summary.results}

    assert (victim.read_text(), victim.stat().st_mtime_ns) == before
    assert sorted(results) == ["alice", "hog", "importer", "links", "markup", "patcher"]
    printed = _printed(out, "links")
    succeeded = [line for line in printed.splitlines() if line.endswith("SUCCEEDED")]
    assert all(
        line.split()[1].startswith(("/tmp/", "/dev/shm/", "/content/")) for line in succeeded
    ), succeeded
    assert (
        "unlink" in printed
        and "write victim failed" in printed
        and "fill the disk failed" in printed
    )
    assert results["links"].status is Status.GRADED and results["links"].accuracy is not None
    assert results["alice"].status is Status.GRADED and results["alice"].accuracy == 100.0

    assert results["markup"].status is Status.ERROR and HOSTILE in (results["markup"].reason or "")
    for page in (
        out / "index.html",
        out / "students" / "markup.html",
        out / "executed" / "markup.html",
    ):
        html = page.read_text()
        assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    # what the TA opens, in a real browser: the verdict first, nothing runs
    if CHROMIUM is not None:
        pages = (
            out / "index.html",
            *sorted((out / "students").glob("*.html")),
            *sorted((out / "feedback").glob("*.html")),
        )
        assert [problem for page in pages for problem in leads_with_verdict(page)] == []
        notebooks = sorted((out / "executed").glob("*.html"))
        assert len(notebooks) == 6 and all(seen_at(page, 1400).quiet for page in notebooks)

    for name in ("patcher", "importer"):
        assert results[name].status is Status.ERROR and "probe-tampered" in results[name].flags, (
            results[name]
        )
        assert results[name].score == 0 and results[name].bonus == 0
    assert "at export: the probe's runtime._graded_pass was replaced" in (
        results["patcher"].reason or ""
    )
    assert "imports the grader's probe" in (results["importer"].reason or "")

    if find_hierarchy()[0] is not None:  # all processes together hit the cap; the kernel survives
        assert "memory-limit" in results["hog"].flags, results["hog"]
        assert results["hog"].peak_memory_mb is not None and results["hog"].peak_memory_mb <= 3072
    assert (
        all(r.peak_memory_mb is not None for r in results.values()) or find_hierarchy()[0] is None
    )
    assert left_behind() == []


@pytest.mark.slow
@needs_sandbox
def test_hidden_labels_leave_no_copy_and_embedded_labels_worthless(
    tmp_path: Path, sandboxed: Context
) -> None:
    real = list(sandboxed.dataset.test_labels())  # type: ignore[union-attr]
    hunt = f"""
import os
found = []
for root in ('/usr', '/opt', '/etc', '/content', '/tmp', os.path.dirname(os.path.dirname(os.__file__))):
    for folder, dirs, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files if 't10k-labels' in f]
print('label files:', found)
print('debian dir:', os.listdir('/usr/share/datasets/fashion-mnist') if os.path.isdir('/usr/share/datasets/fashion-mnist') else None)
REAL = {real!r}
class Cheat(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)
        self.i = 0
    def forward(self, x):
        out = torch.full((x.shape[0], 10), -9.0)
        for row in range(x.shape[0]):
            out[row, REAL[(self.i + row) % len(REAL)]] = 9.0
        self.i += x.shape[0]
        return out + 0 * self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.view(-1, 784))))))
model = Cheat()
"""  # noqa: E501
    visible = _grade_notebook(tmp_path / "visible", sandboxed, MODEL, hunt, TEST_PASS)
    assert visible.accuracy == 100.0  # visible labels: the embedded copy works, as documented
    hidden_context = dataclasses.replace(
        sandboxed, rubric=dataclasses.replace(sandboxed.rubric, hide_test_labels=True)
    )
    hidden = _grade_notebook(tmp_path / "hidden", hidden_context, MODEL, hunt, TEST_PASS)
    # the images come in a secret order
    assert hidden.accuracy is not None and hidden.accuracy < 40, hidden
    printed = "".join(
        o.get("text", "")
        for c in nbformat.read(str(tmp_path / "hidden" / "executed.ipynb"), as_version=4).cells
        for o in c.get("outputs", [])
    )
    listed = printed.split("label files:")[1].split("\n")[0]
    # only the shuffled view
    assert all("/data/FashionMNIST/raw/t10k-labels-idx1-ubyte" in p for p in eval(listed)), listed
    assert "debian dir: []" in printed or "debian dir: None" in printed


def _grade_notebook(folder: Path, context: Context, *cells: str) -> Result:
    folder.mkdir(parents=True)
    path = folder / "HW3_cheat.ipynb"
    _notebook(path, *cells)
    return grade_in(
        folder / "run",
        read_submission(path, "cheat"),
        context,
        keep_executed=folder / "executed.ipynb",
    )


WORKERS = (
    (FIXTURES / "HW3_tinyok.py")
    .read_text()
    .replace(
        "DataLoader(train_data, batch_size=batch_size, sampler=SubsetRandomSampler(train_idx))",
        "DataLoader(train_data, batch_size=batch_size, sampler=SubsetRandomSampler(train_idx), "
        "num_workers=2, persistent_workers=True, pin_memory=True)",
    )
    .replace(
        "DataLoader(test_data, batch_size=batch_size)",
        "DataLoader(test_data, batch_size=batch_size, num_workers=2)",
    )
)


@pytest.mark.slow
@needs_sandbox
def test_dataloader_workers_get_the_same_accuracy_sandboxed(
    tmp_path: Path, tiny_context: Context
) -> None:
    assert "persistent_workers=True" in WORKERS
    path = tmp_path / "HW3_workers.py"
    path.write_text(WORKERS)
    sub = read_submission(path, "workers")
    plain = grade_in(tmp_path / "plain", sub, tiny_context)
    boxed = grade_in(tmp_path / "boxed", sub, dataclasses.replace(tiny_context, sandboxed=True))
    assert plain.status is Status.GRADED and boxed.status is Status.GRADED, boxed.reason
    assert boxed.accuracy == plain.accuracy and plain.accuracy is not None and plain.accuracy > 50


def test_the_kernel_folder_is_locked_before_student_code(tmp_path: Path) -> None:
    """Unit view of the lock: after it, the folder is root's and 0755 (when the grader is root)."""
    from grader.run.sandbox import lock_kernel_dir, prepare_kernel_dir

    sandbox = Sandbox(tmp_path / "kernel", (), SandboxLimits(1024, 64, 16, 64), uid=65530)
    prepare_kernel_dir(sandbox, ("probe.json",))
    if os.geteuid() != 0:
        pytest.skip("ownership changes need root")
    assert (tmp_path / "kernel").stat().st_uid == 65530 and (
        tmp_path / "kernel" / "probe.json"
    ).stat().st_uid == 65530
    lock_kernel_dir(sandbox)
    info = (tmp_path / "kernel").stat()
    assert info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o755


# -- the grade is recomputed outside the student's process (issue 18) ----------------------------
TINY = (FIXTURES / "HW3_tinyok.py").read_text()
# ten real epochs that learn nothing: about 10% honestly
UNTRAINED = TINY.replace("lr=0.001", "lr=0.0")
assert UNTRAINED != TINY
LOOKUP = """
TABLE = {(test_data.data[i].numpy()).tobytes(): int(test_data.targets[i]) for i in range(len(test_data))}
class Net(Net):
    def forward(self, x):
        out = super().forward(x)
        keys = [(row * 255).round().byte().numpy().tobytes() for row in x.reshape(x.shape[0], 28, 28)]
        bonus = torch.zeros_like(out)
        for i, key in enumerate(keys):
            if key in TABLE:
                bonus[i, TABLE[key]] = 100.0
        return out + bonus
model.__class__ = Net
"""  # noqa: E501
FORGED_DUMP = """
import json, base64
_dump = json.dump
def _forged(obj, handle, *args, **kwargs):
    if isinstance(obj, dict) and "test_passes" in obj:
        truth = base64.b64encode(test_data.targets.numpy().astype("int8").tobytes()).decode()
        for seen in obj["test_passes"]:
            if "predictions" in seen:
                seen["predictions"] = truth
    return _dump(obj, handle, *args, **kwargs)
json.dump = _forged
"""
THREADED_CONV = """
import threading
side = getattr(nn, "Conv2d")(1, 10, 28)
class Net(Net):
    def forward(self, x):
        out = super().forward(x)
        box = []
        worker = threading.Thread(target=lambda: box.append(side(x.reshape(-1, 1, 28, 28)).reshape(-1, 10)))
        worker.start(); worker.join()
        return out + box[0] if box else out
model.__class__ = Net
"""  # noqa: E501
WIDE = TINY.replace("nn.Linear(28 * 28, 512)", "nn.Linear(28 * 28, 1024)").replace(
    "nn.Linear(512, 256)", "nn.Linear(1024, 256)"
)
SWAPPED = "\nmodel.fc1, model.fc2 = nn.Linear(784, 512), nn.Linear(512, 256)\n"


@pytest.mark.slow
def test_forged_grades_get_no_points_and_rule_bypasses_are_caught(
    tmp_path: Path, tiny_context: Context
) -> None:
    """The attacks of issue 18, as one class: a model that looks up the test labels by content, a
    forged json.dump of the probe's record, a Conv2d on a worker thread beside the graded Net, and
    the wide model swapped for legal layers after its test pass. The grade is the trusted side's
    run of the captured pass, so none gets points; the swap is judged on the model at its pass."""
    from grader.pipeline.batch import grade_directory
    from grader.pipeline.executors.local import LocalExecutor

    folder = tmp_path / "class"
    folder.mkdir()
    cut = UNTRAINED.index("n_epochs = 10")
    (folder / "HW3_lookup.py").write_text(UNTRAINED[:cut] + LOOKUP + UNTRAINED[cut:])
    (folder / "HW3_forger.py").write_text(FORGED_DUMP + UNTRAINED)
    (folder / "HW3_thread.py").write_text(UNTRAINED[:cut] + THREADED_CONV + UNTRAINED[cut:])
    (folder / "HW3_swapper.py").write_text(WIDE + SWAPPED)
    summary = grade_directory(
        folder, tmp_path / "out", tiny_context, LocalExecutor(plan_slots(2, 2, (), 1, 1))
    )
    results = {r.student: r for r in summary.results}
    shown = {
        name: (r.status.value, r.accuracy, r.score, r.reason, [str(f) for f in r.flags])
        for name, r in results.items()
    }
    assert all(r.score == 0 and r.bonus == 0 for r in results.values()), shown
    assert results["lookup"].status is Status.REVIEW, shown
    forger = results["forger"]
    assert forger.status is Status.GRADED and forger.recomputed and (forger.accuracy or 0) < 50, (
        shown
    )
    assert results["thread"].status in (Status.REVIEW, Status.ERROR, Status.VIOLATION), shown
    swapper = results["swapper"]
    assert swapper.status is Status.VIOLATION and "784->1024" in (swapper.reason or ""), shown
