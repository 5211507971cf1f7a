"""`grader rubric TEMPLATE`: what a homework's template fixes, one line each, and a rubric draft
(rubric.yaml's structure: the frozen facts from the template, the rest copied from a rubric)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from grader.model.findings import RuleId
from grader.model.rubric import ArgValue, FrozenFacts, WeightLayer, load_rubric
from grader.outputs.text import render
from grader.static.layers import spec

DRAFT_NAME = "rubric.draft.yaml"


def homework_name(template: Path) -> str:
    """The homework a template's file name names: HW3_template.ipynb -> HW3; else its folder's
    first word: homeworks/hw4-cnn/template.ipynb -> HW4 ("HW" when none)."""
    words = [w for w in re.split(r"[_\-\s.]+", template.stem) if w and w.lower() != "template"]
    folder = re.match(r"[A-Za-z]+[0-9]+", template.resolve().parent.name)
    name = "_".join(words) or (folder.group(0).upper() if folder else "")
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name) else "HW"


def _shown(value: ArgValue | float) -> str:
    if value is None:
        return "?"  # not a constant
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value)


def layer_text(layer: WeightLayer) -> str:
    """``self.conv1 = nn.Conv2d(in_channels=1, out_channels=32, kernel_size=3)``."""
    args = ", ".join(f"{name}={_shown(value)}" for name, value in layer.args)
    return f"{layer.name or '(in a Sequential)'} = nn.{layer.kind}({args})"


def derived_lines(homework: str, facts: FrozenFacts) -> tuple[str, ...]:
    """What the template fixes, one line each."""
    return (
        f"homework: {homework}",
        f"epochs: {facts.epochs_name} = {facts.epochs}",
        f"validation fraction: {facts.valid_name} = {_shown(facts.valid_size)}",
        *(f"weight layer: {layer_text(layer)}" for layer in facts.weight_layers),
        *(f"constant: {name} = {_shown(value)}" for name, value in facts.constants),
    )


def frozen_rules(facts: FrozenFacts) -> tuple[RuleId, ...]:
    """The rules a draft freezes: the template's weight layers as linear_layers where every one is
    an nn.Linear (HW3's name), else as weight_layers; left out where a layer's argument is no
    constant (the rule could not compare it)."""
    specs = [spec(layer) for layer in facts.weight_layers]
    if not all(s.known for s in specs):
        return (RuleId.EPOCHS, RuleId.VALID_SIZE)
    linear_only = all(layer.kind == "Linear" for layer in facts.weight_layers)
    layers = RuleId.LINEAR_LAYERS if linear_only else RuleId.WEIGHT_LAYERS
    return (RuleId.EPOCHS, RuleId.VALID_SIZE, layers)


def _notes(facts: FrozenFacts, rules: tuple[RuleId, ...]) -> list[str]:
    notes = ["the template's weight layers:"]
    notes += [f"  {layer_text(layer)}" for layer in facts.weight_layers]
    if RuleId.WEIGHT_LAYERS in rules:
        notes.append(
            "weight_layers keeps them (sizes, channels, kernel, stride, padding) and lets no "
            "other be added"
        )
    elif RuleId.LINEAR_LAYERS not in rules:
        notes.append(
            "the layers' rule is left out: an argument of a layer above is no constant ('?')"
        )
    if facts.constants:
        notes.append("its other constants (not enforced):")
        notes += [f"  {name} = {_shown(value)}" for name, value in facts.constants]
    return notes


def draft_text(homework: str, template: str, facts: FrozenFacts, source: Path) -> str:
    """The draft's YAML: ``template`` relative to the draft's folder; thresholds, limits and
    policies copied from the rubric at ``source`` as placeholders."""
    shipped = load_rubric(source)
    groups = yaml.safe_load(source.read_text(encoding="utf-8"))["allowed_layers"]
    rules = frozen_rules(facts)
    return render(
        "rubric.draft.yaml.j2",
        homework=homework,
        template_path=template,
        template_name=Path(template).name,
        s=shipped,
        rules=[rule.value for rule in rules],
        notes=_notes(facts, rules),
        layers=list(groups.items()),
    )
