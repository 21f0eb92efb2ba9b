"""Live progress of a local search: a redrawn panel on a terminal, one line per
finished child otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from kubenas.search import Search


class Progress:
    def __init__(self, *, name: str, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.name = name
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.console = Console(file=self.stream)
        self.live = self.stream.isatty() if live is None else live
        self._display: Live | None = None
        self._recent: deque[str] = deque(maxlen=5)  # the panel's last finished children
        self.usage: str | None = None  # the panel's GPU- and CPU-hours line (set by the runner)
        self.cache_line: str | None = None  # the result cache's figures, set by the runner

    def __enter__(self) -> Progress:
        if self.live:
            self._display = Live(console=self.console, refresh_per_second=4, transient=False)
            self._display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.__exit__(*exc)

    def log(self, message: str) -> None:
        if self._display is not None:
            self._display.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def refresh(self, search: Search, *, running: int) -> None:
        if self._display is not None:
            self._display.update(self._panel(search, running=running))

    def finished(self, record: dict, search: Search, *, running: int) -> None:
        counters = search.counters
        best = search.best
        reward = "-" if record["reward"] is None else f"{record['reward']:.4f}"
        accuracy = "" if record["validationAccuracy"] is None else f" val_acc={record['validationAccuracy']:.4f}"
        reason = f" reason={record['reason']}" if record["reason"] else ""
        if record.get("cachedFrom"):
            reason += f" cachedFrom={record['cachedFrom']}"
        line = (
            f"[{self.name}] child {record['index']} {record['status']} reward={reward}{accuracy}{reason} | "
            f"done {counters.succeeded + counters.failed}/{search.max_trials} running {running} "
            f"failed {counters.failed} best {best.reward:.4f} (child {best.index})" if best else
            f"[{self.name}] child {record['index']} {record['status']}{reason} | failed {counters.failed}"
        )
        if self._display is None:
            print(line, file=self.stream, flush=True)
        self._recent.appendleft(f"child {record['index']}: {record['status']} reward {reward}{accuracy}{reason}")
        self.refresh(search, running=running)

    def _panel(self, search: Search, *, running: int) -> Table:
        counters = search.counters
        done = counters.succeeded + counters.failed
        elapsed = time.monotonic() - self.started
        table = Table(title=f"kubenas search {self.name}", show_header=False, min_width=60)
        table.add_row("children", f"{done}/{search.max_trials} done, {running} running, {counters.failed} failed")
        best = search.best
        if best is not None:
            accuracy = "" if best.validation_accuracy is None else f", val acc {best.validation_accuracy:.4f}"
            table.add_row("best", f"reward {best.reward:.4f}{accuracy} (child {best.index})")
        update = search.last_update
        if update is not None:
            table.add_row(
                "policy", f"version {update.version}, baseline {update.baseline:.4f}, entropy {update.entropy:.2f}"
            )
        if self.cache_line:
            table.add_row("cache", self.cache_line)
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = (search.max_trials - done) / rate if rate > 0 else float("nan")
        table.add_row("time", f"{elapsed:.0f}s elapsed" + (f", ~{remaining:.0f}s left" if rate > 0 else ""))
        if self.usage is not None:
            table.add_row("compute", self.usage)
        for number, line in enumerate(self._recent):
            table.add_row("recent" if number == 0 else "", line)
        return table
