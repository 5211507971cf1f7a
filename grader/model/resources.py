"""Where the files the grader ships live: templates/, rubric.yaml and reference/.

They stay at the top of the repository, where a checkout (and an editable install) finds them. A
wheel carries them as package data under ``grader/_data`` (pyproject's force-include), so that a
plain ``pip install`` of the grader works from any folder, in Colab or a CI runner.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def shipped(name: str) -> Path:
    """The shipped file or folder ``name`` (``"templates"``, ``"rubric.yaml"``, ``"reference"``)."""
    # pip installs unpacked, so this is a real path
    packaged = Path(str(files("grader") / "_data" / name))
    return packaged if packaged.exists() else CHECKOUT / name


def installed_version(package: str) -> str:
    """The version of ``package`` installed here, or "absent"."""
    # not at the top: it loads the email package, which rendering never needs
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
