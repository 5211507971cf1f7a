"""Locate, verify and prepare a rubric's dataset once, in torchvision's layout
(ROOT/FashionMNIST/raw, ROOT/cifar-10-batches-py), with the IDX files the grader reads beside its
own (model/dataset.py)."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from grader.model import cifar
from grader.model.dataset import (
    FILES,
    Dataset,
    KernelView,
    digest,
    write_idx_images,
    write_idx_labels,
)
from grader.model.datasets import (
    FASHION_MNIST,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataChoice,
)
from grader.model.errors import DataError

__all__ = ["FILES", "Dataset", "kernel_view", "label_copies", "prepare"]

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_STAMP = "verified.json"
_TEST_LABEL_MARK = "t10k-labels"  # any file named like an IDX test label file


def kernel_view(dataset: Dataset, folder: Path, hide_test_labels: bool) -> KernelView:
    """Links to the prepared files for one run's kernel. With ``hide_test_labels`` the test images
    come in a secret order and the test labels are random (in the IDX files and, for CIFAR, in its
    test batch alike), so that nothing the kernel can read, not even a copy of the public labels
    embedded in a notebook, says which prediction is right."""
    view = Dataset(folder, dataset.choice)
    view.raw.mkdir(parents=True, exist_ok=True)
    order: tuple[int, ...] | None = None
    if hide_test_labels:
        labels = list(dataset.test_labels())
        shuffled = list(range(len(labels)))
        random.SystemRandom().shuffle(shuffled)
        random.SystemRandom().shuffle(labels)
        order = tuple(shuffled)
        images = dataset.test_images(shuffled)
        write_idx_images(view.raw / TEST_IMAGES, images, len(order), dataset.spec.shape)
        write_idx_labels(view.raw / TEST_LABELS, labels)
        if dataset.kind.converted:  # CIFAR's own test batch, as torchvision reads it
            cifar.write_batch(view.raw / dataset.kind.test[0], images, tuple(labels), _TESTING)
    for name in dataset.names:
        target = view.raw / name
        if not target.exists():
            target.symlink_to((dataset.raw / name).resolve())
    return KernelView(view, order)


_TESTING = "testing batch 1 of 1"  # the official test batch's batch_label


def label_copies(dataset: Dataset, roots: tuple[Path, ...]) -> tuple[Path, ...]:
    """Where the real test labels may be read below ``roots`` (what a sandbox shows): the Debian
    package's folder, the prepared cache, and any file named like the test labels (CIFAR's test
    batch among them)."""
    marks = (_TEST_LABEL_MARK, *(n.lower() for n in dataset.kind.label_files[1:]))
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
                if any(mark in n.lower() for mark in marks)
                and not any((Path(folder) / n).is_relative_to(f) for f in found)
            ]
    return tuple(found)


def default_cache() -> Path:
    """$GRADER_DATA_CACHE, else ~/.cache/grader/fashion-mnist: the root every rubric's dataset is
    prepared under (FashionMNIST/raw, cifar-10-batches-py, ...), named for the first homework's
    and kept so that a TA's prepared data stays where it is."""
    env = os.environ.get("GRADER_DATA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "grader" / "fashion-mnist"


def _stamp_of(raw: Path, choice: DataChoice) -> dict[str, object]:
    """Each file's size and time (and the TA's own checksums, when the rubric gives some)."""
    dataset = Dataset(raw, choice)
    stamp: dict[str, object] = {
        name: [(raw / name).stat().st_size, (raw / name).stat().st_mtime_ns]
        for name in dataset.names
    }
    if choice.files:
        stamp["sha256"] = dict(choice.files)
    return stamp


def _is_verified(raw: Path, choice: DataChoice = FASHION_MNIST) -> bool:
    """True when the files were checksummed before and are unchanged since (size and mtime)."""
    try:
        return bool(json.loads((raw / _STAMP).read_text()) == _stamp_of(raw, choice))
    except (OSError, ValueError):
        return False


def _failing(raw: Path, choice: DataChoice) -> list[str]:
    """Names of the dataset's files that are missing from ``raw`` or fail their checksum."""
    expected = choice.checksums()
    unknown = [name for name in choice.kind.files if name not in expected]
    if unknown:
        raise DataError(
            f"the checksums of {choice.name}'s {', '.join(unknown)} are not known: give their "
            "sha256 in the rubric's dataset.files"
        )
    return [
        name
        for name in choice.kind.files
        if not (raw / name).is_file() or digest(raw / name, expected[name][0]) != expected[name][1]
    ]


def verify(raw: Path, choice: DataChoice = FASHION_MNIST) -> list[str]:
    """Names of the dataset's files that are missing or fail their checksum; if none, writes the
    IDX files converted from them (CIFAR) and stamps them verified."""
    bad = _failing(raw, choice)
    if not bad:
        _convert(raw, choice)
        _stamp(raw, choice)
    return bad


def _convert(raw: Path, choice: DataChoice) -> None:
    """CIFAR's batches, verified, as the IDX files the grader reads (images channel by channel)."""
    kind = choice.kind
    if not kind.converted:
        return
    names = choice.classes or (cifar.label_names(raw / kind.meta) if kind.meta else ())
    classes = len(names)
    shape = (cifar.CHANNELS, cifar.HEIGHT, cifar.WIDTH)
    for files, images, labels in (
        (kind.train, TRAIN_IMAGES, TRAIN_LABELS),
        (kind.test, TEST_IMAGES, TEST_LABELS),
    ):
        read = [cifar.read_batch(raw / name) for name in files]
        pixels, found = b"".join(r[0] for r in read), [v for r in read for v in r[1]]
        if classes and found and max(found) >= classes:
            raise DataError(f"{raw}: a label {max(found)} is not one of the {classes} classes")
        write_idx_images(raw / images, pixels, len(found), shape)
        write_idx_labels(raw / labels, found)


def _stamp(raw: Path, choice: DataChoice) -> None:
    """Mark the checksummed files of ``raw`` verified as they are now (size and mtime)."""
    _make_readable(raw, choice)
    (raw / _STAMP).write_text(json.dumps(_stamp_of(raw, choice)))


def _make_readable(raw: Path, choice: DataChoice) -> None:
    """The sandbox runs student code as another user, which must be able to read the data."""
    for name in Dataset(raw, choice).names:
        path = raw / name
        if path.stat().st_mode & 0o444 != 0o444 and path.stat().st_uid == os.geteuid():
            path.chmod(0o644)


def _find_file(directory: Path, name: str, choice: DataChoice) -> Path | None:
    for folder in (directory, directory / choice.kind.folder, directory / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _copy_from(directory: Path, raw: Path, choice: DataChoice) -> list[str]:
    """Copy (and gunzip) the dataset's files from ``directory`` into ``raw``; return what is
    missing or corrupt."""
    found = {name: _find_file(directory, name, choice) for name in choice.kind.files}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return missing
    raw.mkdir(parents=True, exist_ok=True)
    if all(
        path is not None and path.resolve() == (raw / name).resolve()
        for name, path in found.items()
    ):
        return verify(raw, choice)
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
        bad = _failing(staging, choice)
        if bad:
            return bad
        _convert(staging, choice)
        for name in Dataset(staging, choice).names:
            (staging / name).replace(raw / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _stamp(raw, choice)  # the files were checksummed in staging and moved whole
    return []


def _download_into(dataset: Dataset) -> list[str]:
    """torchvision's own download, where a network exists (outside any sandbox)."""
    try:
        import torchvision.datasets  # heavy; only for this rare path

        known = getattr(torchvision.datasets, dataset.kind.name)
        known(root=str(dataset.root), train=True, download=True)
        known(root=str(dataset.root), train=False, download=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "this way did not work"
        return [f"download failed ({type(exc).__name__})"]
    return verify(dataset.raw, dataset.choice)


def prepare(
    source: Path | None = None,
    cache: Path | None = None,
    allow_download: bool = True,
    choice: DataChoice = FASHION_MNIST,
) -> Dataset:
    """Return the prepared, checksummed dataset ``choice`` (the rubric's), building the cache on
    first use.

    Tried in order: ``source`` (a directory the user names), Debian's dataset-fashion-mnist (for
    FashionMNIST), torchvision's download. One message names every way when none works.
    """
    dataset = Dataset(cache or default_cache(), choice)
    name, raw = choice.name, dataset.raw
    if source is None and _is_verified(raw, choice):
        _make_readable(raw, choice)
        return dataset
    attempts: list[str] = []
    if source is not None:
        if not source.is_dir():
            raise DataError(
                f"--from {source}: no such directory; name the folder holding {name}'s files "
                f"({', '.join(choice.kind.files)})"
            )
        problems = _copy_from(source, raw, choice)
        if not problems:
            return dataset
        raise DataError(
            f"--from {source}: missing or corrupt: {', '.join(problems)}; give the "
            f"official {name} files, or their sha256 in the rubric's dataset.files"
        )
    if (raw / choice.kind.files[0]).is_file() and not verify(raw, choice):
        return dataset
    packaged = {"FashionMNIST": DEBIAN_DIR}.get(name)
    if packaged is not None and packaged.is_dir():
        problems = _copy_from(packaged, raw, choice)
        if not problems:
            return dataset
        attempts.append(f"{packaged}: {', '.join(problems)}")
    if allow_download:
        problems = _download_into(dataset)
        if not problems:
            return dataset
        attempts.append("torchvision download: " + ", ".join(problems))
    package = ", or `apt-get install dataset-fashion-mnist`" if packaged is not None else ""
    raise DataError(
        f"{name} not found: run `grader data --from DIR` with its files "
        f"({', '.join(choice.kind.files)}){package}, or `grader data` where the network reaches "
        "the dataset's host" + (f" (tried {'; '.join(attempts)})" if attempts else "")
    )
