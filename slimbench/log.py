"""Logging for every command: messages about the work go to stderr with a level (``-v`` for debug, ``-q`` for
warnings only); a command's results (paths written, tables, lists) go to stdout. Under Snakemake each job's
stderr and stdout are its own log file (``log:`` of its rule), so every job has one log."""

from __future__ import annotations

import logging
import sys

LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


def setup(verbosity: int) -> None:
    """``verbosity`` -1 (quiet), 0 (default) or 1 (verbose)."""
    logging.basicConfig(level=LEVELS[max(-1, min(1, verbosity))], stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
