"""Evidence that a notebook reaches into the grader instead of (or besides) training a model.

No defence inside the kernel's one process is complete: student code can change anything there.
So tampering is looked for twice, and any evidence makes the result an ``error`` flagged
``probe-tampered`` (the TA decides): in the code as written (it names the grader's probe, reads
``sys.modules`` for it, or embeds a test-set-long sequence of class numbers), and at export (the
probe's own functions and patches are no longer those it installed, or its record lacks that check).
Weaker signs (reaching every live object through ``gc``) only flag ``probe-reachable``.
``test_labels: hidden`` in the rubric is the mode for high stakes: there the kernel sees the test
images in a secret order, so even the real public labels embedded in a notebook are worthless.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import io
import lzma
import re
import tokenize
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from grader.model.datasets import DataChoice
from grader.model.submission import Submission
from grader.static.layers import number
from grader.static.pyast import ParsedCell, dotted, import_aliases, parseable, resolve, walk_cells

TEXT_LIMIT = 4 * 1024  # bytes of data the code's text may hold beyond the template's (literal_data)
_WINDOW = 32 * 1024  # the most of a zlib dictionary that is used
_MIN_BLOB = 1_000  # shorter literals cannot hold such a sequence in any encoding worth trying
_MAX_DECODED = 4 * 1024 * 1024
# The grader's code in the kernel: the probe, and the evaluator's content key it uses.
_IN_KERNEL = ("grader.probe", "grader.evaluator")
_PROBE_NAMES = (*_IN_KERNEL, "probe.runtime", "grader_probe")
# torch's tables of global hooks (module forward, optimizer step, ...): the probe's hooks live there
# and reach its state; honest code registers hooks through torch's functions, never reads these.
_HOOK_TABLE = re.compile(r"(?:^|\.)_global_\w*hooks?\b")
_SEPARATED_DIGITS = re.compile(r"^[\s,;\[\]()'\"]*(?:[0-9][\s,;\[\]()'\"]*)+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2}|\s)+$")
_DECOMPRESSORS: tuple[Callable[[bytes], bytes], ...] = (
    lambda b: zlib.decompressobj().decompress(b, _MAX_DECODED),
    lambda b: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b, _MAX_DECODED),
    lambda b: bz2.BZ2Decompressor().decompress(b, _MAX_DECODED),
    lambda b: lzma.LZMADecompressor().decompress(b, _MAX_DECODED),
)


@dataclass(frozen=True, kw_only=True)
class LabelRun:
    """What the test labels written into the code would look like: a run of ``length`` symbols
    (the test set's size) over an alphabet of ``classes`` (FashionMNIST's by default; the
    rubric's dataset gives them, ``label_run``)."""

    length: int = 10_000
    classes: int = 10


def label_run(choice: DataChoice) -> LabelRun:
    """The rubric's dataset's test labels as a LabelRun (the table's test size, its class names)."""
    return LabelRun(length=choice.kind.test_count, classes=max(2, len(choice.class_names())))


@dataclass(frozen=True)
class Tampering:
    """What the code as written shows: evidence (an error) and weaker signs (a flag)."""

    evidence: tuple[str, ...] = ()
    signs: tuple[str, ...] = ()


def _has_class_run(data: bytes, labels: LabelRun) -> bool:
    """True when ``data`` holds ``labels.length`` consecutive symbols of which one per class (ten
    for FashionMNIST) stand for the classes, each frequent (digits, bytes 0-9, letters a-j, any
    ten characters), with at most two more (separators). Such a run contains a whole aligned block
    of half its length, so only those blocks are tried."""
    half, classes = labels.length // 2, labels.classes
    for start in range(0, len(data) - half + 1, half):
        block = data[start : start + half]
        alphabet = set(block)
        if not classes <= len(alphabet) <= classes + 2:
            continue
        frequent = half // (4 * classes)
        if sum(block.count(bytes((symbol,))) >= frequent for symbol in alphabet) < classes:
            continue  # each class is about its share: not text, padding or a ruler
        low, high = start, start + half
        while low > 0 and data[low - 1] in alphabet:
            low -= 1
        while high < len(data) and data[high] in alphabet:
            high += 1
        if high - low >= labels.length:
            return True
    return False


def _decodings(text: str | bytes) -> Iterator[bytes]:
    """The blob itself, and what base64, hex and the common compressors make of it."""
    raw = text.encode("latin-1", "ignore") if isinstance(text, str) else text
    if isinstance(text, str) and _SEPARATED_DIGITS.match(text):
        yield re.sub(r"[^0-9]", "", text).encode()
    yield raw
    layers = [raw]
    stripped = re.sub(rb"\s", b"", raw)
    if _BASE64.match(raw.decode("latin-1")):
        for decode in (base64.b64decode, base64.urlsafe_b64decode, base64.b85decode):
            try:
                layers.append(
                    decode(
                        stripped + b"=" * (-len(stripped) % 4)
                        if decode is not base64.b85decode
                        else stripped
                    )
                )
            except (binascii.Error, ValueError):
                pass
    if _HEX.match(raw.decode("latin-1")):
        try:
            layers.append(bytes.fromhex(stripped.decode("ascii")))
        except ValueError:
            pass
    for layer in layers[1:]:
        yield layer
    for layer in layers:
        for decompress in _DECOMPRESSORS:
            try:
                yield decompress(layer)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
                pass


def _where(sub: Submission, parsed: ParsedCell, node: ast.AST) -> str:
    return sub.where(parsed.cell, getattr(node, "lineno", None))


def _names_probe(text: str) -> bool:
    return any(name in text for name in _PROBE_NAMES)


def _names_another_module(key: ast.AST) -> bool:
    """A literal module name that is not the grader's."""
    return (
        isinstance(key, ast.Constant) and isinstance(key.value, str) and "grader" not in key.value
    )


def _is_harmless_modules_lookup(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """``'google.colab' in sys.modules``, ``sys.modules['x']``, ``sys.modules.get('x')`` with a
    literal
    name that is not the grader's: the Colab check students copy, not a search for the probe."""
    parent = parents.get(node)
    if isinstance(parent, ast.Compare) and all(
        isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops
    ):
        return _names_another_module(parent.left)
    if isinstance(parent, ast.Subscript):
        return _names_another_module(parent.slice)
    if isinstance(parent, ast.Attribute) and parent.attr == "get":
        call = parents.get(parent)
        return (
            isinstance(call, ast.Call) and bool(call.args) and _names_another_module(call.args[0])
        )
    return False


def _sequence_of_classes(node: ast.AST, labels: LabelRun) -> bool:
    """A literal list of ``labels.length``+ constants over at most one value per class (numbers,
    letters, names)."""
    elements = getattr(node, "elts", None)
    if not isinstance(node, (ast.List, ast.Tuple)) or elements is None:
        return False
    if len(elements) < labels.length:
        return False
    values = [e.value for e in elements if isinstance(e, ast.Constant)]
    return len(values) >= labels.length and len({repr(v) for v in values}) <= labels.classes


def code_text(cells: tuple[ParsedCell, ...]) -> bytes:
    """The code's text where data can hide, one piece per line in order: every string (docstrings
    and
    f-strings too), comment and number as written, and each distinct name once."""
    return b"\n".join(piece for parsed in cells for _, piece in _pieces(parsed, set()))


def _pieces(parsed: ParsedCell, names: set[str]) -> Iterator[tuple[int, bytes]]:
    """(line, text) of each string, comment, number and not yet seen name of a cell that parses."""
    if parsed.tree is None:
        return
    kinds = {
        tokenize.STRING,
        tokenize.COMMENT,
        tokenize.NUMBER,
        getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING),
    }
    try:
        for token in tokenize.generate_tokens(io.StringIO(parseable(parsed.cell.source)).readline):
            if token.type == tokenize.NAME and token.string not in names:
                names.add(token.string)
                yield token.start[0], token.string.encode()
            elif token.type in kinds:
                yield token.start[0], token.string.encode()
    except (tokenize.TokenError, SyntaxError):
        return  # parsed, so this is not expected; what was read is measured


def information(text: bytes, prior: bytes) -> int:
    """Bytes of data ``text`` holds beyond ``prior``: its size compressed with ``prior`` as zlib's
    dictionary, less what compressing nothing costs. English prose costs about a third of its
    length,
    the template's own words almost nothing, random data (a table of answers) all of it."""

    def packed(data: bytes) -> int:
        packer = zlib.compressobj(9, zdict=prior[-_WINDOW:]) if prior else zlib.compressobj(9)
        return len(packer.compress(data) + packer.flush())

    return max(0, packed(text) - packed(b""))


def literal_data(sub: Submission, cells: tuple[ParsedCell, ...], prior: bytes = b"") -> str | None:
    """Why the code goes to review when its text (code_text) holds TEXT_LIMIT bytes or more of data
    beyond the template's own text ``prior``, in strings, docstrings, comments, numbers or names: a
    homework notebook has no use for that much, and brought-in answers (the test labels in a
    retrieval table keyed by image hashes, in any alphabet) would be that. Names the cell holding
    the
    most and the line of its largest piece."""
    names: set[str] = set()
    per_cell = [(parsed, list(_pieces(parsed, names))) for parsed in cells]
    total = information(b"\n".join(piece for _, pieces in per_cell for _, piece in pieces), prior)
    if total < TEXT_LIMIT:
        return None
    parsed, pieces = max(
        per_cell, key=lambda item: information(b"\n".join(p for _, p in item[1]), prior)
    )
    line = max(pieces, key=lambda item: len(item[1]))[0]
    return (
        f"the code's text holds {total // 1024} KB of literal data beyond the template's "
        "(strings, comments, "
        f"docstrings, numbers, names; the most in {sub.where(parsed.cell)}, its largest piece at "
        f"{sub.where(parsed.cell, line)}); a person checks it is not answers brought in"
    )


def static_evidence(
    sub: Submission, cells: tuple[ParsedCell, ...], labels: LabelRun = LabelRun()
) -> Tampering:
    """Tampering evidence and signs in the code as written (IPython syntax neutralized); ``labels``:
    what the rubric's test labels written out would look like."""
    evidence: list[str] = []
    signs: list[str] = []
    aliases = import_aliases(cells)
    parents = {
        child: node
        for parsed in cells
        for node in parsed.nodes
        for child in ast.iter_child_nodes(node)
    }
    for parsed, node in walk_cells(cells):
        where = _where(sub, parsed, node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names]
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            full = [f"{module}.{n}" if module else n for n in names]
            if any(_names_probe(n) or n.startswith(_IN_KERNEL) for n in full) or (
                module == "grader" and ("probe" in names or "evaluator" in names)
            ):
                evidence.append(f"{where}: imports the grader's probe ({', '.join(full)})")
            elif any(_HOOK_TABLE.search(n) for n in full):
                evidence.append(
                    f"{where}: imports torch's global hook tables, where the grader's probe watches"
                )
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            value = node.value
            if isinstance(value, str) and _names_probe(value):
                evidence.append(f"{where}: names the grader's probe ({value[:60]!r})")
            elif isinstance(value, str) and _HOOK_TABLE.search(value):
                evidence.append(
                    f"{where}: names torch's global hook tables, where the grader's probe watches"
                )
            elif len(value) >= _MIN_BLOB and any(
                _has_class_run(d, labels) for d in _decodings(value)
            ):
                evidence.append(
                    f"{where}: embeds a sequence of {labels.length}+ symbols over an "
                    f"alphabet of {number(labels.classes)} (the test labels?)"
                )
        elif _sequence_of_classes(node, labels):
            evidence.append(
                f"{where}: embeds a literal list of {labels.length}+ values over "
                f"{number(labels.classes)} or fewer (the test labels?)"
            )
        elif isinstance(node, ast.Attribute):
            written = dotted(node)
            name = resolve(written, aliases) if written else None
            if name and (name.startswith(_IN_KERNEL) or ".probe.runtime" in name):
                evidence.append(f"{where}: reaches the grader's probe ({name})")
            elif name and _HOOK_TABLE.search(name):
                evidence.append(
                    f"{where}: reaches torch's global hook tables, where the grader's probe watches"
                )
            elif name == "sys.modules" and not _is_harmless_modules_lookup(node, parents):
                evidence.append(
                    f"{where}: reads sys.modules other than for a named module (where "
                    "the probe lives)"
                )
            elif name in ("gc.get_objects", "gc.get_referrers", "gc.get_referents"):
                signs.append(
                    f"{where}: {name}() reaches every live object, the grader's probe included"
                )
    return Tampering(tuple(dict.fromkeys(evidence)), tuple(dict.fromkeys(signs)))
