"""Atomic file writes and per-folder locks: readers never see half a file, concurrent writers of one file do not
clash, and two processes (Snakemake jobs, `slimbench study` runs) never build the same experiment at once."""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, unique to this process, and move it onto ``path`` once the block
    succeeds; a failed or killed block leaves ``path`` untouched (and its temporary file removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary path and move the result onto ``path``: a reader (another `slimbench study`
    reading runs.csv, say) sees the old file or the new one, never a half-written one."""
    with atomic_target(path) as tmp:
        write(tmp)
    return Path(path)


LOCK_FILE = ".lock"


@contextmanager
def folder_lock(folder: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder`` (created if needed) for the block; yields whether another process
    held it when we asked, i.e. whether that process may have built what we were about to build.

    ``flock`` locks die with their process, so a killed run (kill -9 included) never leaves a stale lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            fcntl.flock(handle, fcntl.LOCK_EX)
            waited = True
        try:
            yield waited
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_temporaries(folder: Path) -> None:
    """Delete what killed writers left in ``folder`` (``.<name>.<pid>.tmp`` files and folders). Only safe while
    holding the folder's lock, when no other process can be writing there."""
    for leftover in Path(folder).glob(".*.tmp"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
