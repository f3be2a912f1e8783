"""The working tree's files as a copy of it would hold them: tracked, and untracked but not ignored (what the
device tool carries with every call, and what scripts/mutations.py copies to break)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree_files(repo: Path = REPO) -> list[str]:
    """Their paths relative to ``repo``; a tracked file deleted in the tree is left out."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return [name for name in listed if name and (repo / name).is_file()]
