"""A minimal progress bar on stderr (no dependency). On a terminal it redraws in place; in a
log (not a TTY) it writes a whole line every ``log_every`` seconds and one at the end, so a long
stage still shows it is alive and how far it got."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", enabled: bool = True, stream=None, log_every: float = 5.0):
        self.total, self.desc, self.n = max(int(total), 1), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.log_every = float(log_every)
        self.t0 = self._last = time.perf_counter()
        self._draw("")

    def _draw(self, note: str):
        if not self.enabled:
            return
        frac = self.n / self.total
        bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
        now = time.perf_counter()
        dt = now - self.t0
        end = "\n" if self.n >= self.total else ""
        tty = getattr(self.stream, "isatty", lambda: False)()
        if not tty:
            # a log: a line every log_every seconds (with the rate and what is left), and the last
            if not end and (self.n == 0 or now - self._last < self.log_every):
                return
            self._last = now
            rate = self.n / dt if dt > 0 else 0.0
            eta = f", ~{(self.total - self.n) / rate:.0f}s left" if rate > 0 and not end else ""
            self.stream.write(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) {dt:.1f}s"
                              f"{eta} {note}".rstrip() + "\n")
            self.stream.flush()
            return
        self.stream.write(f"\r{self.desc} [{bar}] {self.n}/{self.total} {dt:6.1f}s {note:<24.24}" + end)
        self.stream.flush()

    def update(self, note: str = "", n: int = 1):
        self.n += n
        self._draw(note)

    def close(self):
        if self.n < self.total:
            self.n = self.total
            self._draw("")
