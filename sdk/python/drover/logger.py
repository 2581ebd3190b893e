"""Logger: ClearML's reporting calls, printed to the console and kept in memory (stdlib only).

Scalars, single values, texts and tables are printed as they are reported and kept on the
logger, where `Task.get_reported_scalars()` and friends read them back. Inside a drover step,
scalars and single values are also sent to the controller through the step's channel
(`drover.scalars`), which stores them with the step and draws them in the web UI; a single
value is the point (0, value) of the series `name` of the title `Summary`. Texts and tables
reach the step's console (its log) only, and the logger says so once.
"""
from __future__ import annotations

import csv as csv_module
import logging
import math
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import scalars as scalar_sender

if TYPE_CHECKING:
    from .task import Task


# The chart single values are drawn on.
SUMMARY_TITLE = "Summary"


class Logger:
    """The reporting side of a `Task`; get it with `task.get_logger()` or `Logger.current_logger()`."""

    def __init__(self, task: Task) -> None:
        self._task = task
        self._lock = threading.Lock()
        # title -> series -> [(iteration, value)], in reporting order
        self.scalars: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.single_values: dict[str, float] = {}
        self.texts: list[str] = []
        # (title, series) -> (iteration, rows): each row a list of cells, the header first
        self.tables: dict[tuple[str, str], tuple[int | None, list[list[Any]]]] = {}
        self._said_console_only = False

    @classmethod
    def current_logger(cls) -> Logger | None:
        """The logger of `Task.current_task()`; None when there is no current task, as in ClearML."""
        from .task import Task

        task = Task.current_task()
        return task.get_logger() if task is not None else None

    def _console_only(self) -> None:
        """Inside a step, says once that tables stay in the step's log."""
        if self._task._in_step and not self._said_console_only:
            self._said_console_only = True
            warnings.warn(
                "drover: Logger tables are printed to the step's console only; storing tables with the "
                "step is not supported yet (scalars are stored)", stacklevel=3)

    def _send(self, title: str, series: str, iteration: int, value: float) -> None:
        """Inside a step, queues the point for the controller."""
        if self._task._in_step:
            sender = scalar_sender.sender()
            if sender is not None:
                sender.add(title, series, iteration, value)

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        """Records `value` at `iteration` on the line `series` of the chart `title`."""
        number = _number("report_scalar", value)
        step = int(iteration)
        with self._lock:
            self.scalars.setdefault(str(title), {}).setdefault(str(series), []).append((step, number))
        self._send(str(title), str(series), step, number)
        print(f"drover: scalar {title} / {series} @ {step}: {number:g}", flush=True)

    def report_single_value(self, name: str, value: float) -> None:
        """Records one summary value (for example a final accuracy) under `name`."""
        number = _number("report_single_value", value)
        with self._lock:
            self.single_values[str(name)] = number
        self._send(SUMMARY_TITLE, str(name), 0, number)
        print(f"drover: value {name}: {number:g}", flush=True)

    def report_text(self, msg: str, level: int = logging.INFO, print_console: bool = True,
                    *args: Any, **_: Any) -> None:
        """Records a line of text; prints it unless `print_console` is False."""
        text = str(msg)
        with self._lock:
            self.texts.append(text)
        if print_console:
            print(text, file=sys.stderr if level >= logging.WARNING else sys.stdout, flush=True)

    def report_table(self, title: str, series: str, iteration: int | None = None,
                     table_plot: Any = None, csv: str | None = None, url: str | None = None,
                     extra_layout: dict[str, Any] | None = None,
                     extra_data: dict[str, Any] | None = None) -> None:
        """Records a table from a pandas DataFrame or a list of rows (`table_plot`), or a CSV
        file (`csv`, a path or URL that StorageManager can fetch; `url` is its older name), and
        prints it. `extra_layout` and `extra_data` style ClearML's plot and are not kept."""
        if extra_layout is not None or extra_data is not None:
            warnings.warn("report_table: extra_layout and extra_data have no effect: drover prints tables",
                          stacklevel=2)
        rows = _rows(table_plot, csv or url)
        with self._lock:
            self.tables[(str(title), str(series))] = (iteration, rows)
        self._console_only()
        where = f" @ {iteration}" if iteration is not None else ""
        print(f"drover: table {title} / {series}{where}:\n{_format(rows)}", flush=True)

    def flush(self, wait: bool = False) -> bool:
        """Flushes the console and, inside a step, sends the scalars not sent yet; with `wait`,
        returns once the controller took them (False when that did not happen in 30 s)."""
        sys.stdout.flush()
        sys.stderr.flush()
        sender = scalar_sender.sender() if self._task._in_step else None
        return sender.flush(wait) if sender is not None else True


def _number(call: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{call}: value must be a number, not {value!r}") from None
    if math.isnan(number):
        warnings.warn(f"{call}: the value is NaN", stacklevel=3)
    return number


def _rows(table_plot: Any, source: str | None) -> list[list[Any]]:
    """The table as rows of cells, the header first."""
    if table_plot is None and source is None:
        raise ValueError("report_table needs table_plot (a DataFrame or a list of rows) or csv (a path or URL)")
    if table_plot is not None and source is not None:
        raise ValueError("report_table takes table_plot or csv, not both")
    if source is not None:
        from .storage import StorageManager

        with open(StorageManager.get_local_copy(source), newline="", encoding="utf-8") as f:
            return [list(row) for row in csv_module.reader(f)]
    if hasattr(table_plot, "columns") and hasattr(table_plot, "itertuples"):  # a pandas DataFrame
        header = [table_plot.index.name or ""] + [str(c) for c in table_plot.columns]
        return [header] + [list(row) for row in table_plot.itertuples(index=True, name=None)]
    if isinstance(table_plot, Sequence) and not isinstance(table_plot, str):
        rows = [list(row) if isinstance(row, Sequence) and not isinstance(row, str) else [row]
                for row in table_plot]
        return rows
    raise ValueError(f"report_table: table_plot must be a DataFrame or a list of rows, not {type(table_plot).__name__}")


def _format(rows: list[list[Any]]) -> str:
    """Rows as aligned text columns."""
    cells = [[str(c) for c in row] for row in rows]
    widths: list[int] = []
    for row in cells:
        for i, cell in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells)
