"""`grader.precheck()` in a real Jupyter kernel: the notebook being edited, found without saving
it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "reference" / "HW3_template.ipynb"


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[KernelManager, object]]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(
        cwd=str(ROOT), env={k: v for k, v in os.environ.items() if k != "GRADER_PROBE"}
    )
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield manager, client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def _run(client: object, code: str) -> dict[str, str]:
    """Execute ``code``; the mime bundle it displayed (execute_result or display_data), or the
    error."""
    msg_id = client.execute(code)  # type: ignore[attr-defined]
    shown: dict[str, str] = {}
    while True:
        msg = client.get_iopub_msg(timeout=60)  # type: ignore[attr-defined]
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind in ("execute_result", "display_data"):
            shown.update(content["data"])
        elif kind == "error":
            shown["error"] = "\n".join(content["traceback"])
        elif kind == "stream":
            shown["stream"] = shown.get("stream", "") + content["text"]
        elif kind == "status" and content["execution_state"] == "idle":
            return shown


def test_the_notebook_of_the_jupyter_session_is_checked(
    kernel: tuple[KernelManager, object], tmp_path: Path
) -> None:
    _, client = kernel
    notebook = tmp_path / "HW3_ann.ipynb"
    data = json.loads(TEMPLATE.read_text())
    for cell in data["cells"]:
        source = "".join(cell["source"])
        cell["source"] = source.replace("n_epochs = 10", "n_epochs = 30")
    notebook.write_text(json.dumps(data))
    shown = _run(
        client,
        f"import os; os.environ['JPY_SESSION_NAME'] = {str(notebook)!r}\n"
        "import grader\ngrader.precheck()",
    )
    assert "error" not in shown, shown.get("error")
    html, text = shown["text/html"], shown["text/plain"]
    assert (
        "Fix before submitting" in html
        and "broken" in html
        and ("Instead: keep the number of epochs") in html
    )
    assert "BROKEN" in text and "epochs" in text and "HW3_ann.ipynb" in text


def test_the_colab_path_asks_the_front_end_for_the_open_notebook(
    kernel: tuple[KernelManager, object],
) -> None:
    _, client = kernel
    notebook = json.loads(TEMPLATE.read_text())
    notebook["metadata"]["colab"] = {"name": "HW3_bo.ipynb"}
    fake = (
        "import sys, types\ncolab = types.ModuleType('google.colab'); message = "
        "types.ModuleType('google.colab._message')\n"
        f"message.blocking_request = lambda kind, request='', timeout_sec=0: {{'ipynb': "
        f"{notebook!r}}} if kind == 'get_ipynb' else None\ncolab._message = message\n"
        "sys.modules['google.colab'] = colab; sys.modules['google.colab._message'] = message\n"
    )
    shown = _run(
        client,
        fake + "import os; os.environ.pop('JPY_SESSION_NAME', None)\n"
        "import grader, time\nstart = time.perf_counter(); v = grader.precheck()\n"
        "print(v.ok, round(time.perf_counter() - start, 3))\nv",
    )
    assert "error" not in shown, shown.get("error")
    assert (
        "Ready: every rule is kept" in shown["text/html"]
        and "the notebook open in Colab" in shown["text/html"]
    )
    ok, seconds = shown["stream"].split()
    assert ok == "True" and float(seconds) > 0
    _run(
        client,
        "import sys; [sys.modules.pop(m) for m in ('google.colab', 'google.colab._message')]",
    )


def test_without_a_notebook_it_says_what_to_do_and_inside_a_grading_run_it_does_nothing(
    kernel: tuple[KernelManager, object],
) -> None:
    _, client = kernel
    shown = _run(
        client,
        "import os; os.environ.pop('JPY_SESSION_NAME', None)\nimport grader\ngrader.precheck()",
    )
    assert "call grader.precheck(&#39;HW3_&lt;account&gt;.ipynb&#39;)" in shown["text/html"]
    shown = _run(client, "os.environ['GRADER_PROBE'] = '1'\ngrader.precheck()")
    assert "skipped inside a grading run" in shown["text/plain"]
    _run(client, "os.environ.pop('GRADER_PROBE')")


def test_markup_in_the_notebook_is_shown_as_text(tmp_path: Path) -> None:
    from grader.pipeline.precheck import precheck

    data = json.loads(TEMPLATE.read_text())
    data["cells"].append(
        {
            "cell_type": "code",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
            "source": "valid_size = 0.3  # <script>alert(1)</script>",
        }
    )
    path = tmp_path / "HW3_<img src=x onerror=alert(1)>.ipynb"
    path.write_text(json.dumps(data))
    html = precheck(path)._repr_html_()
    assert "<script>" not in html and "<img" not in html and "&lt;img src=x" in html


def test_an_unreadable_cell_is_not_called_ready(tmp_path: Path) -> None:
    from grader.pipeline.precheck import precheck

    data = json.loads(TEMPLATE.read_text())
    data["cells"].append(
        {
            "cell_type": "code",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
            "source": "def broken(:\n    pass",
        }
    )
    (tmp_path / "HW3_cy.ipynb").write_text(json.dumps(data))
    verdict = precheck(tmp_path / "HW3_cy.ipynb")
    assert not verdict.ok and verdict.headline.startswith(
        "Nothing is broken, but not every rule could be decided"
    )
    assert "undecided" in str(verdict) and "Ready" not in verdict._repr_html_()
