"""Atomic file writes: every file tfn_md writes appears complete or not at all.

The content goes to a temporary file beside the target (same folder, so the same
file system), which then replaces the target with one ``os.replace`` (an atomic
rename on POSIX and Windows). A crash or an exception leaves the old file (or
none) and at most a stray ``.<name>.tmp-<pid>-<random>`` file; an exception also
removes the temporary file.

    with atomic_path("out/report.json") as tmp:
        tmp.write_text(text)            # or torch.save(obj, tmp), fig.savefig(tmp), ...
    write_text_atomic("out/report.md", text)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "temp_path", "write_text_atomic"]


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.tmp-<pid>-<random hex>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    The parent folder is created if needed. Whatever creates the temporary file
    (``open``, ``torch.save``, h5py, matplotlib) gives it the usual permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
