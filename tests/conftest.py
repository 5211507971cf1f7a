"""Shared fixtures: the shipped rubric, the template's facts, a tiny FashionMNIST."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sandboxing import adopting_orphans  # noqa: E402
from tinydata import make_tiny_fashion_mnist  # noqa: E402

from grader.model.context import Context  # noqa: E402
from grader.model.dataset import Dataset  # noqa: E402
from grader.model.rubric import FrozenFacts, Rubric, load_rubric  # noqa: E402
from grader.static.reference import derive_facts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def rubric() -> Rubric:
    return load_rubric(ROOT / "rubric.yaml")


@pytest.fixture(scope="session")
def facts(rubric: Rubric) -> FrozenFacts:
    return derive_facts(rubric.template)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return Dataset(make_tiny_fashion_mnist(tmp_path_factory.mktemp("tiny-fmnist")))


@pytest.fixture(scope="session")
def tiny_context(rubric: Rubric, facts: FrozenFacts, tiny_dataset: Dataset) -> Context:
    return Context(rubric, facts, tiny_dataset)


@pytest.fixture
def adopting() -> Iterator[None]:
    """While the test runs, the orphans of its descendants stay its own (tests/sandboxing.py), so
    it can check what its sandboxes left while other tests grade beside it."""
    with adopting_orphans():
        yield


@pytest.fixture(scope="session")
def run_context(rubric: Rubric, facts: FrozenFacts, tiny_dataset: Dataset) -> Context:
    """Runs on the tiny dataset with no frozen rules, for tests about execution alone."""
    return Context(dataclasses.replace(rubric, frozen=()), facts, tiny_dataset)


# The test files that take minutes, slowest first (pytest --durations, 2026-12-06). pytest-xdist
# hands whole files to its workers in collection order; starting with these lets the workers end
# together instead of one of them grading a corpus alone at the end.
SLOWEST_FIRST = (
    "test_legal.py",
    "test_e2e_real.py",
    "test_patterns.py",
    "test_rules_corpus.py",
    "test_hostile.py",
    "test_evaluate.py",
    "test_ray.py",
    "test_sandbox.py",
    "test_seeds.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: within a file, and among the rest, the order stays
