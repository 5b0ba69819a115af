"""Plain-text and Markdown tables, the way every stage prints its results."""
from __future__ import annotations

from typing import Iterable, List, Sequence


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "%.4g" % v
    return str(v)


def text_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out: List[str] = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    rows = [[_cell(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def pct(x, digits=1) -> str:
    return "–" if x is None else "%.*f%%" % (digits, 100.0 * x)
