"""Console output of the launchers (rich): progress lines, warnings, errors, plan tables and dry runs.

Text is printed verbatim (no rich markup is interpreted inside it) and never wrapped inside a value, so S3 URIs,
ARNs and commands stay copy-pasteable.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DRY_RUN_FOOTER = "Dry run: no AWS call was made; nothing was uploaded or created."


def info(message: str = "") -> None:
    out.print(escape(message))


def warn(message: str) -> None:
    err.print(f"[bold yellow]Warning:[/] {escape(message)}")


def error(message: str) -> None:
    err.print(f"[bold red]Error:[/] {escape(message)}")


def fmt_value(value: Any) -> str:
    """Dicts as compact sorted JSON, lists comma-separated, None/empty as '-'."""
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, default=str) if value else "{}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "-"
    return str(value)


def plan(title: str, rows: Mapping[str, Any], *, dry_run: bool = False) -> None:
    """`title` and one aligned `key  value` line per row; a dry run marks the title and ends with a footer."""
    out.print(f"[bold cyan]{escape(title)}[/]" + (" [bold magenta](dry run)[/]" if dry_run else ""))
    width = max((len(k) for k in rows), default=0)
    for key, value in rows.items():
        out.print(f"  [bold]{escape(key.ljust(width))}[/]  {escape(fmt_value(value))}")
    if dry_run:
        out.print(f"[magenta]{DRY_RUN_FOOTER}[/]")


@contextlib.contextmanager
def sdk_waiter(waiting: bool = True) -> Iterator[None]:
    """Around an SDK call that waits: its waiter prints progress marks without a trailing newline."""
    try:
        yield
    finally:
        if waiting:
            out.print()


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table (first columns never wrap: names stay copy-pasteable)."""
    from rich.table import Table

    tab = Table(title=title)
    for i, column in enumerate(columns):
        tab.add_column(column, no_wrap=i < len(columns) - 1, overflow="fold")
    for row in rows:
        tab.add_row(*(escape(str(cell)) for cell in row))
    out.print(tab)
