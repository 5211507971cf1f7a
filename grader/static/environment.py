"""The grading environment: which modules the class's notebooks import or `!pip install`, which of
them are missing here (run/children.py installs the allowed ones, outside the sandbox, before the
batch)."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass

from grader.model.submission import Submission
from grader.static.pyast import parse_cells

# pip name -> module name, where they differ (both directions are used)
PACKAGE_MODULES = {
    "scikit-learn": "sklearn",
    "opencv-python-headless": "cv2",
    "pillow": "PIL",
    "pyyaml": "yaml",
    "scikit-image": "skimage",
    "torch-optimizer": "torch_optimizer",
    "pytorch-lightning": "pytorch_lightning",
    "ipython": "IPython",
}
_MODULE_PACKAGES = {module: package for package, module in PACKAGE_MODULES.items()}
# Colab's module is stubbed; the kernel brings IPython
_PROVIDED = {"google", "IPython", "ipykernel", "grader"}
_PIP = re.compile(r"^\s*[!%]\s*pip3?\s+install\s+(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Need:
    """A third-party module some submissions need."""

    module: str
    package: str  # what to `pip install`
    students: tuple[str, ...]
    installed: bool


def _imports(sub: Submission) -> set[str]:
    names: set[str] = set()
    for parsed in parse_cells(sub):
        for node in ast.walk(parsed.tree) if parsed.tree else ():
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    for cell in sub.code_cells:
        for match in _PIP.finditer(cell.source):
            for arg in shlex.split(match.group(1), comments=True):
                if not arg.startswith("-"):
                    package = re.split(r"[<>=!~\[;]", arg)[0]
                    names.add(PACKAGE_MODULES.get(package.lower(), package.replace("-", "_")))
    return {n for n in names if n and n not in sys.stdlib_module_names and n not in _PROVIDED}


def scan(submissions: tuple[Submission, ...]) -> tuple[Need, ...]:
    """Every third-party module the submissions use, with who uses it and whether it is
    installed."""
    users: dict[str, set[str]] = {}
    for sub in submissions:
        for module in _imports(sub):
            users.setdefault(module, set()).add(sub.account)
    return tuple(
        Need(
            module,
            _MODULE_PACKAGES.get(module, module.replace("_", "-")),
            tuple(sorted(students)),
            importlib.util.find_spec(module) is not None,
        )
        for module, students in sorted(users.items(), key=lambda item: (-len(item[1]), item[0]))
    )
