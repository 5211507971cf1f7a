"""Locate, verify and prepare FashionMNIST once, in torchvision's layout (ROOT/FashionMNIST/raw)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import struct
import tempfile
from pathlib import Path

from grader.model.dataset import FILES, TEST_IMAGES, TEST_LABELS, Dataset, KernelView
from grader.model.errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_STAMP = "verified.json"


def kernel_view(dataset: Dataset, folder: Path, hide_test_labels: bool) -> KernelView:
    """Links to the prepared files for one run's kernel. With ``hide_test_labels`` the test images
    come in a secret order and the test labels are random, so that nothing the kernel can read,
    not even a copy of the public labels embedded in a notebook, says which prediction is right."""
    raw = Dataset(folder).raw
    raw.mkdir(parents=True, exist_ok=True)
    order: tuple[int, ...] | None = None
    for name in FILES:
        target = raw / name
        if hide_test_labels and name == TEST_IMAGES:
            data = (dataset.raw / name).read_bytes()
            count, size = struct.unpack(">I", data[4:8])[0], dataset.spec.values
            shuffled = list(range(count))
            random.SystemRandom().shuffle(shuffled)
            order = tuple(shuffled)
            target.write_bytes(
                data[:16] + b"".join(data[16 + i * size : 16 + (i + 1) * size] for i in order)
            )
        elif hide_test_labels and name == TEST_LABELS:
            labels = list(dataset.test_labels())
            random.SystemRandom().shuffle(labels)
            target.write_bytes(struct.pack(">II", 2049, len(labels)) + bytes(labels))
        else:
            target.symlink_to((dataset.raw / name).resolve())
    return KernelView(Dataset(folder), order)


def label_copies(dataset: Dataset, roots: tuple[Path, ...]) -> tuple[Path, ...]:
    """Where the real test labels may be read below ``roots`` (what a sandbox shows): the Debian
    package's folder, the prepared cache, and any file named like the test labels."""
    found = [
        p
        for p in (DEBIAN_DIR, dataset.raw)
        if p.exists() and any(p.is_relative_to(r) for r in roots)
    ]
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            found += [
                Path(folder) / n
                for n in names
                if "t10k-labels" in n.lower()
                and not any((Path(folder) / n).is_relative_to(f) for f in found)
            ]
    return tuple(found)


def default_cache() -> Path:
    """$GRADER_DATA_CACHE, else ~/.cache/grader/fashion-mnist."""
    env = os.environ.get("GRADER_DATA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "grader" / "fashion-mnist"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_of(raw: Path) -> dict[str, list[int]]:
    return {name: [(raw / name).stat().st_size, (raw / name).stat().st_mtime_ns] for name in FILES}


def _is_verified(raw: Path) -> bool:
    """True when the files were checksummed before and are unchanged since (size and mtime)."""
    try:
        return bool(json.loads((raw / _STAMP).read_text()) == _stamp_of(raw))
    except (OSError, ValueError):
        return False


def _failing(raw: Path) -> list[str]:
    """Names of the four files that are missing from ``raw`` or fail their checksum."""
    return [
        name
        for name, digest in FILES.items()
        if not (raw / name).is_file() or _sha256(raw / name) != digest
    ]


def verify(raw: Path) -> list[str]:
    """Names of the four files that are missing or fail their checksum; stamps them verified if
    none."""
    bad = _failing(raw)
    if not bad:
        _stamp(raw)
    return bad


def _stamp(raw: Path) -> None:
    """Mark the checksummed files of ``raw`` verified as they are now (size and mtime)."""
    _make_readable(raw)
    (raw / _STAMP).write_text(json.dumps(_stamp_of(raw)))


def _make_readable(raw: Path) -> None:
    """The sandbox runs student code as another user, which must be able to read the data."""
    for name in FILES:
        path = raw / name
        if path.stat().st_mode & 0o444 != 0o444 and path.stat().st_uid == os.geteuid():
            path.chmod(0o644)


def _find_file(directory: Path, name: str) -> Path | None:
    for folder in (directory, directory / "FashionMNIST" / "raw", directory / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _copy_from(directory: Path, raw: Path) -> list[str]:
    """Copy (and gunzip) the four files from ``directory`` into ``raw``; return what is missing."""
    found = {name: _find_file(directory, name) for name in FILES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return missing
    raw.mkdir(parents=True, exist_ok=True)
    if all(
        path is not None and path.resolve() == (raw / name).resolve()
        for name, path in found.items()
    ):
        return verify(raw)
    # Copied and checked beside the cache first: wrong files never replace a good cache, and a
    # grader reading the cache meanwhile only ever sees whole, verified files (each moved in
    # atomically).
    staging = Path(tempfile.mkdtemp(dir=raw, prefix=".incoming-"))
    try:
        for name, source in found.items():
            assert source is not None
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as src, (staging / name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
        bad = _failing(staging)
        if bad:
            return bad
        for name in FILES:
            (staging / name).replace(raw / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _stamp(raw)  # the files were checksummed in staging and moved whole
    return []


def _download_into(root: Path) -> list[str]:
    """torchvision's own download, where a network exists (outside any sandbox)."""
    try:
        from torchvision.datasets import FashionMNIST  # heavy; only for this rare path

        FashionMNIST(root=str(root), train=True, download=True)
        FashionMNIST(root=str(root), train=False, download=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "this way did not work"
        return [f"download failed ({type(exc).__name__})"]
    return verify(root / "FashionMNIST" / "raw")


def prepare(
    source: Path | None = None, cache: Path | None = None, allow_download: bool = True
) -> Dataset:
    """Return the prepared, checksummed dataset, building the cache on first use.

    Tried in order: ``source`` (a directory the user names), Debian's dataset-fashion-mnist,
    torchvision's download. One message names all three ways when none works.
    """
    dataset = Dataset(cache or default_cache())
    if source is None and _is_verified(dataset.raw):
        _make_readable(dataset.raw)
        return dataset
    attempts: list[str] = []
    if source is not None:
        if not source.is_dir():
            raise DataError(
                f"--from {source}: no such directory; name the folder holding the four "
                "FashionMNIST IDX files"
            )
        problems = _copy_from(source, dataset.raw)
        if not problems:
            return dataset
        raise DataError(
            f"--from {source}: missing or corrupt: {', '.join(problems)}; give the "
            "official FashionMNIST files"
        )
    if (dataset.raw / next(iter(FILES))).is_file() and not verify(dataset.raw):
        return dataset
    if DEBIAN_DIR.is_dir():
        problems = _copy_from(DEBIAN_DIR, dataset.raw)
        if not problems:
            return dataset
        attempts.append(f"{DEBIAN_DIR}: {', '.join(problems)}")
    if allow_download:
        problems = _download_into(dataset.root)
        if not problems:
            return dataset
        attempts.append("torchvision download: " + ", ".join(problems))
    raise DataError(
        "FashionMNIST not found: run `grader data --from DIR` with the four IDX files, "
        "or `apt-get install dataset-fashion-mnist`, or `grader data` where the network reaches "
        "the dataset's host" + (f" (tried {'; '.join(attempts)})" if attempts else "")
    )
