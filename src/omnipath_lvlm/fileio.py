"""Atomic file writes: a temporary file in the target's folder, flushed, then renamed over it.

A failure (an exception, a crash, a full disk) leaves either the old file or the
complete new one, never a half-written file; the temporary file is removed when
the write raises. The new file gets the usual permissions (the process umask
applies), unlike :func:`tempfile.mkstemp`, whose files are private to their owner.

:func:`atomic_open` streams into the temporary file (e.g. a large JSONL file
written line by line); :func:`atomic_write_bytes` and :func:`atomic_write_text`
write content that is already in memory.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: str | os.PathLike[str], text: bool = True) -> Iterator[IO]:
    """A handle on a temporary file that replaces ``path`` when the block ends without raising.

    Text handles write UTF-8 without newline translation. The folder of ``path``
    is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        mode = {"mode": "w", "encoding": "utf-8", "newline": ""} if text else {"mode": "wb"}
        with os.fdopen(fd, **mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_open(path, text=False) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_open(path, text=True) as handle:
        handle.write(text)
    return Path(path)
