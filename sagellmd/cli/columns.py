"""Tables that fit the terminal by dropping whole columns, never by cutting ids or numbers.

rich narrows a table that is too wide by squeezing every column, so at 80 columns a pid
or a port is cut and headers become `RESTA…`. Here each column has a priority instead:
at a given width the least important columns are left out first, the columns marked
`keep` (an engine's id, state, pid, port) are always shown whole, and only the columns
marked `cut` are shortened, on one line, with an ellipsis; the width left over goes to
them in turn, so the longest (a message) gets what remains once the others are whole.

`fit` is the pure layout; `FittedTable` is the rich renderable that applies it at the
width it is drawn at, so a Live view redrawn after a resize lays itself out anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

# Between two columns: rich pads each cell one space on either side (pad_edge=False
# leaves out the outer two).
GAP = 2


@dataclass(frozen=True)
class Column:
    """A table column and how it gives way when the width runs out."""

    header: str
    # 0 is most important; the highest numbers are dropped first.
    priority: int
    # Always shown, always whole (wider than the terminal rather than cut).
    keep: bool = False
    # May be shortened with an ellipsis, down to `min_width` (or its header).
    cut: bool = False
    min_width: int = 0
    justify: JustifyMethod = "left"


def natural_widths(columns: Sequence[Column], rows: Sequence[Sequence[Text]]) -> list[int]:
    """Each column's width when nothing is cut: its widest cell or its header."""
    widths = [len(column.header) for column in columns]
    for row in rows:
        for index, text in enumerate(row):
            widths[index] = max(widths[index], text.cell_len)
    return widths


def fit(columns: Sequence[Column], natural: Sequence[int], width: int | None) -> list[int | None]:
    """The width of each column at a total `width` (None: unbounded), None if dropped."""
    least = [
        min(size, max(column.min_width, len(column.header))) if column.cut else size
        for column, size in zip(columns, natural, strict=True)
    ]
    if width is None:
        return list(natural)
    shown = list(range(len(columns)))

    def needed() -> int:
        return sum(least[i] for i in shown) + GAP * (len(shown) - 1)

    while needed() > width:
        droppable = [i for i in shown if not columns[i].keep]
        if not droppable:
            break  # only kept columns left: wider than the terminal, never cut
        # The least important first; of equals, the rightmost.
        shown.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    sizes = {i: least[i] for i in shown}
    spare = width - needed()
    # Cut columns grow back towards their natural width one cell at a time in turn, so
    # that a long model name does not take all the room from the message: the widest
    # (the message) ends up with whatever the others leave.
    growing = [i for i in shown if sizes[i] < natural[i]]
    while growing and spare > 0:
        for i in list(growing):
            if spare == 0:
                break
            sizes[i] += 1
            spare -= 1
            if sizes[i] == natural[i]:
                growing.remove(i)
    return [sizes.get(i) for i in range(len(columns))]


def one_line(text: Text) -> Text:
    """A copy of a cell that never wraps: cut with an ellipsis if it must be."""
    line = text.copy()
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


class FittedTable:
    """A rich renderable: the table laid out by `fit` at the width it is drawn at."""

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Sequence[Sequence[Text]],
        style: str = "",
    ) -> None:
        self.columns = list(columns)
        self.rows = [list(row) for row in rows]
        self.style = style

    def natural_width(self) -> int:
        widths = natural_widths(self.columns, self.rows)
        return sum(widths) + GAP * (len(widths) - 1)

    def table(self, width: int | None) -> Table:
        sizes = fit(self.columns, natural_widths(self.columns, self.rows), width)
        shown = [i for i, size in enumerate(sizes) if size is not None]
        table = Table(box=None, pad_edge=False, header_style="bold", style=self.style)
        for i in shown:
            column = self.columns[i]
            table.add_column(
                column.header,
                width=sizes[i],
                no_wrap=True,
                overflow="ellipsis",
                justify=column.justify,
            )
        for row in self.rows:
            table.add_row(*(one_line(row[i]) for i in shown))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        table = self.table(width)
        # Kept columns wider than the terminal: draw them whole and let the terminal
        # wrap the line, rather than let rich cut an id or a pid.
        needed = sum(column.width or 0 for column in table.columns) + GAP * (len(table.columns) - 1)
        yield from console.render(table, options.update_width(max(width, needed)))
