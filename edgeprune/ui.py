"""Console output: stage headers, progress bars for long work, quiet mode.

The pipeline talks to a :class:`UI`; the library never prints directly. ``UI(quiet=True)``
prints nothing but errors; the progress bars (rich) appear only on a terminal.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class UI:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False, quiet=quiet)
        self._progress: Progress | None = None
        self._task = None

    def log(self, msg: str) -> None:
        # soft_wrap: a log line piped to a file or CI stays one line (no hard breaks at 80 columns)
        self.console.print(msg, soft_wrap=True)

    def warn(self, msg: str) -> None:
        Console(stderr=True, highlight=False).print(f"[yellow]warning:[/] {msg}", soft_wrap=True)

    @contextmanager
    def stage(self, name: str, detail: str = ""):
        t0 = time.perf_counter()
        self.console.print(f"[bold cyan]▶ {name}[/] {detail}")
        try:
            yield
        finally:
            self._close_progress()
        self.console.print(f"  [dim]{name} done in {time.perf_counter() - t0:.1f} s[/]")

    def skipped(self, name: str) -> None:
        self.console.print(f"[dim]✓ {name}: up to date (resumed)[/]")

    def progress(self, label: str, done: int, total: int) -> None:
        """Advance a bar; a new label starts a new bar. No-op when quiet or not a terminal."""
        if self.quiet or not self.console.is_terminal:
            return
        if self._progress is None or self._label != label:
            self._close_progress()
            self._progress = Progress(
                TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total)
            self._label = label
        self._progress.update(self._task, completed=done, total=total)

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._label = None


def is_interactive() -> bool:
    return sys.stderr.isatty()
