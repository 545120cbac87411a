"""Plain text tables for listings that can be long (`biomero status`, `biomero stats`).

rich measures every cell of a table before printing it: 50 runs took longer than the
query that found them, and the 2,800 rows of a busy site's stats about 1.5 s.
"""

from __future__ import annotations


def print_table(title: str, header: list[str], rows: list[list[str]], caption: str = "") -> None:
    """A title line (none when empty), columns padded to their widest cell, a rule under
    the header, and a caption line after the rows."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    if title:
        print(f"\n{title}")
    print(line(header).rstrip())
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row).rstrip())
    if caption:
        print(caption)
