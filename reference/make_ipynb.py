#!/usr/bin/env python
"""Build a Jupyter notebook (nbformat v4) from a `# In[ ]:`-separated .py script.

Usage: python make_ipynb.py SCRIPT.py [OUT.ipynb]

The script is in the layout `jupyter nbconvert --to script` writes: code cells
separated by lines `# In[ ]:`.  Every chunk between markers becomes one code cell,
stripped of leading and trailing blank lines; the header before the first marker
(shebang, coding line) and empty chunks are dropped.  No outputs are written.
"""
import re
import sys
from pathlib import Path

import nbformat

CELL_MARKER = re.compile(r"^# In\[[ 0-9]*\]:\s*$", re.MULTILINE)


def script_to_notebook(source):
    chunks = CELL_MARKER.split(source)[1:]  # drop the header before the first cell
    cells = []
    for chunk in chunks:
        lines = chunk.splitlines()
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        if lines:
            cells.append(nbformat.v4.new_code_cell("\n".join(lines)))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main(argv):
    if len(argv) not in (1, 2):
        print("usage: make_ipynb.py SCRIPT.py [OUT.ipynb]", file=sys.stderr)
        return 2
    src = Path(argv[0])
    out = Path(argv[1]) if len(argv) == 2 else src.with_suffix(".ipynb")
    nb = script_to_notebook(src.read_text(encoding="utf-8"))
    nbformat.validate(nb)
    nbformat.write(nb, str(out))
    print(f"wrote {out} ({len(nb.cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
