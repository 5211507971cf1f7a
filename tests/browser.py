"""Headless Chromium for the page tests: what a page puts first at a given width, whether anything
is wider than the window, what the browser logged, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium")
COMMON = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--allow-file-access-from-files",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


@dataclass(frozen=True)
class Seen:
    first: str  # the id of the first paragraph or section after the page's title
    wide: int  # the document's scroll width in pixels
    log: str  # what Chromium logged (console messages, uncaught errors)

    @property
    def quiet(self) -> bool:
        return "Uncaught" not in self.log and ":CONSOLE" not in self.log


def seen_at(page: Path, width: int, screenshot: Path | None = None) -> Seen:
    """``page`` in a frame ``width`` pixels wide, as a reader sees it first."""
    assert CHROMIUM is not None
    probe = page.parent / f".probe-{width}.html"
    probe.write_text(
        f'<!doctype html><body style="margin:0"><iframe id="f" src="{page.as_uri()}" '
        f'width="{width}" '
        'height="900" style="border:0"></iframe><script>document.getElementById("f").onload = '
        '() => {const d = document.getElementById("f").contentDocument; const first = '
        'd.querySelector("h1 ~ p, h1 ~ section");'
        "document.body.dataset.wide = d.documentElement.scrollWidth; "
        'document.body.dataset.first = first ? first.id : "";};</script></body>'
    )
    try:
        shown = subprocess.run(
            [CHROMIUM, *COMMON, "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink(missing_ok=True)
    if screenshot is not None:
        subprocess.run(
            [
                CHROMIUM,
                *COMMON,
                f"--window-size={width},1400",
                f"--screenshot={screenshot}",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    wide = (
        int(shown.stdout.split('data-wide="')[1].split('"')[0])
        if 'data-wide="' in shown.stdout
        else -1
    )
    first = (
        shown.stdout.split('data-first="')[1].split('"')[0]
        if 'data-first="' in shown.stdout
        else ""
    )
    return Seen(first, wide, shown.stderr)  # the frame's console is logged too


def leads_with_verdict(page: Path, widths: tuple[int, ...] = (1400, 420)) -> list[str]:
    """What is wrong with ``page`` at each width (empty: it is right): a student page opens with its
    verdict, the class page with its summary line; nothing is wider than the window; no script
    failed or logged."""
    expected = "summary" if page.name == "index.html" else "verdict"
    problems = []
    for width in widths:
        seen = seen_at(page, width, page.with_name(f"{page.stem}-{width}.png"))
        if seen.first != expected:
            problems.append(
                f"{page.name} at {width} px opens with {seen.first!r}, not {expected!r}"
            )
        if not 0 < seen.wide <= width:
            problems.append(f"{page.name} at {width} px is {seen.wide} px wide")
        if not seen.quiet:
            problems.append(f"{page.name} at {width} px logged: {seen.log[-300:]}")
    return problems
