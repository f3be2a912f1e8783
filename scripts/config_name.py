"""The results folder of a config given as several files: the last file's ``name``, as Snakemake's --configfile
and slimbench's repeated --config merge them, without validating the whole config (the GPU scripts need only it).

    python3 scripts/config_name.py config/default.yaml config/overlays/one_gpu.yaml    # prints default_one_gpu
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def config_name(paths: list[str]) -> str:
    """The ``name`` of the last file that sets one."""
    names = [name for name in ((yaml.safe_load(Path(path).read_text()) or {}).get("name") for path in paths) if name]
    if not names:
        raise SystemExit(f"none of {paths} sets a config 'name'. Fix: give the base config (e.g. config/default.yaml) "
                         f"first.")
    return names[-1]


if __name__ == "__main__":
    print(config_name(sys.argv[1:]))
