"""Text tables for the scripts' reports: columns as wide as their widest cell, under a rule."""

from __future__ import annotations

from typing import Any, Sequence


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], gap: str = "  ", rule_gap: str = "  ",
    trim: bool = False,
) -> str:
    """`gap` between the cells of a line, `rule_gap` between the dashes under the headers;
    `trim` drops the spaces an empty or short last cell leaves at the end of its line."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [gap.join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [headers, *rows]]
    lines.insert(1, rule_gap.join("-" * width for width in widths))
    return "\n".join(line.rstrip() if trim else line for line in lines)
