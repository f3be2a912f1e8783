"""Checksums that readers verify, so a truncated or altered model or metrics file is never read as a result.

A corrupt file is moved aside (``<name>.corrupt``) rather than left in place: the workflow and ``slimbench
run``/``study`` see the output missing and rebuild it on the next run, and the bad copy stays for inspection.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from slimbench.atomic import atomic_target
from slimbench.errors import CorruptFileError

CHECKSUM_KEY = "sha256"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_sha256(record: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON without its own checksum field (key order and spacing do not count)."""
    body = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def write_sealed_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically with a checksum of its content, which :func:`read_sealed_json` verifies."""
    sealed = json.loads(json.dumps(record, default=str))  # the checksum covers exactly what is written
    sealed[CHECKSUM_KEY] = record_sha256(sealed)
    with atomic_target(Path(path)) as tmp:
        tmp.write_text(json.dumps(sealed, indent=2) + "\n")


def quarantine(path: Path) -> Path:
    """Move a corrupt file or folder aside so the next run rebuilds it; returns where it went."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt")
    if aside.is_dir():
        shutil.rmtree(aside)
    os.replace(path, aside)
    return aside


def corrupt(path: Path, why: str, what: str) -> CorruptFileError:
    """Quarantine ``path`` and return the one-line error that says what happened and how to rebuild."""
    aside = quarantine(path)
    return CorruptFileError(f"{what} '{path}' is corrupt ({why}); moved to '{aside}'. Fix: rerun the same command "
                            f"(snakemake or slimbench run/study), which rebuilds it.")


def read_sealed_json(path: Path, what: str = "metrics file") -> dict[str, Any]:
    """A JSON record whose checksum matches its content; a garbled or altered one is quarantined (see module doc).
    Records without a checksum (written before checksums existed) are read as they are."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as error:
        raise corrupt(path, f"unreadable JSON: {str(error).splitlines()[0]}", what) from None
    if CHECKSUM_KEY in record and record[CHECKSUM_KEY] != record_sha256(record):
        raise corrupt(path, "checksum mismatch", what)
    return record
