"""The package's layout holds: one folder per stage, no import cycle, processes only from run/, the
probe alone in the kernel, the trusted evaluator a leaf, light imports where nothing runs, and one
list of flags."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grader.model.findings import MEANING, Flag, RuleId
from grader.static.rules import RULES

PACKAGE = Path(__file__).resolve().parent.parent / "grader"
README = PACKAGE.parent / "README.md"
STAGES = (
    "model",
    "intake",
    "static",
    "run",
    "probe",
    "evaluator",
    "judge",
    "scoring",
    "pipeline",
    "outputs",
    "cli",
)
# The evaluator's modules the kernel's probe may import: cheap (torch at most), nothing else of
# ours.
KERNEL_SIDE = ("grader.evaluator.key", "grader.evaluator.ops")
# What the trusted evaluator may import beside the standard library and itself (numpy: torch's).
EVALUATOR_IMPORTS = ("torch", "numpy")
# The modules that start processes; only run/ may import them.
PROCESS_MODULES = ("subprocess", "multiprocessing", "pty", "concurrent.futures.process")
PROCESS_CALLS = (
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.posix_spawnp",
    "os.system",
    "os.popen",
    "os.execv",
    "os.execve",
    "os.execvp",
    "os.execvpe",
    "os.spawnv",
    "os.spawnve",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and ast.unparse(node.test).endswith(
        "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The grader modules ``path`` imports at run time (deferred imports included, TYPE_CHECKING
    ones not)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _is_type_checking(block)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    me = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("grader")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grader"):
            for alias in node.names:  # `from grader.x import y`: the submodule y where there is one
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != me and not me.startswith(m + ".")}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "grader"


def test_every_module_lives_in_a_stage_folder() -> None:
    loose = [
        m
        for m in MODULES
        if m.count(".") == 1 and _stage(m) not in STAGES and m not in ("grader.__main__",)
    ]
    assert loose == [], f"modules outside a stage folder: {loose}"


def test_no_module_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_stages() -> None:
    stages = {s: set() for s in STAGES}
    for module, imported in GRAPH.items():
        for other in imported:
            if (
                _stage(module) in stages
                and _stage(other) != _stage(module)
                and _stage(other) in stages
            ):
                stages[_stage(module)].add(_stage(other))
    assert _cycles(stages) == [], stages


# The evaluator's warm server forks its own children, inside its sandbox: the evaluator is a program
# of its own, started from run/ like every process of the grader.
FORKS_INSIDE_ITS_SANDBOX = {"grader.evaluator.serve": {"os.fork"}}


def test_only_run_starts_processes() -> None:
    offenders = []
    for module, path in MODULES.items():
        if _stage(module) == "run":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == p or n.startswith(p + ".") for n in names for p in PROCESS_MODULES):
                offenders.append(f"{module}: imports {names}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) in PROCESS_CALLS:
                if ast.unparse(node.func) not in FORKS_INSIDE_ITS_SANDBOX.get(module, set()):
                    offenders.append(f"{module}: calls {ast.unparse(node.func)}")
    assert offenders == []


def test_the_probe_imports_nothing_else_of_the_grader() -> None:
    """Nothing but itself and the evaluator's key and op tables (one content key for both sides)."""
    outside = {
        m: sorted(i for i in imported if _stage(i) != "probe" and i not in KERNEL_SIDE)
        for m, imported in GRAPH.items()
        if _stage(m) == "probe"
    }
    assert {m: i for m, i in outside.items() if i} == {}
    assert "grader.evaluator.key" in GRAPH["grader.probe.content"]  # imported, not twinned


def _top_level_imports(path: Path) -> set[str]:
    """The first names of every module ``path`` imports (relative imports: '.')."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else (node.module or "").split(".")[0])
    return found


def test_the_evaluator_is_a_leaf_of_torch_and_the_standard_library() -> None:
    """The trusted evaluator imports nothing of the grader but itself, and else only torch (with
    numpy) and the standard library: no student-writable path is ever on its import path."""
    mine = {m: p for m, p in MODULES.items() if _stage(m) == "evaluator"}
    assert {f"grader.evaluator.{m}" for m in ("__main__", "key", "ops")} <= set(mine)
    grader = {m: sorted(i for i in GRAPH[m] if _stage(i) != "evaluator") for m in mine}
    assert {m: i for m, i in grader.items() if i} == {}
    allowed = set(sys.stdlib_module_names) | {"__future__", "grader", *EVALUATOR_IMPORTS}
    others = {m: sorted(_top_level_imports(p) - allowed) for m, p in mine.items()}
    assert {m: i for m, i in others.items() if i} == {}
    assert not [m for m in MODULES if "grader.evaluator.__main__" in GRAPH[m]]


def test_the_evaluator_started_by_its_path_loads_only_its_own_package() -> None:
    """As run/evaluate.py starts it (``python -I .../grader/evaluator/__main__.py``): the package
    beside the file, no path added to sys.path, and no grader module outside grader.evaluator."""
    main = PACKAGE / "evaluator" / "__main__.py"
    code = (
        f"import runpy, sys, json\nbefore = list(sys.path)\nrunpy.run_path({str(main)!r})\n"
        "import grader\n"
        "print(json.dumps([sorted(sys.modules), sys.path == before, grader.__file__]))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd="/",
    )
    loaded, same_path, where = json.loads(done.stdout.strip().splitlines()[-1])
    assert same_path and Path(where) == PACKAGE / "__init__.py"
    ours = [m for m in loaded if m.split(".")[0] == "grader"]
    assert [m for m in ours if _stage(m) not in ("grader", "evaluator")] == []
    # imported at its start, before the capture is read (while the notebook runs)
    assert "grader.evaluator.answer" in loaded and "torch._export.serde.serialize" in loaded


def test_the_kernel_side_of_the_evaluator_loads_nothing_heavy() -> None:
    """The probe imports the content key in the student's kernel: beside torch itself (loaded
    there already), it loads nothing (no torch.export, no fake tensors); the op tables, nothing."""
    torch_alone = _loaded("import torch")
    keyed = _loaded("import torch, grader.evaluator.key")
    assert keyed - torch_alone == {"grader", "grader.evaluator", "grader.evaluator.key"}
    assert not [m for m in _loaded("import grader.evaluator.ops") if m.split(".")[0] in HEAVY]


def test_judging_and_scoring_run_nothing() -> None:
    reaching = {
        m: sorted(i for i in imported if _stage(i) in ("run", "pipeline", "cli"))
        for m, imported in GRAPH.items()
        if _stage(m) in ("judge", "scoring", "model")
    }
    assert {m: i for m, i in reaching.items() if i} == {}


def test_outputs_never_grade() -> None:
    grading = {
        m: sorted(
            i
            for i in imported
            if _stage(i) in ("pipeline", "run", "judge", "cli")
            or i.startswith("grader.static.rules")
        )
        for m, imported in GRAPH.items()
        if _stage(m) == "outputs"
    }
    assert {m: i for m, i in grading.items() if i} == {}


def _loaded(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


HEAVY = ("torch", "nbclient", "jupyter_client", "ipykernel", "nbformat")


def test_pages_and_the_static_check_load_neither_torch_nor_the_kernel(tmp_path: Path) -> None:
    notebook = Path(__file__).parent / "fixtures" / "HW3_tinyok.py"
    checked = _loaded(f"from grader.cli import main\nmain(['check', {str(notebook)!r}])")
    outputs = _loaded(
        "import grader.outputs.pages, grader.outputs.text, grader.outputs.ci, "
        "grader.outputs.gradescope, grader.outputs.exports"
    )
    for loaded in (checked, outputs):
        assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert "grader.static.rules" in checked  # the check does load the rules; rendering does not:
    assert not [
        m for m in outputs if m.startswith(("grader.static.rules", "grader.run", "grader.judge"))
    ]


def test_grader_report_loads_no_rule(tmp_path: Path) -> None:
    (tmp_path / "out" / "results").mkdir(parents=True)
    loaded = _loaded(f"from grader.cli import main\nmain(['report', {str(tmp_path / 'out')!r}])")
    assert not [
        m
        for m in loaded
        if m.startswith(("grader.static", "grader.run", "grader.judge")) or m.split(".")[0] in HEAVY
    ]


def test_the_rubric_and_the_rules_name_the_same_rules() -> None:
    assert set(RULES) == set(RuleId) and all(RULES[r].id is r for r in RuleId)


def _readme_table(heading: str) -> list[tuple[str, list[str]]]:
    """The rows of the README's table in the section whose heading starts with ``heading``: each
    row's `name` (its first cell) and its other cells, in order."""
    text = README.read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    section = text[start:] if end == -1 else text[start:end]
    return [
        (name, rest.split(" | "))
        for name, rest in re.findall(r"^\| `([a-z_-]+)` \| (.+) \|$", section, re.M)
    ]


def test_the_readme_lists_every_flag_with_its_meaning() -> None:
    rows = _readme_table("Flags")
    assert len(rows) == len({name for name, _ in rows})  # each flag once
    assert {name: cells[0] for name, cells in rows} == {flag.value: MEANING[flag] for flag in Flag}
    # and what the TA should do
    assert all(len(cells) == 2 and cells[1].strip() for _, cells in rows)


def test_the_readme_lists_every_status_with_what_to_do() -> None:
    """Every status a result can have, and the gradebook's `missing` row of a roster student with no
    submission (read off the gradebook the code writes), each with its meaning and what to do;
    `review` first, the status that needs the TA."""
    from grader.model.results import Status
    from grader.model.rubric import load_rubric
    from grader.outputs.pages import gradebook_csv

    gradebook = gradebook_csv([], load_rubric(PACKAGE.parent / "rubric.yaml"), missing=["absent01"])
    roster_only = {row["status"] for row in csv.DictReader(io.StringIO(gradebook))}
    rows = _readme_table("Statuses")
    assert [name for name, _ in rows][0] == Status.REVIEW.value
    assert sorted(name for name, _ in rows) == sorted(
        {status.value for status in Status} | roster_only
    )
    assert all(len(cells) == 2 and all(c.strip() for c in cells) for _, cells in rows)


@pytest.mark.parametrize("flag", list(Flag))
def test_every_flag_has_a_meaning(flag: Flag) -> None:
    assert flag.meaning and str(flag) == flag.value and f"{flag}" == flag.value


def test_no_module_outside_the_parser_reads_the_probes_record_by_key() -> None:
    """The probe's record is read by key in one place, model/probe_facts.py (the probe writes
    it)."""
    from typing import get_type_hints

    from grader.probe.schema import ProbeRecord

    keys = set(get_type_hints(ProbeRecord)) - {"version"}  # the evaluator's manifest has its own
    found = []
    for module, path in MODULES.items():
        if module == "grader.model.probe_facts" or _stage(module) == "probe":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            key = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                key = node.args[0] if node.func.attr == "get" else None
            elif isinstance(node, ast.Subscript):
                key = node.slice
            if isinstance(key, ast.Constant) and key.value in keys:
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def _self_attributes(path: Path, name: str) -> set[str]:
    """The names a class assigns on ``self`` anywhere in its body."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        else:
            continue
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                    if t.value.id == "self":
                        names.add(t.attr)
    return names


def test_the_recorder_is_a_thin_dispatcher() -> None:
    """The probe's Recorder owns at most a dozen attributes; its observers own the rest."""
    attributes = _self_attributes(PACKAGE / "probe" / "recorder.py", "Recorder")
    assert 0 < len(attributes) <= 12, sorted(attributes)


def test_the_probes_integrity_check_covers_every_module_it_runs() -> None:
    """Every grader module the probe imports is in runtime._MODULES, whose functions the integrity
    check holds (a module left out could be patched by the student unseen)."""
    from grader.probe import runtime

    probe = {m for m in MODULES if _stage(m) == "probe"}
    ran = {i for m in probe for i in GRAPH[m]} | {"grader.probe.runtime"}
    checked = {m.__name__ for m in runtime._MODULES}
    without_code = {"grader.probe", "grader.probe.schema"}  # constants and types only
    assert sorted(ran - checked - without_code) == []
