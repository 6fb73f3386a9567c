"""Atomic file replacement for everything dcrt writes (.dcz files, pipeline checkpoints, logs).

A file is written to a temp file beside its target, flushed and fsync'ed, renamed over the
target, and the directory fsync'ed, so that a crash or power cut leaves either the old file or
the new one, never a mix. The temp file is named ``.<target>.tmp-<pid>-<random>``: a writer
that dies (killed, out of memory) leaves it behind, and the next write to that directory
removes every such file whose process is gone. A failure that Python sees (an exception, a
KeyboardInterrupt) removes the temp file at once.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile

_TMP = re.compile(r"^\..+\.tmp-(\d+)-[A-Za-z0-9_]+$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def clean_stale(directory) -> list:
    """Remove the temp files in ``directory`` left by dcrt writers that died; returns their
    paths. Temp files of live processes (a concurrent writer) are left alone."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TMP.match(name)
        if m and not _pid_alive(int(m.group(1))):
            p = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
                removed.append(p)
    return removed


def fsync_dir(directory):
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - not POSIX
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """``with atomic_write(path) as f: f.write(...)``: on a clean exit ``path`` holds exactly
    what was written (fsync'ed, renamed, directory fsync'ed); on any exception it is untouched
    and no temp file remains."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    clean_stale(d)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-{os.getpid()}-", dir=d)
    except OSError as e:  # the error names the target, not the temp file nobody asked for
        raise type(e)(e.errno, e.strerror, path) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(d)
