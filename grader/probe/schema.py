"""The probe's record, declared once: the JSON object ``runtime.export()`` writes beside the kernel.

The writer is the probe (``runtime._report``, with ``recorder.Recorder.export`` and the parts it
calls); the one reader is ``grader/model/probe_facts.py``, on the trusted side, which refuses any
other ``version`` and checks every field's type (the file is the student's process's to write:
nothing here is believed; these declarations say what an honest probe writes). Standard library
only: this module is imported inside the student's kernel.

Bit sets are base64 of numpy's ``packbits`` (index 0 the first byte's top bit), one bit per image of
the set they index; optimizer and parameter serials are the probe's own numbering (``identity.py``).
Bump ``RECORD_VERSION`` with every change of a field's meaning or shape, and add a line to
``VERSIONS``.
"""

from __future__ import annotations

from typing import TypedDict

# The format of the record export() writes; grader/model/probe_facts.py refuses any other.
RECORD_VERSION = 5

VERSIONS = {  # what each version of the record changed
    1: "the probe measured in the kernel: its own predictions, the layers, the epochs it counted",
    2: "raw facts only, judged in the grader: train_passes, test_passes, optimizers, loads, model, "
    "architecture, probe_pass, integrity",
    3: "optimizers: moved, moved_at_end (weights changed between or after steps: continuity.py)",
    4: "loads and model: explained (the weights within the hull of the states the steps made)",
    5: "gradients: per Linear weight, the backward passes its layer's calls do not explain",
}


class TrainPass(TypedDict, total=False):
    """One pass over training images: a DataLoader's over the training set, or calls whose inputs
    were recognised as training images by content (``content``)."""

    source: str  # "loader" or "content"
    stepping: bool  # drawn with gradients (training), as opposed to evaluated
    drawn: str  # bit set over the training set: the indices it drew
    samples: int  # indices drawn
    rows: int  # indices drawn, repeats included
    batches: int
    complete: bool  # it drew every index it was to draw
    start_step: int  # optimizer steps taken before it began
    end_step: int  # the last optimizer step it carried
    steps: dict[str, int]  # optimizer serial -> steps it carried
    # bit set: of ``drawn``, images named only by their row's key (a row changed in part)
    loose: str
    predictions: str  # base64, one signed byte per drawn image in index order (evaluated passes)


class TestPass(TypedDict, total=False):
    """One pass of one predictor (input module, output module) over test images."""

    predictor: list[int]  # [input module serial, output module serial]
    covered: int  # test images it predicted
    rows: int
    batches: int
    complete: bool
    start_step: int
    end_step: int
    first_batch: int  # the probe's count of test batches at its first and last: interleaved passes
    last_batch: int
    # base64, one signed byte per test image, -1 where not predicted (the last passes)
    predictions: str
    confidence: str  # base64, little-endian float16 per test image: the softmax at the prediction


class Curve(TypedDict):
    """An optimizer's loss and learning rate, as means over ``every`` steps."""

    every: int
    loss: list[float | None]
    lr: list[float | None]


class Optimizer(TypedDict, total=False):
    """One optimizer (keyed by its serial in ``ProbeRecord.optimizers``)."""

    params: list[int]  # the serials of the parameters it steps
    steps: int
    first_step: int  # the probe's count of all optimizers' steps at its first and last step
    last_step: int
    clock: int  # the training batches drawn at its last step
    # steps after which no batch of training images had been drawn since its previous one
    unattributed: int
    beside: int  # steps over images fed beside a DataLoader's batches
    # steps before which its parameters had changed since its previous step (continuity.py)
    moved: int
    moved_at_end: bool  # its parameters changed after its last step
    curve: Curve


class Load(TypedDict):
    """Weights loaded into a module (``load_state_dict``)."""

    param: int | None  # the serial of its first parameter
    step: int  # optimizer steps taken before it
    params: list[int]  # the serials of its parameters (the first 64)
    test_batch: int  # test batches seen before it
    event: int  # the probe's count of captures and loads at it
    # another model's first parameter, when the state was taken from it (a warm start)
    from_param: int | None
    restored: int | None  # the step of the state it put back (``state_dict()`` taken then), if any
    restored_event: int | None
    # within the hull of the states the counted steps made; None before any step
    explained: bool | None


class Gradient(TypedDict):
    """One watched Linear weight (gradients.py)."""

    param: int  # its serial
    watched: int  # backward passes its layer's calls carried
    carried: int  # passes through a model call on images without its layer's calls
    bare: int  # passes that reached it with neither
    unexplained: int  # passes with a gradient its layer's calls do not explain


# The graded model, found by ownership ("class" is a keyword: declared in the functional form).
Model = TypedDict(
    "Model",
    {
        "class": str,
        "found_by": str,  # "test-pass", "optimizer" or how it was found by name
        "parameters": int,  # elements
        "param_serials": list[int],
        "param_versions": int,  # in-place changes of its parameters (steps, loads, init)
        "has_grad": bool,  # a backward pass reached it
        "device": str,
        "training": bool,
        "explained": bool | None,  # its weights within the hull of what the counted steps made
    },
    total=False,
)


class Owner(TypedDict):
    """A module owning parameters."""

    module: str
    type: str
    shapes: list[list[int]]


class Op(TypedDict):
    """A weight-applying op of one forward pass."""

    op: str
    shapes: list[list[int]]


class Architecture(TypedDict):
    parameters: list[Owner]
    ops: list[Op] | None  # None when the forward could not be traced
    error: str | None


class ProbePass(TypedDict):
    """The probe's own pass over the test images with the graded model (the notebook made none)."""

    predictions: list[int]
    confidence: list[float]
    preprocessing: str


class Capture(TypedDict):
    written: bool  # capture.bin was written beside the record
    error: str | None


class ProbeRecord(TypedDict, total=False):
    """The record (``Recorder.export`` gives the keys from ``test_steps`` to ``gradients``)."""

    version: int
    num_classes: int
    integrity: list[str]  # what was no longer as the probe installed it, at export
    test_steps: int  # optimizer steps right after test images went through the model with gradients
    test_rows_trained: int
    test_images_trained: int  # test images whose rows got a gradient in a call a step followed
    loader_mismatch: int  # training batches whose images were not those the sampler named
    stepped_rows: str  # bit set over the training set: images recognised in calls a step followed
    stepped_loose: str  # bit set: of those, named by their row's key alone
    unread_rows: int  # rows of training batches that were no image the probe could name
    unwatched_steps: int  # steps inside a DataLoader's fetch
    lost_steps: int  # steps that began and never ended
    steps: int
    train_size: int | None
    test_size: int | None
    train_passes: list[TrainPass]
    test_passes: list[TestPass]
    optimizers: dict[str, Optimizer]  # by serial
    loads: list[Load]
    gradients: list[Gradient]
    modules: dict[str, str]  # serial -> class name
    model: Model | None
    architecture: Architecture | None
    probe_pass: ProbePass | None
    probe_error: str | None
    capture: Capture
    probe_faults: list[str]  # the probe's own failures, caught (guard.py)
