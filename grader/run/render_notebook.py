"""Run as a script in a child process (``python -I``; children.notebook_body): an executed notebook
on stdin, its cells as HTML on stdout. Imports nothing of the grader.

The notebook's markdown and outputs are the student's: everything nbconvert renders is cleaned with
an allow-list (bleach), so no script, event handler, frame, style or remote resource survives; a
link may go to http(s) or mailto, an image only to inline data. SVG outputs become inline images
(an ``<img>`` never runs what an SVG carries)."""

from __future__ import annotations

import base64
import logging
import re
import resource
import sys

MEMORY = 2 * 1024 * 1024 * 1024  # address space of this process
TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "dd",
    "del",
    "details",
    "div",
    "dl",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "span",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
PLAIN = {"class", "id", "title", "alt", "colspan", "rowspan", "align", "width", "height"}
# content too, not only the tags
_ACTIVE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)


def allowed(tag: str, name: str, value: str) -> bool:
    if name in PLAIN:
        return True
    if tag == "a" and name == "href":
        return value.startswith(("http://", "https://", "mailto:", "#"))
    return tag == "img" and name == "src" and value.startswith("data:image/")


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    logging.disable(logging.CRITICAL)
    import bleach  # type: ignore[import-untyped]
    import nbformat
    from nbconvert import HTMLExporter

    notebook = nbformat.reads(
        sys.stdin.buffer.read().decode("utf-8", errors="replace"), as_version=4
    )  # type: ignore[no-untyped-call]
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            svg = data.pop("image/svg+xml", None)
            if isinstance(svg, str) and not {"image/png", "text/html"} & set(data):
                data["text/html"] = (
                    '<img alt="figure" '
                    f'src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}">'
                )
            data.pop("application/javascript", None)
    exporter = HTMLExporter(template_name="basic", embed_images=True)  # type: ignore[no-untyped-call]
    body, _ = exporter.from_notebook_node(notebook)
    clean = bleach.clean(
        _ACTIVE.sub("", body),
        tags=TAGS,
        attributes=allowed,
        protocols={"http", "https", "mailto", "data"},
        strip=True,
        strip_comments=True,
    )
    sys.stdout.write(clean)


if __name__ == "__main__":
    main()
