"""Runs inside the student's kernel, before and after their code. It records; it never decides.

``install(config)`` seeds the RNGs, points every ``FashionMNIST(...)`` (the rubric's dataset
class, ``REDIRECTED``) at the prepared data (whatever root and download flag the notebook passes),
stubs Colab's modules and offline pip, and starts the recorder (recorder.py): global module hooks
for the model's inputs and outputs, an optimizer step hook, and patches of DataLoader iteration
and ``load_state_dict``. ``export()`` finds the trained model by ownership (model.py), traces its
forward, predicts the test set itself only when the notebook never did, and writes plain JSON.
Only the grader's process compares predictions with labels and judges the rules.
"""

from __future__ import annotations

import collections
import functools
import importlib
import inspect
import json
import os
import random
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, cast

import torch
import torchvision.datasets
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.data import DataLoader, Subset
from torch.utils.data.dataloader import _BaseDataLoaderIter

from grader.evaluator import key as keys, ops as op_tables
from grader.evaluator.key import FASHION_MNIST, ImageSpec
from grader.probe import (
    RECORD_VERSION,
    capture,
    checkpoints,
    content,
    continuity,
    events,
    gradients,
    guard,
    identity,
    model as models,
    passes,
    patches,
    predictions,
    recorder as recorders,
    steps,
    training,
)
from grader.probe.content import ImageIndex
from grader.probe.guard import guarded, own_modes
from grader.probe.identity import Serials
from grader.probe.patches import Patches
from grader.probe.recorder import Recorder
from grader.probe.schema import ProbeRecord

# The torchvision dataset classes the probe points at the prepared data, by name (the config's
# "dataset", the rubric's; FashionMNIST without one), each with the module whose
# ``check_integrity`` (md5s of the official files) trusts the prepared copy: the grader verified it
# against the rubric's checksums before the run, so on the official files nothing changes.
REDIRECTED: dict[str, str | None] = {
    "FashionMNIST": None,
    "MNIST": None,
    "KMNIST": None,
    "CIFAR10": "torchvision.datasets.cifar",
}
_NOT_TRAIN = object()
_OWN_CODE: dict[str, tuple[Any, Any]] = {}  # the probe's functions and their code, as installed
# Every module of the grader the probe runs (tests/test_layout.py holds the list complete): the
# integrity check finds any of their functions replaced.
_MODULES = (
    sys.modules[__name__],
    capture,
    checkpoints,
    content,
    continuity,
    keys,
    op_tables,
    events,
    gradients,
    guard,
    identity,
    models,
    passes,
    patches,
    predictions,
    recorders,
    steps,
    training,
)


class _State:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        # the images' geometry and class count (key.py ImageSpec), FashionMNIST's when not given
        spec = ImageSpec.parse(config["image"]) if "image" in config else FASHION_MNIST
        self.classes = spec.classes
        name = config.get("dataset", "FashionMNIST")
        if name not in REDIRECTED:
            raise ValueError(f"the probe redirects no dataset class {name!r}")
        self.dataset_class: Any = getattr(torchvision.datasets, name)
        self.serials = Serials()
        self.recorder = Recorder(
            ImageIndex(Path(config.get("images") or f"{config['data_root']}/{name}/raw"), spec),
            self.classes,
            self.serials,
        )
        self.patches = Patches()
        self.hooks: list[Any] = []
        # the module hooks, taken out while a DataLoader builds a batch
        self.module_hooks = _Quiet()
        self.updates: dict[type, Any] = {}  # optimizer class -> the probe's wrapper of its own step
        self.test_sets: list[Any] = []  # the notebook's, for the fallback's preprocessing


_state: _State | None = None


class _Quiet:
    """Takes the probe's global module hooks out while a DataLoader builds a batch and puts them
    back.

    A dataset's per-image transforms (Normalize, RandomRotation, ...) are modules: with the hooks
    in,
    each image costs two hook calls that only return (the recorder ignores calls while fetching),
    hundreds of thousands per run. Nested fetches (a loader inside a dataset) are counted. Only the
    main thread's fetches take them out: a prefetching thread must not hide the main thread's model
    calls (the recorder ignores that thread's calls by itself)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.depth = 0
        self.taken: list[tuple[dict[int, Any], int, Any]] = []
        self.main = threading.main_thread().ident

    def __enter__(self) -> None:
        if threading.get_ident() != self.main:
            return
        self.depth += 1
        if self.depth == 1:
            for handle in self.handles:
                for table in (
                    handle.hooks_dict_ref(),
                    *(ref() for ref in getattr(handle, "extra_dict_ref", ())),
                ):
                    if table is not None and handle.id in table:
                        self.taken.append((table, handle.id, table.pop(handle.id)))

    def __exit__(self, *exc: object) -> None:
        if threading.get_ident() != self.main:
            return
        self.depth -= 1
        if self.depth == 0:
            for table, key, value in self.taken:
                table[key] = value
            self.taken.clear()


def _safe_len(obj: Any) -> int:
    try:
        return len(obj)
    except Exception:  # noqa: BLE001 - a student's __len__ may raise anything
        return -1


def _train_mapping(dataset: Any, known: Any, depth: int = 0) -> Any:
    """How a loader's indices map onto the training set (of the ``known`` class): None for the
    dataset itself (or a copy of it), a list for a Subset (``random_split``), through a student's
    wrapper Dataset of the same length at any level; _NOT_TRAIN when the loader reads something
    else."""
    if isinstance(dataset, known):
        return None if dataset.train else _NOT_TRAIN
    if depth > 4:
        return _NOT_TRAIN
    if isinstance(dataset, Subset):
        inner = _train_mapping(dataset.dataset, known, depth + 1)
        if inner is _NOT_TRAIN:
            return _NOT_TRAIN
        return [int(i) if inner is None else inner[int(i)] for i in dataset.indices]
    if hasattr(dataset, "__dict__"):  # a wrapper Dataset (a transform added to a split, say)
        for value in list(vars(dataset).values()):
            if (
                hasattr(value, "__getitem__")
                and hasattr(value, "__len__")
                and _safe_len(value) == _safe_len(dataset)
            ):
                inner = _train_mapping(value, known, depth + 1)
                if inner is not _NOT_TRAIN:
                    return inner
    return _NOT_TRAIN


# -- patches ----------------------------------------------------------------------------------
def _patch_dataset(state: _State) -> None:
    known = state.dataset_class
    original = known.__init__
    signature = inspect.signature(original)
    root = str(state.config["data_root"])
    # torchvision's own subclasses of it in the table (FashionMNIST and KMNIST of MNIST) are other
    # datasets, not redirected; a notebook's subclass is
    others = tuple(
        other
        for name in REDIRECTED
        if (other := getattr(torchvision.datasets, name)) is not known and issubclass(other, known)
    )

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(self, others):
            original(self, *args, **kwargs)
            return
        bound = signature.bind(self, *args, **kwargs)
        # whatever the notebook passed: 'data', '~/...', '/content/...'
        bound.arguments["root"] = root
        if "download" in bound.arguments:
            bound.arguments["download"] = False  # the data is already there; no network here
        original(*bound.args, **bound.kwargs)
        if not bound.arguments.get("train", True):
            state.test_sets.append(self)

    state.patches.set(known, "__init__", __init__)
    checker = REDIRECTED[known.__name__]
    if checker is not None:
        _trust_prepared(state, importlib.import_module(checker), root)


def _trust_prepared(state: _State, module: Any, root: str) -> None:
    """``module.check_integrity`` true for any file of the prepared data below ``root`` (the grader
    verified them), torchvision's own check elsewhere."""
    original = module.check_integrity
    inside = os.path.join(os.path.abspath(root), "")

    def check_integrity(fpath: Any, md5: Any = None) -> bool:
        path = os.path.abspath(os.fspath(fpath))
        if path.startswith(inside):
            return os.path.isfile(path)
        return bool(original(fpath, md5))

    state.patches.set(module, "check_integrity", check_integrity)


def _patch_loaders(state: _State) -> None:
    """Passes of DataLoaders over the training set: which indices their sampler drew."""
    loader_iter = DataLoader.__iter__
    next_index = _BaseDataLoaderIter._next_index
    iter_next = _BaseDataLoaderIter.__next__
    recorder = state.recorder

    @guarded
    def tracked(loader: DataLoader) -> tuple[passes.TrainPass, Any] | None:  # type: ignore[type-arg]
        mapping = _train_mapping(loader.dataset, state.dataset_class)
        size = recorder.shared.index.sizes.get("train")
        return (
            None
            if mapping is _NOT_TRAIN or size is None
            else (recorder.start_loader_pass(size), mapping)
        )

    @guarded
    def yielded(track: tuple[passes.TrainPass, Any], indices: Any, batch: Any) -> None:
        indices = [indices] if isinstance(indices, int) else [int(i) for i in indices]
        recorder.loader_batch(
            track[0], indices if track[1] is None else [track[1][i] for i in indices], batch
        )

    def __iter__(self: DataLoader) -> Any:  # type: ignore[type-arg]
        if recorder.internal:
            return loader_iter(self)
        track = tracked(self)
        reused = getattr(self, "_iterator", None)
        if reused is not None:  # persistent workers: the iterator is reset, not rebuilt
            reused.__dict__.pop("_grader_pending", None)
            reused.__dict__["_grader_track"] = track
        # worker processes start here and inherit it: their transforms are not the model
        recorder.begin_fetch()
        try:
            with state.module_hooks:
                iterator = loader_iter(self)
        finally:
            recorder.end_fetch()
        iterator.__dict__["_grader_track"] = track
        return iterator

    def _next_index(self: _BaseDataLoaderIter) -> Any:
        indices = next_index(self)
        # Worker loaders fetch indices ahead, before __iter__ returns: keep them all, in order.
        self.__dict__.setdefault("_grader_pending", collections.deque()).append(indices)
        return indices

    def __next__(self: _BaseDataLoaderIter) -> Any:
        track = self.__dict__.get("_grader_track")
        # a dataset's transforms (Normalize, ...) are modules: not the model's calls
        recorder.begin_fetch()
        try:
            with state.module_hooks:
                batch = iter_next(self)
        except StopIteration:
            if track is not None:
                track[0].complete = True
            raise
        finally:
            recorder.end_fetch()
        if track is None:
            return batch
        pending = self.__dict__.get("_grader_pending")
        indices = pending.popleft() if pending else None
        if indices is not None:
            yielded(track, indices, batch)
        return batch

    state.patches.set(DataLoader, "__iter__", __iter__)
    state.patches.set(_BaseDataLoaderIter, "_next_index", _next_index)
    state.patches.set(_BaseDataLoaderIter, "__next__", __next__)


def _patch_loads(state: _State) -> None:
    """States taken (``best = copy.deepcopy(model.state_dict())``, ``torch.save(model.state_dict(),
    ...)``)
    and checkpoints loaded into a model (``model.load_state_dict(best)``): which step a load
    restores."""
    original = torch.nn.Module.load_state_dict
    taken = torch.nn.Module.state_dict
    recorder = state.recorder
    loaded, captured = guarded(recorder.on_load), guarded(recorder.on_capture)

    def load_state_dict(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if not recorder.internal:
            loaded(self)
        return result

    def state_dict(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        result = taken(self, *args, **kwargs)
        # Only the outermost call: torch builds a model's state by calling this on every submodule.
        if (
            not args
            and not kwargs.get("prefix")
            and kwargs.get("destination") is None
            and not recorder.internal
        ):
            captured(self)
        return result

    state.patches.set(torch.nn.Module, "load_state_dict", load_state_dict)
    state.patches.set(torch.nn.Module, "state_dict", state_dict)
    _patch_updates(state)


def _patch_updates(state: _State) -> None:
    """torch calls ``Optimizer._optimizer_step_code`` right after an optimizer's update and before
    its
    post-hooks (the notebook's own among them, which run before the probe's global one): the values
    the update left are kept there (probe/continuity.py)."""
    original = torch.optim.Optimizer._optimizer_step_code
    updated = guarded(state.recorder.after_update)

    def _optimizer_step_code(self: torch.optim.Optimizer) -> None:
        original(self)
        updated(self)

    state.patches.set(torch.optim.Optimizer, "_optimizer_step_code", _optimizer_step_code)


def _count_updates(state: _State) -> None:
    """Every torch optimizer class's own ``step`` (``Adam.step``, ``SGD.step``...) tells the
    recorder an
    update began, however it was reached: a subclass's ``super().step()`` runs no step hook of its
    own
    until the class is instantiated, ``step.__wrapped__`` none at all. Torch wraps a class's
    ``step``
    for its hooks when the class is first instantiated; this wrapper is then inside."""
    updating = torch.compiler.disable(guarded(state.recorder.on_update))

    def wrap(own: Any) -> Any:
        def step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
            updating(self)
            return own(self, *args, **kwargs)

        # Named as the original, but without ``__wrapped__`` (which would hand the original out).
        step.__name__, step.__qualname__, step.__doc__ = own.__name__, own.__qualname__, own.__doc__
        return step

    for value in list(vars(torch.optim).values()):
        own = (
            vars(value).get("step")
            if isinstance(value, type) and issubclass(value, torch.optim.Optimizer)
            else None
        )
        if own is not None and inspect.isfunction(own) and value is not torch.optim.Optimizer:
            wrapped = wrap(own)
            state.updates[value] = wrapped
            value.step = wrapped


def _patch_inits(state: _State) -> None:
    """Every ``torch.nn.init`` function that fills a tensor (``kaiming_uniform_``, which a Linear's
    ``reset_parameters`` calls, ``xavier_normal_``, ``zeros_``...): the values it wrote are
    explained."""
    initialised = torch.compiler.disable(guarded(state.recorder.on_init))

    def wrap(function: Any) -> Any:
        def init(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            result = function(tensor, *args, **kwargs)
            initialised(tensor)
            return result

        return functools.wraps(function)(init)

    for name, function in list(vars(torch.nn.init).items()):
        if name.endswith("_") and not name.startswith("_") and inspect.isfunction(function):
            state.patches.set(torch.nn.init, name, wrap(function))


def _watch_calls(state: _State) -> None:
    """Global module hooks, left to run eagerly when the model is compiled."""
    recorder = state.recorder
    before = torch.compiler.disable(guarded(recorder.before_call))
    after = torch.compiler.disable(guarded(recorder.after_call))
    register = torch.nn.modules.module
    state.hooks = [
        register.register_module_forward_pre_hook(before),
        register.register_module_forward_hook(after, always_call=True),
        register_optimizer_step_post_hook(guarded(recorder.on_step)),
        register_optimizer_step_pre_hook(guarded(recorder.before_step)),
        register.register_module_parameter_registration_hook(guarded(recorder.on_parameter)),
    ]
    state.module_hooks.handles = state.hooks[:2]
    warnings.filterwarnings(
        "ignore",
        message=r"Using `torch.compile\(module\)` when there are global hooks",
    )


def _own_functions() -> dict[str, Any]:
    """The probe's functions and methods by name (what student code would have to replace)."""
    found: dict[str, Any] = {}
    for module in _MODULES:
        prefix = module.__name__.rsplit(".", 1)[-1]
        for name, value in list(vars(module).items()):
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                found[f"{prefix}.{name}"] = value
            elif inspect.isclass(value) and value.__module__ == module.__name__:
                found.update(
                    {
                        f"{prefix}.{name}.{k}": v
                        for k, v in vars(value).items()
                        if inspect.isfunction(v)
                    }
                )
    return found


def _integrity(state: _State) -> list[str]:
    """What is no longer as the probe installed it: its modules, its functions and their code, its
    patches."""
    problems = [
        f"the probe's module {m.__name__} in sys.modules was replaced"
        for m in _MODULES
        if sys.modules.get(m.__name__) is not m
    ]
    current = _own_functions()
    for name, (function, code) in _OWN_CODE.items():
        if function.__code__ is not code or current.get(name) is not function:
            problems.append(f"the probe's {name} was replaced or its code changed")
    problems += [f"the probe's patch of {name} was replaced" for name in state.patches.changed()]
    for cls, wrapper in state.updates.items():  # torch's hook wrapper may hold it (``__wrapped__``)
        step = vars(cls).get("step")
        if step is not wrapper and getattr(step, "__wrapped__", None) is not wrapper:
            problems.append(f"the probe's count of {cls.__name__}.step was replaced")
    return problems


def _seed(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _stub_colab() -> None:
    """Colab exports call drive.mount() and files.download(); outside Colab those become no-ops."""
    import importlib
    import importlib.util
    import types

    try:
        if importlib.util.find_spec("google.colab") is not None:
            return
    except ImportError:
        pass
    colab, drive, files = (
        types.ModuleType(f"google.colab{suffix}") for suffix in ("", ".drive", ".files")
    )
    setattr(
        drive,
        "mount",
        lambda *args, **kwargs: print(
            "[grader] drive.mount() skipped: the grader provides the data"
        ),
    )
    setattr(files, "download", lambda *args, **kwargs: None)
    setattr(files, "upload", lambda *args, **kwargs: {})
    setattr(colab, "drive", drive)
    setattr(colab, "files", files)
    try:
        # a real namespace package (protobuf) keeps working
        google = importlib.import_module("google")
    except ImportError:
        google = types.ModuleType("google")
        google.__path__ = []
    setattr(google, "colab", colab)
    sys.modules.update(
        {
            "google": google,
            "google.colab": colab,
            "google.colab.drive": drive,
            "google.colab.files": files,
        }
    )


_PIP_INSTALL = re.compile(r"(?:^|\s|/)pip3?\s+install\s+(.*)$")
_MODULE_OF = {
    "scikit-learn": "sklearn",
    "opencv-python": "cv2",
    "opencv-python-headless": "cv2",
    "pillow": "PIL",
    "pyyaml": "yaml",
    "scikit-image": "skimage",
    "torch-optimizer": "torch_optimizer",
}


def _guard_pip(state: _State) -> None:
    """`!pip install X` / `%pip install X` cannot reach a network while grading: a package that is
    installed is a no-op with a note, one that is not fails at once, naming `grader env`."""
    import importlib.util
    import shlex

    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821 - provided by IPython
    except NameError:
        return
    system = shell.system

    def offline(cmd: str) -> Any:
        match = _PIP_INSTALL.search(cmd)
        if match is None:
            return system(cmd)
        names = [
            re.split(r"[<>=!~\[;]", a)[0]
            for a in shlex.split(match.group(1))
            if not a.startswith("-")
        ]
        missing = [
            n
            for n in names
            if importlib.util.find_spec(_MODULE_OF.get(n.lower(), n.replace("-", "_"))) is None
        ]
        if missing:
            print(
                f"[grader] pip install: {', '.join(missing)} not in the grading environment and "
                "there is no network here; the TA can add it with `grader env --install`"
            )
        else:
            print(f"[grader] pip install {' '.join(names)}: already installed; skipped")
        return None

    state.patches.set(shell, "system", offline)


def install(config: dict[str, Any]) -> None:
    """Seed, redirect the dataset and start recording. Called once, before student code."""
    global _state
    state = _state = _State(config)
    _seed(int(config["seed"]))
    if config.get("threads"):
        # this job's share of the cores in a parallel batch
        torch.set_num_threads(int(config["threads"]))
    # this job's share of a shared GPU
    if config.get("gpu_memory_mb") and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, int(config["gpu_memory_mb"]) * 2**20 / total), 0
        )
    _patch_dataset(state)
    _patch_loaders(state)
    _patch_loads(state)
    _patch_inits(state)
    _count_updates(state)
    _stub_colab()
    _guard_pip(state)
    _watch_calls(state)
    state.recorder.observers.tests.on_complete = lambda test_pass: _snapshot(state, test_pass)
    _OWN_CODE.update({name: (f, f.__code__) for name, f in _own_functions().items()})


def _snapshot(state: _State, test_pass: passes.TestPass) -> None:
    """As a test pass completes: the model that made it, with a copy of its weights (for the
    capture)."""
    recorder = state.recorder
    recorder.internal = True
    try:
        found = capture.owner(test_pass.predictor, recorder, state.serials)
        test_pass.snapshot = capture.Snapshot(found) if found is not None else None
    except Exception:  # noqa: BLE001 - no snapshot: the capture says so at export
        test_pass.snapshot = None
    finally:
        recorder.internal = False


# -- export -----------------------------------------------------------------------------------
def _graded_pass(recorder: Recorder) -> passes.TestPass | None:
    """The notebook's last complete test pass, else its most complete one."""
    test_passes = recorder.observers.tests.test_passes
    complete = [p for p in test_passes if p.complete]
    if complete:
        return complete[-1]
    return max(test_passes, key=lambda p: int((p.predictions >= 0).sum()), default=None)


def _find_model(
    state: _State, graded: passes.TestPass | None
) -> tuple[torch.nn.Module | None, str]:
    """The model the graded predictions came from, else the one the last optimizer stepped, by
    ownership."""
    shared, serials = state.recorder.shared, state.serials
    modules = models.live_modules()
    if graded is not None:
        ends = [shared.modules[s]() for s in graded.predictor if s in shared.modules]
        if all(m is not None for m in ends):
            owned = set().union(*(models.param_serials(m, serials) for m in ends if m is not None))
            found = models.smallest_owner(
                owned, serials, modules, prefer=[m for m in ends if m is not None]
            )
            if found is not None:
                return found, "test-pass"
    stepped = sorted(shared.optimizers.values(), key=lambda o: o.get("last_step", 0))
    if stepped:
        found = models.smallest_owner(set(stepped[-1]["params"]), serials, modules)
        if found is not None:
            return found, "optimizer"
    return models.by_name()


def _test_dataset(state: _State) -> tuple[Any, str]:
    """The notebook's own test dataset (its transform is the test-time preprocessing), else
    ToTensor()."""
    from torchvision import transforms

    dataset = next((d for d in reversed(state.test_sets) if d.transform is not None), None)
    if dataset is not None:
        return dataset, "the notebook's test dataset and its transform"
    state.recorder.internal = True
    try:
        plain = state.dataset_class(
            str(state.config["data_root"]), train=False, transform=transforms.ToTensor()
        )
    finally:
        state.recorder.internal = False
    return plain, "assumed: ToTensor() only (the notebook built no test dataset with a transform)"


def _describe_model(state: _State, report: dict[str, Any]) -> None:
    """The graded model (by ownership), its traced architecture and, without a complete test pass,
    the fallback."""
    recorder = state.recorder
    shared, observers = recorder.shared, recorder.observers
    graded = _graded_pass(recorder)
    model, found_by = _find_model(state, graded)
    if model is None:
        return
    report["model"] = models.describe(model, found_by, state.serials)
    # Its weights within the hull of what the counted steps made (an EMA module graded as it is)?
    report["model"]["explained"] = observers.weights.continuity.explains(list(model.parameters()))
    dataset, preprocessing = _test_dataset(state)
    sample = observers.tests.samples.get(graded.predictor[0]) if graded is not None else None
    if sample is None:
        sample = torch.stack([dataset[i][0] for i in range(2)])
    report["architecture"] = models.architecture(model, sample, recorder)
    stale = graded is not None and (
        graded.end_step < shared.steps
        or any(
            (load["test_batch"] or 0) >= graded.last_batch for load in observers.checkpoints.loads
        )
    )
    captured: Any = graded
    if graded is None or not graded.complete or stale:  # the grader decides which predictions count
        try:
            fed: list[torch.Tensor] = []
            predictions, confidence = models.fallback_pass(
                model, dataset, state.classes, recorder, fed
            )
            report["probe_pass"] = {
                "predictions": predictions,
                "confidence": confidence,
                "preprocessing": preprocessing,
            }
            captured = capture.Pass(fed, predictions, capture.Snapshot(model), preprocessing)
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the grader
            report["probe_error"] = f"{type(exc).__name__}: {exc}"[:500]
        own = _own_evaluation(state, model)
        captured = own or captured
    report["capture"] = _capture(state, captured, model)


def _own_evaluation(state: _State, model: torch.nn.Module) -> Any:
    """The notebook's last evaluation of the final model over rows the content key did not name (a
    test pass under a per-pixel preprocessing, say), as a pass to capture; None without one."""
    shared, evaluation = state.recorder.shared, state.recorder.observers.evaluations.evaluation
    test_size = shared.index.sizes.get("test") or 0
    evaluated = shared.modules.get(evaluation.serial)
    module = evaluated() if evaluated is not None else None
    if module is None or evaluation.step != shared.steps or evaluation.rows < test_size:
        return None
    if not models.param_serials(module, state.serials) <= models.param_serials(
        model, state.serials
    ):
        return None
    # Its last batches covering a test set's worth of rows: a validation pass just before it (a
    # test set's 10,000 rows after 12,000 validation rows) is no part of it.
    keep, rows = 0, 0
    while rows < test_size and keep < len(evaluation.inputs):
        keep += 1
        rows += evaluation.inputs[-keep].shape[0]
    classes = torch.cat(evaluation.row_classes[-keep:]).tolist()
    return capture.Pass(
        list(evaluation.inputs[-keep:]),
        classes,
        capture.Snapshot(model),
        "the notebook's own evaluation",
        by_probe=False,
        precision=evaluation.precision,
    )


def _capture(state: _State, graded: Any, model: torch.nn.Module) -> dict[str, Any]:
    """Write the graded pass's capture beside the record (capture.py); what happened, for the
    record."""
    path = state.config.get("capture")
    if not path:
        return {"written": False, "error": "no capture was asked for"}
    if graded is None:
        return {"written": False, "error": "the notebook made no test pass"}
    try:
        manifest, payload = capture.capture(graded, model, state.recorder)
        capture.write(str(path), manifest, payload)
    except Exception as exc:  # noqa: BLE001 - the grader decides what an uncaptured model means
        return {"written": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"written": True, "error": None}


def export() -> None:
    """Write what was recorded to the config's output file, as plain JSON."""
    assert _state is not None, "grader probe was not installed"
    with own_modes():  # whatever modes the notebook left on
        report = _report(_state)
    with open(_state.config["output"], "w", encoding="utf-8") as handle:
        json.dump(report, handle)


def _report(state: _State) -> ProbeRecord:
    """The record, as grader/probe/schema.py declares it."""
    recorder = state.recorder
    report: dict[str, Any] = {
        "version": RECORD_VERSION,
        "num_classes": state.classes,
        "integrity": _integrity(state),
        **(guarded(recorder.export, {})()),
        "model": None,
        "architecture": None,
        "probe_pass": None,
        "probe_error": None,
    }
    report["modules"] = {
        str(serial): type(module).__name__
        for serial, ref in recorder.shared.modules.items()
        if (module := ref()) is not None
    }
    try:
        _describe_model(state, report)
    except Exception as exc:  # noqa: BLE001 - the recorded facts are still written and judged
        report["probe_error"] = f"{type(exc).__name__}: {exc}"[:500]
    report["probe_faults"] = guard.FAULTS.export()
    return cast(ProbeRecord, report)
