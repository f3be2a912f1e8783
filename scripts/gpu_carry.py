"""The data root a GPU call needs: every file the studies' dataset loaders read, copied into one folder.

    python scripts/gpu_carry.py --config config/default.yaml --out .carry/next --also .whl dgmr edge_vit

The device tool carries at most 64 MiB per call (wheels and working tree included), and a call that lacks a file
loses its machine time. So each dataset of the studies' grids is loaded here once, as a job loads it (a temporary
cache, no downloads), and every file its loader found (``slimbench.data.base.files_found``) is copied to
``--out`` at the place a loader looks for it first: Fashion-MNIST from Debian's folder lands in
``fashion-mnist/``. A zip is stored packed by scripts/carry_zip.py where that is smaller; scripts/gpu_workflow.sh
unpacks it on the GPU machine when ``$SLIMBENCH_DATA_ROOT`` (``DATA`` of scripts/gpu_studies.sh) is the carry.
Prints each file's size and the total with the ``--also`` paths and the working tree (git's tracked and
unignored files), and exits 1 above ``--limit-mib``.

Models are not looked for: MiniLM comes from its wheel or ``<data root>/models/`` (scripts/minilm_fp16.py).
``--also`` only counts a path: copy such a folder into ``--out`` yourself where a study needs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from carry_zip import pack
from worktree import REPO, tree_files
from slimbench.config import experiments, load_config
from slimbench.data import data_root, load_dataset
from slimbench.data.base import files_found
from slimbench.errors import SlimbenchError

MIB = 2**20


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def root_relative(root: Path, candidates: Sequence[str], path: Path) -> str:
    """Where below a data root a loader would find ``path``: its own place if it is below ``root``, else the
    relative candidate of the same name (e.g. Fashion-MNIST in Debian's folder -> ``fashion-mnist/<file>``)."""
    if path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    same_name = [c for c in candidates if not os.path.isabs(c) and Path(c).name == path.name]
    if not same_name:
        raise SlimbenchError(f"'{path}' was found outside the data root, and no candidate below it has its name "
                             f"({', '.join(candidates)}): a carry cannot hold it where the loader looks.")
    return same_name[0]


def needed_files(config: dict, studies: list[str], root: Path) -> dict[str, dict[str, Path]]:
    """For each dataset of the studies, the files its loader found: {dataset: {path below the root: file}}."""
    names = sorted({exp.dataset for study in studies for exp in experiments(config, study)})
    needed = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in names:
            with files_found() as found:
                load_dataset(config["datasets"][name], root, False, Path(cache))
            needed[name] = {root_relative(*record): record[2] for record in found}
    return needed


def copy_into(files: dict[str, Path], out: Path) -> dict[str, int]:
    """Copy each file (or folder) to ``out``/its path, a zip packed where smaller; returns the bytes written."""
    written = {}
    for relative, source in sorted(files.items()):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.suffix == ".zip":
            packed = target.with_name(target.name + ".tar.xz")
            pack(source, packed)
            if packed.stat().st_size < source.stat().st_size:
                target = packed
            else:
                packed.unlink()
                shutil.copy2(source, target)
        else:
            shutil.copy2(source, target)
        written[target.relative_to(out).as_posix()] = size_of(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="the carry's data root (must not exist yet)")
    parser.add_argument("--also", action="append", type=Path, default=[],
                        help="another carried path, counted in the total (repeat for more)")
    parser.add_argument("--limit-mib", type=float, default=64.0)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; name a new folder, so that nothing of an earlier carry rides along")
    config = load_config(args.config)
    missing = [s for s in args.studies if s not in config["studies"]]
    if missing:
        parser.error(f"no study {missing} in {args.config}; its studies: {', '.join(config['studies'])}")
    try:
        needed = needed_files(config, args.studies, data_root(config["data_root"]))
    except SlimbenchError as error:
        print(f"gpu_carry: {error}", file=sys.stderr)
        return 2
    written = copy_into({k: v for files in needed.values() for k, v in files.items()}, args.out)
    for dataset, files in needed.items():
        print(f"{dataset}: {', '.join(sorted(files))}")
    tree = sum(size_of(REPO / name) for name in tree_files())
    sizes = {**{str(args.out / name): size for name, size in written.items()},
             **{str(path): size_of(path) for path in args.also}, "the working tree": tree}
    for name, size in sizes.items():
        print(f"{size / MIB:8.1f} MiB  {name}")
    total = sum(sizes.values())
    print(f"{total / MIB:8.1f} MiB in all ({total} bytes), limit {args.limit_mib:g} MiB")
    if total > args.limit_mib * MIB:
        print(f"over the limit: delete {args.out} and split the studies over several calls, or carry fewer files",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
