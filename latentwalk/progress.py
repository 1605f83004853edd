"""Progress: a rich bar on a terminal, plain periodic lines on stderr otherwise, or nothing."""

from __future__ import annotations

import sys
import time

PLAIN_EVERY_SECONDS = 10.0


def pick_mode(quiet: bool) -> str:
    if quiet:
        return "quiet"
    return "rich" if sys.stderr.isatty() else "plain"


class Progress:
    def __init__(self, total: int, label: str, mode: str):
        self.total, self.label, self.mode = total, label, mode
        self.done = 0
        self.start = time.perf_counter()
        self._last_line = self.start
        self._bar = None

    def __enter__(self) -> "Progress":
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, rate="")
        elif self.mode == "plain":
            print(f"latentwalk: {self.label}: {self.total} frames", file=sys.stderr, flush=True)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        rate = self.done / max(now - self.start, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{rate:.2f} frames/s")
        elif self.mode == "plain" and (now - self._last_line >= PLAIN_EVERY_SECONDS or self.done == self.total):
            self._last_line = now
            eta = (self.total - self.done) / rate if rate > 0 else 0
            print(
                f"latentwalk: {self.label}: {self.done}/{self.total} frames, {rate:.2f} frames/s, ETA {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
