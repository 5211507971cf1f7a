"""Real PDFs for the tests: one page of Helvetica text lines, written byte by byte."""

from __future__ import annotations

from pathlib import Path


def make_pdf(path: Path, lines: list[str]) -> Path:
    """Write a one-page PDF showing ``lines`` from the top, and return its path."""

    def text(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = " ".join(f"({text(line)}) Tj 0 -18 Td" for line in lines)
    stream = f"BT /F1 14 Tf 72 720 Td {ops} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return _write(path, objects)


def make_slow_pdf(path: Path, tokens: int = 1_900_000, calls: int = 5000) -> Path:
    """A small PDF (tens of KB) whose first page draws one huge form ``calls`` times: a text
    extractor that parses the form at each call runs for hours."""
    import zlib

    packer = zlib.compressobj(9)
    form = (
        packer.compress(b"BT /F1 1 Tf (x) Tj ET\n" + b"1 0 0 1 0 0 cm\n" * (tokens // 7))
        + packer.flush()
    )
    page = b"BT /F1 14 Tf 72 720 Td (Best accuracy: 90.08%) Tj ET\n" + b"/X Do " * calls
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /X 6 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(page), page),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (len(form), form),
    ]
    return _write(path, objects)


def _write(path: Path, objects: list[bytes]) -> Path:
    """Objects 1..N (1 the catalog), the cross-reference table and the trailer."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path
