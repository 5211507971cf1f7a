"""The CPU of an executed notebook's page: a fresh renderer per notebook (``once``, as outside a
batch) against the batch's warm renderer (a fork of a server that imported nbconvert once,
run/renderer.py). The fixture notebooks, each with outputs of every kind added (tests/
test_render_warm.py ``_executed``), rendered alternately both ways; the pages compared byte for
byte. CPU: this process's and its children's (the warm server's children counted in the server's,
from /proc).

Usage: python benchmarks/bench_render.py [-n 43]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_render_warm import _executed  # noqa: E402

from grader.run.renderer import WarmRenderer, once  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(pid: int) -> float:
    """The server's CPU and its reaped children's (each notebook's fork)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=43, help="how many fixture notebooks")
    args = parser.parse_args()
    sources = sorted((ROOT / "tests" / "fixtures").rglob("*.ipynb"))[: args.n]
    notebooks = [_executed(source, source.stem) for source in sources]
    warm = WarmRenderer()
    fresh_cpu, warm_cpu, same = [], [], 0
    start = time.process_time()
    first = warm.render(notebooks[0])  # the server's start: imports, exporter, warm-up
    assert warm.server is not None and first.code == 0
    server = warm.server.process.pid
    started = time.process_time() - start + _server_cpu(server)
    for data in notebooks:
        mine, theirs = time.process_time(), _children_cpu()
        fresh = once(data)
        fresh_cpu.append(time.process_time() - mine + _children_cpu() - theirs)
        mine, theirs = time.process_time(), _server_cpu(server)
        page = warm.render(data)
        warm_cpu.append(time.process_time() - mine + _server_cpu(server) - theirs)
        same += page == fresh and page.code == 0
    assert warm.server is not None and warm.server.process.pid == server
    warm.close()
    print(f"{len(notebooks)} notebooks, {same} pages byte-identical both ways")
    print(
        f"fresh: median {statistics.median(fresh_cpu):.3f} s of CPU a notebook "
        f"({min(fresh_cpu):.3f}-{max(fresh_cpu):.3f})"
    )
    print(
        f"warm:  median {statistics.median(warm_cpu):.3f} s of CPU a notebook "
        f"({min(warm_cpu):.3f}-{max(warm_cpu):.3f}); the server's start {started:.3f} s once"
    )
    total = started + sum(warm_cpu)
    print(
        f"the {len(notebooks)}: fresh {sum(fresh_cpu):.1f} s, warm {total:.1f} s with its start "
        f"({total / len(notebooks):.3f} s a notebook)"
    )


if __name__ == "__main__":
    main()
