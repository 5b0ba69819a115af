"""Plain-text and Markdown tables, and their cells: the one way every stage and report prints a table."""
from __future__ import annotations

from typing import Callable, Iterable, List, Sequence

MISSING = "–"   # a value we do not have (the paper does not print it, a shrunk net has no paper row, ...)


def _cell(v) -> str:
    if v is None:
        return MISSING
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
    return MISSING if x is None else "%.*f%%" % (digits, 100.0 * x)


def num(x, digits=1) -> str:
    return MISSING if x is None else "%.*f" % (digits, x)


def pair(ours, theirs, fmt: Callable[[float], str], always: bool = False) -> str:
    """An "ours / paper" cell; just ours when the paper has no value, unless ``always``."""
    o = MISSING if ours is None else fmt(ours)
    if theirs is None and not always:
        return o
    return "%s / %s" % (o, MISSING if theirs is None else fmt(theirs))
