"""Runs inside the student's kernel, before and after their code. It records; it never decides.

``install(config)`` seeds the RNGs, points every ``FashionMNIST(...)`` at the prepared data
(whatever root and download flag the notebook passes) and starts watching DataLoader passes
over the test set. During such a pass, the outputs of the outermost module called on each
batch are recorded, keyed by test-set index (the loader's sampler says which indices each
batch holds), so the predictions are those of the student's own test-time pipeline.
``export()`` writes plain JSON: the last complete student pass, and the probe's own pass with
the test dataset's transform over the graded model, for comparison and as the fallback.
Only the grader's process compares predictions with labels.
"""

from __future__ import annotations

import collections
import inspect
import json
import random
import re
import sys
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Subset
from torch.utils.data.dataloader import _BaseDataLoaderIter
from torchvision.datasets import FashionMNIST

_NOT_TEST = object()
_PATCHES: list[tuple[Any, str, Any]] = []  # (owner, attribute, what the probe put there)
_OWN_CODE: dict[str, tuple[Any, Any]] = {}  # the probe's functions and their code, as installed


class _Pass:
    """One iteration over a test loader; ``mapping`` turns loader indices into test indices."""

    def __init__(self, mapping: list[int] | None, size: int, classes: int) -> None:
        self.mapping = mapping
        self.probs = torch.zeros(size, classes)
        self.seen = torch.zeros(size, dtype=torch.bool)
        self.model: torch.nn.Module | None = None
        self.complete = False
        self.batches = 0

    def add(self, indices: torch.Tensor, probs: torch.Tensor, model: torch.nn.Module) -> None:
        self.probs.index_add_(0, indices, probs)
        self.seen[indices] = True
        self.model = model


class _TrainPass:
    """One iteration over a loader of the training set: which indices it drew, which optimizers stepped."""

    def __init__(self, mapping: list[int] | None, size: int) -> None:
        self.mapping = mapping
        self.drawn = torch.zeros(size, dtype=torch.bool)
        self.batches = 0
        self.steps = 0
        self.param_ids: set[int] = set()
        self.optimizers: set[int] = set()
        self.complete = False

    def add(self, loader_indices: list[int]) -> None:
        indices = loader_indices if self.mapping is None else [self.mapping[i] for i in loader_indices]
        self.drawn[torch.tensor(indices, dtype=torch.long)] = True
        self.batches += 1

    def stepped(self, optimizer: torch.optim.Optimizer) -> None:
        self.steps += 1
        if id(optimizer) not in self.optimizers:
            self.optimizers.add(id(optimizer))
            self.param_ids.update(id(p) for group in optimizer.param_groups for p in group["params"])


class _State:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.classes = int(config["num_classes"])
        self.test_sets: list[FashionMNIST] = []
        self.train_sets: list[FashionMNIST] = []
        self.train_passes: list[_TrainPass] = []
        self.training: _TrainPass | None = None  # the train pass that last yielded a batch
        self.creating: _Pass | _TrainPass | None = None  # the pass whose iterator is being constructed
        self.open: _Pass | None = None  # the pass currently being iterated
        self.graded: _Pass | None = None  # the last complete pass that recorded outputs
        self.batch: torch.Tensor | None = None  # test indices of the batch just yielded
        self.outer: torch.nn.Module | None = None  # outermost module in the current call
        self.hooks: list[Any] = []
        self.complete_test_passes = 0
        self.internal = False

    # -- which loader is a test loader -------------------------------------------------
    @staticmethod
    def mapping(dataset: Any, known: list[FashionMNIST], top: bool = True) -> Any:
        """How loader indices map onto one of ``known``: None for the dataset itself, a list of
        indices for a Subset of it, or _NOT_TEST when the loader reads something else."""
        if any(dataset is k for k in known):
            return None
        if isinstance(dataset, Subset):
            inner = _State.mapping(dataset.dataset, known, top=False)
            if inner is _NOT_TEST:
                return _NOT_TEST
            return [int(i) if inner is None else inner[int(i)] for i in dataset.indices]
        if top and hasattr(dataset, "__dict__"):  # a student's wrapper Dataset around it
            for value in vars(dataset).values():
                if any(value is k for k in known) and _safe_len(dataset) == len(value):
                    return None
        return _NOT_TEST

    def start_pass(self, dataset: Any) -> _Pass | _TrainPass | None:
        self.end_open_pass()
        mapping = self.mapping(dataset, self.test_sets)
        if mapping is not _NOT_TEST:
            self.open = _Pass(mapping, len(self.test_sets[-1]), self.classes)
            return self.open
        mapping = self.mapping(dataset, self.train_sets)
        if mapping is not _NOT_TEST:
            train = _TrainPass(mapping, len(self.train_sets[-1]))
            self.train_passes.append(train)
            return train
        return None

    def on_train_batch(self, track: _TrainPass, loader_indices: Any) -> None:
        if loader_indices is None:
            return
        track.add([loader_indices] if isinstance(loader_indices, int) else [int(i) for i in loader_indices])
        self.training = track

    def on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.training is not None and not self.internal:
            self.training.stepped(optimizer)

    def end_open_pass(self, complete: bool = False) -> None:
        current = self.open
        if current is None:
            return
        self.open = None
        self.batch = None
        self.remove_hooks()
        current.complete = complete
        if complete:
            self.complete_test_passes += 1
            if current.model is not None:
                self.graded = current

    # -- recording -----------------------------------------------------------------------
    def on_batch(self, track: _Pass, loader_indices: Any) -> None:
        if track is not self.open or loader_indices is None:
            return
        if isinstance(loader_indices, int):
            loader_indices = [loader_indices]
        indices = [int(i) for i in loader_indices]
        if track.mapping is not None:
            indices = [track.mapping[i] for i in indices]
        self.batch = torch.tensor(indices, dtype=torch.long)
        self.outer = None
        track.batches += 1
        if not self.hooks:
            register = torch.nn.modules.module
            self.hooks = [
                register.register_module_forward_pre_hook(self.pre_hook),
                register.register_module_forward_hook(self.post_hook),
            ]

    def remove_hooks(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []

    def pre_hook(self, module: torch.nn.Module, args: Any) -> None:
        if self.outer is None:
            self.outer = module

    def post_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if module is not self.outer:
            return
        self.outer = None
        batch, current = self.batch, self.open
        if batch is None or current is None:
            return
        if isinstance(output, (tuple, list)) and output:
            output = output[0]
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            return
        if output.shape[0] != len(batch) or output.shape[1] != self.classes:
            return
        current.add(batch, output.detach().float().softmax(1).cpu(), module)


_state: _State | None = None


def _safe_len(obj: Any) -> int:
    try:
        return len(obj)
    except Exception:  # noqa: BLE001 - a student's __len__ may raise anything
        return -1


# -- patches --------------------------------------------------------------------------------
def _patch_dataset(root: str) -> None:
    original = FashionMNIST.__init__
    signature = inspect.signature(original)

    def __init__(self: FashionMNIST, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.arguments["root"] = root  # whatever the notebook passed: 'data', '~/...', '/content/...'
        if "download" in bound.arguments:
            bound.arguments["download"] = False  # the data is already there; no network here
        original(*bound.args, **bound.kwargs)
        assert _state is not None
        if bound.arguments.get("train", True):
            _state.train_sets.append(self)
        else:
            _state.test_sets.append(self)

    FashionMNIST.__init__ = __init__
    _PATCHES.append((FashionMNIST, "__init__", __init__))


def _patch_loaders() -> None:
    loader_iter = DataLoader.__iter__
    next_index = _BaseDataLoaderIter._next_index
    iter_next = _BaseDataLoaderIter.__next__

    def __iter__(self: DataLoader) -> Any:  # type: ignore[type-arg]
        assert _state is not None
        if _state.internal:
            return loader_iter(self)
        track = _state.start_pass(self.dataset)
        reused = getattr(self, "_iterator", None)
        if reused is not None:  # persistent workers: the iterator is reset, not rebuilt
            reused.__dict__.pop("_grader_pending", None)
            reused.__dict__["_grader_track"] = track
        _state.creating = track
        try:
            iterator = loader_iter(self)
        finally:
            _state.creating = None
        iterator.__dict__["_grader_track"] = track
        return iterator

    def _next_index(self: _BaseDataLoaderIter) -> Any:
        indices = next_index(self)
        assert _state is not None
        # Worker loaders fetch indices ahead while the iterator is built; batches still come in order.
        track = self.__dict__.get("_grader_track", _state.creating)
        if track is not None:
            self.__dict__.setdefault("_grader_pending", collections.deque()).append(indices)
        return indices

    def __next__(self: _BaseDataLoaderIter) -> Any:
        track = self.__dict__.get("_grader_track")
        if track is None:
            return iter_next(self)
        assert _state is not None
        try:
            batch = iter_next(self)
        except StopIteration:
            if track is _state.open:
                _state.end_open_pass(complete=True)
            elif isinstance(track, _TrainPass):
                track.complete = True
            raise
        pending = self.__dict__.get("_grader_pending")
        indices = pending.popleft() if pending else None
        if isinstance(track, _TrainPass):
            _state.on_train_batch(track, indices)
        else:
            _state.on_batch(track, indices)
        return batch

    DataLoader.__iter__ = __iter__  # type: ignore[method-assign]
    _BaseDataLoaderIter._next_index = _next_index  # type: ignore[method-assign]
    _BaseDataLoaderIter.__next__ = __next__  # type: ignore[method-assign]
    _PATCHES.extend([(DataLoader, "__iter__", __iter__), (_BaseDataLoaderIter, "_next_index", _next_index),
                     (_BaseDataLoaderIter, "__next__", __next__)])


def _own_functions() -> dict[str, Any]:
    """The probe's functions and methods by name (what student code would have to replace)."""
    found: dict[str, Any] = {}
    for name, value in list(globals().items()):
        if inspect.isfunction(value) and value.__module__ == __name__:
            found[name] = value
        elif inspect.isclass(value) and value.__module__ == __name__:
            found.update({f"{name}.{k}": v for k, v in vars(value).items() if inspect.isfunction(v)})
    return found


def _integrity() -> list[str]:
    """What is no longer as the probe installed it: its module, its functions and their code, its patches."""
    problems = []
    if sys.modules.get(__name__) is None or vars(sys.modules[__name__]) is not globals():
        problems.append("the probe's module in sys.modules was replaced")
    current = _own_functions()
    for name, (function, code) in _OWN_CODE.items():
        if function.__code__ is not code or current.get(name) is not function:
            problems.append(f"the probe's {name} was replaced or its code changed")
    for owner, attribute, wrapper in _PATCHES:
        if vars(owner).get(attribute) is not wrapper:
            problems.append(f"the probe's patch of {owner.__name__}.{attribute} was replaced")
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
    colab, drive, files = (types.ModuleType(f"google.colab{suffix}") for suffix in ("", ".drive", ".files"))
    setattr(drive, "mount", lambda *args, **kwargs: print("[grader] drive.mount() skipped: the grader provides the data"))
    setattr(files, "download", lambda *args, **kwargs: None)
    setattr(files, "upload", lambda *args, **kwargs: {})
    setattr(colab, "drive", drive)
    setattr(colab, "files", files)
    try:
        google = importlib.import_module("google")  # a real namespace package (protobuf) keeps working
    except ImportError:
        google = types.ModuleType("google")
        google.__path__ = []
    setattr(google, "colab", colab)
    sys.modules.update({"google": google, "google.colab": colab, "google.colab.drive": drive, "google.colab.files": files})


_PIP_INSTALL = re.compile(r"(?:^|\s|/)pip3?\s+install\s+(.*)$")
_MODULE_OF = {"scikit-learn": "sklearn", "opencv-python": "cv2", "opencv-python-headless": "cv2", "pillow": "PIL",
              "pyyaml": "yaml", "scikit-image": "skimage", "torch-optimizer": "torch_optimizer"}


def _guard_pip() -> None:
    """`!pip install X` / `%pip install X` cannot reach a network while grading: a package that is
    installed is a no-op with a note, one that is not fails at once, naming `grader env`."""
    import importlib.util
    import shlex

    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821 - provided by IPython
    except NameError:
        return
    system = shell.system

    def guarded(cmd: str) -> Any:
        match = _PIP_INSTALL.search(cmd)
        if match is None:
            return system(cmd)
        names = [re.split(r"[<>=!~\[;]", a)[0] for a in shlex.split(match.group(1)) if not a.startswith("-")]
        missing = [n for n in names if importlib.util.find_spec(_MODULE_OF.get(n.lower(), n.replace("-", "_"))) is None]
        if missing:
            print(f"[grader] pip install: {', '.join(missing)} not in the grading environment and there is no network "
                  "here; the TA can add it with `grader env --install`")
        else:
            print(f"[grader] pip install {' '.join(names)}: already installed; skipped")
        return None

    shell.system = guarded


def install(config: dict[str, Any]) -> None:
    """Seed, redirect the dataset and start recording. Called once, before student code."""
    global _state
    _state = _State(config)
    _seed(int(config["seed"]))
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))  # this job's share of the cores in a parallel batch
    if config.get("gpu_memory_mb") and torch.cuda.is_available():  # this job's share of a shared GPU
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, int(config["gpu_memory_mb"]) * 2**20 / total), 0)
    _patch_dataset(str(config["data_root"]))
    _patch_loaders()
    _stub_colab()
    _guard_pip()
    register_optimizer_step_post_hook(_state.on_step)
    _OWN_CODE.update({name: (f, f.__code__) for name, f in _own_functions().items()})


# -- export ---------------------------------------------------------------------------------
def _find_model() -> tuple[torch.nn.Module | None, str]:
    """The trained model when no test pass named one: the one an optimizer updates, else `model`."""
    namespace = vars(sys.modules["__main__"])
    modules = {
        name: value
        for name, value in namespace.items()
        if isinstance(value, torch.nn.Module)
        and not isinstance(value, torch.nn.modules.loss._Loss)
        and any(True for _ in value.parameters())
    }
    optimized = {
        id(p)
        for value in namespace.values()
        if isinstance(value, torch.optim.Optimizer)
        for group in value.param_groups
        for p in group["params"]
    }
    for name, module in modules.items():
        if any(id(p) in optimized for p in module.parameters()):
            return module, f"optimizer ({name})"
    for name in ("model", "net", "Model", "network", "classifier"):
        if name in modules:
            return modules[name], f"name ({name})"
    if modules:
        name, module = list(modules.items())[-1]
        return module, f"namespace ({name})"
    return None, "none"


def _forward(model: torch.nn.Module, images: torch.Tensor) -> Any:
    try:
        return model(images)
    except Exception:  # noqa: BLE001 - the model may want flattened input
        return model(images.reshape(images.shape[0], -1))


class _Internal:
    """Eval mode, no grad, and the probe's own loaders not counted as the student's passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.was_training = model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> torch.device:
        assert _state is not None
        _state.internal = True
        self.model.eval()
        self.no_grad.__enter__()
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def __exit__(self, *exc: object) -> None:
        assert _state is not None
        self.no_grad.__exit__(None, None, None)
        self.model.train(self.was_training)
        _state.internal = False


def _probe_pass(model: torch.nn.Module, dataset: Any, classes: int) -> list[int]:
    """Predict every test image with the test dataset's transform, in eval mode."""
    predictions: list[int] = []
    with _Internal(model) as device:
        for images, _labels in DataLoader(dataset, batch_size=500, shuffle=False, num_workers=0):
            output = _forward(model, images.to(device))
            if isinstance(output, (tuple, list)):
                output = output[0]
            if output.dim() != 2 or output.shape[1] != classes:
                raise ValueError(f"the model's output has shape {tuple(output.shape)}, not (batch, {classes})")
            predictions.extend(int(p) for p in output.argmax(1).cpu())
    return predictions


# Tensor ops that apply weights: matrix products, convolutions, embeddings, recurrent cells, attention.
_WEIGHT_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "mv", "addmv", "dot", "vdot", "linear", "einsum",
    "convolution", "_convolution", "convolution_overrideable", "cudnn_convolution", "mkldnn_convolution",
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "embedding", "embedding_bag", "_embedding_bag", "lstm", "gru", "rnn_tanh", "rnn_relu",
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math",
})


class _OpRecorder(TorchDispatchMode):
    """Records the weight-applying ops of one forward pass, with their operand shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[dict[str, Any]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._overloadpacket.__name__
        if name in _WEIGHT_OPS and len(self.ops) < 200:
            self.ops.append({"op": name, "shapes": [list(a.shape) for a in args if isinstance(a, torch.Tensor)]})
        return func(*args, **(kwargs or {}))


def _architecture(model: torch.nn.Module, dataset: Any) -> dict[str, Any]:
    """What the trained model is made of: modules owning parameters, and the weight ops of a real forward."""
    owners = [
        {"module": name or "(model)", "type": type(module).__name__,
         "shapes": [list(p.shape) for p in module.parameters(recurse=False)]}
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    record: dict[str, Any] = {"parameters": owners[:200], "ops": None, "error": None}
    try:
        images = torch.stack([dataset[i][0] for i in range(2)])
        with _Internal(model) as device:
            recorder = _OpRecorder()
            with recorder:
                _forward(model, images.to(device))
        record["ops"] = recorder.ops
    except Exception as exc:  # noqa: BLE001 - recorded, judged by the grader
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return record


def _training(state: _State, model: torch.nn.Module | None) -> dict[str, Any]:
    """The passes over the training set, which trained model each stepped, and the split they drew.

    A trained model is identified by the set of parameters its optimizer updated. When the graded
    model itself was never stepped (it loaded a candidate's checkpoint), its training is that of
    all trained models together, and the grader judges them all.
    """
    if not state.train_sets:
        return {"dataset_size": None, "passes": [], "trained_indices": 0, "validation_indices": 0, "overlap": 0,
                "lineage": "none"}
    size = len(state.train_sets[-1])
    params = {id(p) for p in model.parameters()} if model is not None else set()
    direct = [tp for tp in state.train_passes if tp.param_ids & params]
    stepped = direct or [tp for tp in state.train_passes if tp.steps]
    trained = torch.zeros(size, dtype=torch.bool)
    for tp in stepped:
        trained |= tp.drawn
    validation = torch.zeros(size, dtype=torch.bool)
    groups: dict[frozenset[int], int] = {}
    passes = []
    for tp in state.train_passes:
        if not tp.steps and bool((tp.drawn & ~trained).any()):
            validation |= tp.drawn  # an evaluation pass reaching beyond the training images
        group = groups.setdefault(frozenset(tp.param_ids), len(groups)) if tp.steps else None
        passes.append({"complete": tp.complete, "batches": tp.batches, "samples": int(tp.drawn.sum()),
                       "steps": tp.steps, "updates_model": tp in direct, "trained_model": group})
    return {"dataset_size": size, "passes": passes[:2000], "trained_indices": int(trained.sum()),
            "validation_indices": int(validation.sum()), "overlap": int((trained & validation).sum()),
            "lineage": "direct" if direct else ("loaded" if stepped else "none")}


def _describe(model: torch.nn.Module, found_by: str) -> dict[str, Any]:
    first = next(model.parameters(), None)
    return {
        "class": type(model).__name__,
        "found_by": found_by,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(first.device) if first is not None else "cpu",
        "training": bool(model.training),
    }


def export() -> None:
    """Write what was recorded to the config's output file, as plain JSON."""
    assert _state is not None, "grader probe was not installed"
    state = _state
    state.end_open_pass()
    state.remove_hooks()
    classes = state.classes
    graded = state.graded
    report: dict[str, Any] = {
        "version": 1,
        "num_classes": classes,
        "complete_test_passes": state.complete_test_passes,
        "student_pass": None,
        "probe_pass": None,
        "probe_error": None,
        "model": None,
        "architecture": None,
        "integrity": _integrity(),
    }
    if graded is not None and graded.model is not None:
        predictions = graded.probs.argmax(1)
        report["student_pass"] = {
            "predictions": [int(p) if seen else -1 for p, seen in zip(predictions, graded.seen)],
            "covered": int(graded.seen.sum()),
            "batches": graded.batches,
        }
        model: torch.nn.Module | None = graded.model
        found_by = "test-pass"
    else:
        model, found_by = _find_model()
    report["training"] = _training(state, model)
    if model is not None:
        report["model"] = _describe(model, found_by)
        dataset = state.test_sets[-1] if state.test_sets else None
        if dataset is None:
            from torchvision import transforms

            dataset = FashionMNIST(str(state.config["data_root"]), train=False, transform=transforms.ToTensor())
        report["num_test"] = len(dataset)
        report["architecture"] = _architecture(model, dataset)
        try:
            report["probe_pass"] = {"predictions": _probe_pass(model, dataset, classes)}
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the grader
            report["probe_error"] = f"{type(exc).__name__}: {exc}"[:500]
    with open(state.config["output"], "w", encoding="utf-8") as handle:
        json.dump(report, handle)
