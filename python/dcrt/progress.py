"""A minimal progress bar on stderr (no dependency); silent when disabled or not a TTY-less CI log."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", enabled: bool = True, stream=None):
        self.total, self.desc, self.n = max(int(total), 1), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._draw("")

    def _draw(self, note: str):
        if not self.enabled:
            return
        frac = self.n / self.total
        bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
        dt = time.perf_counter() - self.t0
        end = "\n" if self.n >= self.total else ""
        tty = getattr(self.stream, "isatty", lambda: False)()
        if not tty and not end:
            return  # logs get one line per bar, at the end
        self.stream.write(f"\r{self.desc} [{bar}] {self.n}/{self.total} {dt:6.1f}s {note:<24.24}" + end)
        self.stream.flush()

    def update(self, note: str = "", n: int = 1):
        self.n += n
        self._draw(note)

    def close(self):
        if self.n < self.total:
            self.n = self.total
            self._draw("")
