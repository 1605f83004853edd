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
    def __init__(self, total: int, label: str, mode: str, unit: str = "frames", at_most: bool = False):
        """With `at_most`, total is an upper bound (a smooth walk stops when its frames are
        even): the bar is completed by finish()."""
        self.total, self.label, self.mode, self.unit, self.at_most = total, label, mode, unit, at_most
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
            bound = "at most " if self.at_most else ""
            print(f"latentwalk: {self.label}: {bound}{self.total} {self.unit}", file=sys.stderr, flush=True)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        rate = self.done / max(now - self.start, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{rate:.2f} {self.unit}/s")
        elif self.mode == "plain" and (now - self._last_line >= PLAIN_EVERY_SECONDS or self.done == self.total):
            self._last_line = now
            eta = (self.total - self.done) / rate if rate > 0 else 0
            print(
                f"latentwalk: {self.label}: {self.done}/{self.total} {self.unit}, {rate:.2f} {self.unit}/s, ETA {eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def finish(self) -> None:
        """Done, even where fewer than the most were needed."""
        if self.done < self.total:
            if self._bar is not None:
                self._bar.update(self._task, total=self.done)
            elif self.mode == "plain":
                print(f"latentwalk: {self.label}: {self.done} {self.unit}, done", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
