from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from tinydata import make_tiny_fashion_mnist

from grader.intake import dataset as data
from grader.model.dataset import read_idx_labels
from grader.model.errors import DataError


def test_labels_are_read_from_idx(tmp_path: Path) -> None:
    root = make_tiny_fashion_mnist(tmp_path, train=30, test=20)
    labels = data.Dataset(root).test_labels()
    assert len(labels) == 20 and set(labels) <= set(range(10))


def test_corrupt_label_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(DataError, match="not an IDX label file"):
        read_idx_labels(bad)


def test_wrong_files_fail_their_checksum(tmp_path: Path) -> None:
    source = make_tiny_fashion_mnist(tmp_path / "src")
    with pytest.raises(DataError, match="missing or corrupt: train-images-idx3-ubyte"):
        data.prepare(source, cache=tmp_path / "cache")


def test_no_source_names_all_three_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError) as info:
        data.prepare(cache=tmp_path / "cache", allow_download=False)
    message = str(info.value)
    assert (
        "grader data --from DIR" in message
        and "dataset-fashion-mnist" in message
        and "network" in message
    )


def test_missing_source_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        data.prepare(tmp_path / "absent", cache=tmp_path / "cache")


@pytest.mark.skipif(not data.DEBIAN_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_real_files_from_a_named_gz_folder_are_verified(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for item in data.DEBIAN_DIR.glob("*.gz"):
        shutil.copy(item, folder / item.name)
    dataset = data.prepare(folder, cache=tmp_path / "cache")
    assert sorted(p.name for p in dataset.raw.iterdir() if p.name in data.FILES) == sorted(
        data.FILES
    )
    assert len(dataset.test_labels()) == 10000
    # A corrupted cache is detected and rebuilt from Debian's copy.
    (dataset.raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.compress(b"junk"))
    assert (
        data.prepare(cache=tmp_path / "cache", allow_download=False).test_labels()[:3]
        == dataset.test_labels()[:3]
    )


@pytest.mark.skipif(not data.DEBIAN_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_wrong_files_never_replace_a_good_cache(tmp_path: Path) -> None:
    """`grader data --from` a folder of wrong files (a tiny or altered copy) fails with one line and
    leaves the verified cache as it was: graders reading it meanwhile never see those files."""
    cache = tmp_path / "cache"
    good = data.prepare(data.DEBIAN_DIR, cache=cache)
    before = {name: (good.raw / name).read_bytes() for name in data.FILES}
    with pytest.raises(DataError, match="missing or corrupt"):
        data.prepare(make_tiny_fashion_mnist(tmp_path / "tiny"), cache=cache)
    assert {name: (good.raw / name).read_bytes() for name in data.FILES} == before
    assert data._is_verified(good.raw) and not list(good.raw.glob(".incoming-*"))
    assert len(data.prepare(cache=cache, allow_download=False).test_labels()) == 10000
