"""scripts/gpu_carry.py: the carry holds exactly the files the studies' loaders read, at the paths a loader
looks for, and loads to the same data; its total counts the carry, the extra paths and the working tree, and a
carry over the limit fails."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, load_file_module
from slimbench.data import load_dataset
from slimbench.errors import SlimbenchError
from test_config_datasets import config_file, write_image_folder, write_tsv


@pytest.fixture
def gpu_carry(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # as when run as a script: carry_zip beside it
    monkeypatch.delenv("SLIMBENCH_DATA_ROOT", raising=False)  # the config's own data root
    return load_file_module("scripts/gpu_carry.py")


@pytest.fixture
def adopted(tmp_path: Path) -> Path:
    write_tsv(tmp_path / "data" / "reviews" / "train.tsv", 24)
    write_tsv(tmp_path / "data" / "reviews" / "dev.tsv", 8)
    write_image_folder(tmp_path / "data" / "daynight.zip")
    (tmp_path / "data" / "unused.txt").write_text("not read by any loader")
    return config_file(tmp_path)


def printed_total(output: str) -> int:
    return int(re.search(r"MiB in all \((\d+) bytes\)", output).group(1))


def test_a_file_found_outside_the_root_goes_where_a_loader_looks_first(tmp_path: Path, gpu_carry) -> None:
    root = tmp_path / "data"
    candidates = ["fashion-mnist/x.gz", "/usr/share/datasets/fashion-mnist/x.gz", "fashion-mnist/x",
                  "/usr/share/datasets/fashion-mnist/x"]
    place = gpu_carry.root_relative
    assert place(root, candidates, root / "fashion-mnist" / "x") == "fashion-mnist/x"
    assert place(root, candidates, Path("/usr/share/datasets/fashion-mnist/x.gz")) == "fashion-mnist/x.gz"
    # an uncompressed file found outside keeps its name (a .gz name would make the reader unzip it)
    assert place(root, candidates, Path("/usr/share/datasets/fashion-mnist/x")) == "fashion-mnist/x"
    with pytest.raises(SlimbenchError, match="no candidate below it has its name"):
        place(root, ["a/y.gz", "/elsewhere/z.gz"], Path("/elsewhere/z.gz"))


def test_the_carry_holds_the_loaders_files_and_loads_to_the_same_data(tmp_path: Path, adopted: Path, gpu_carry,
                                                                      capsys) -> None:
    out, extra = tmp_path / "carry", tmp_path / "extra.bin"
    extra.write_bytes(b"x" * 1000)
    assert gpu_carry.main(["--config", str(adopted), "--out", str(out), "--also", str(extra), "adopt"]) == 0
    carried = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert carried in (["daynight.zip", "reviews/dev.tsv", "reviews/train.tsv"],
                       ["daynight.zip.tar.xz", "reviews/dev.tsv", "reviews/train.tsv"])
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum((REPO / name).stat().st_size for name in listed if name and (REPO / name).is_file())
    expected = sum((out / name).stat().st_size for name in carried) + 1000 + tree
    assert printed_total(capsys.readouterr().out) == expected
    if (out / "daynight.zip.tar.xz").exists():  # as scripts/gpu_workflow.sh does on the GPU machine
        load_file_module("scripts/carry_zip.py").unpack(out / "daynight.zip.tar.xz", out / "daynight.zip")
    specs = yaml.safe_load(adopted.read_text())["datasets"]
    here = load_dataset(specs["reviews"], tmp_path / "data", False, tmp_path / "cache-here")
    there = load_dataset(specs["reviews"], out, False, tmp_path / "cache-there")
    assert (there.train.texts, there.train.labels) == (here.train.texts, here.train.labels)
    images = {**specs["daynight"], "in_memory": True}
    here = load_dataset(images, tmp_path / "data", False, tmp_path / "cache-here")
    there = load_dataset(images, out, False, tmp_path / "cache-there")
    assert torch.equal(there.train.images, here.train.images) and torch.equal(there.eval.labels, here.eval.labels)
    # One byte under that total fails; the total itself passes. An existing folder is refused.
    mib = 2**20
    assert gpu_carry.main(["--config", str(adopted), "--out", str(tmp_path / "c2"), "--also", str(extra),
                           "--limit-mib", str((expected - 1) / mib), "adopt"]) == 1
    assert "over the limit: delete" in capsys.readouterr().err
    assert gpu_carry.main(["--config", str(adopted), "--out", str(tmp_path / "c3"), "--also", str(extra),
                           "--limit-mib", str(expected / mib), "adopt"]) == 0
    with pytest.raises(SystemExit):
        gpu_carry.main(["--config", str(adopted), "--out", str(out), "adopt"])
