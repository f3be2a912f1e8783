"""scripts/gpu_carry.py: the carry holds exactly the files the studies' loaders read, at the paths a loader
looks for, and loads to the same data; a carry over the limit fails."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, load_file_module
from slimbench.data import load_dataset
from slimbench.data.base import root_relative
from test_config_datasets import config_file, write_image_folder, write_tsv


@pytest.fixture
def gpu_carry(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # as when run as a script: carry_zip beside it
    monkeypatch.delenv("SLIMBENCH_DATA_ROOT", raising=False)  # the config's own data root
    return load_file_module("scripts/gpu_carry.py")


def test_a_file_found_outside_the_root_goes_where_a_loader_looks_first(tmp_path: Path) -> None:
    root = tmp_path / "data"
    candidates = ["fashion-mnist/x.gz", "/usr/share/datasets/fashion-mnist/x.gz", "fashion-mnist/x"]
    assert root_relative(root, candidates, root / "fashion-mnist" / "x") == "fashion-mnist/x"
    assert root_relative(root, candidates, Path("/usr/share/datasets/fashion-mnist/x.gz")) == "fashion-mnist/x.gz"
    # an uncompressed file found outside keeps its name (a .gz name would make the reader unzip it)
    assert root_relative(root, candidates, Path("/usr/share/datasets/fashion-mnist/x")) == "fashion-mnist/x"
    assert root_relative(root, ["a/y.gz", "/elsewhere/z.gz"], Path("/elsewhere/z.gz")) == "a/y.gz"


def test_the_carry_holds_the_loaders_files_and_loads_to_the_same_data(tmp_path: Path, gpu_carry, capsys) -> None:
    write_tsv(tmp_path / "data" / "reviews" / "train.tsv", 24)
    write_tsv(tmp_path / "data" / "reviews" / "dev.tsv", 8)
    write_image_folder(tmp_path / "data" / "daynight.zip")
    (tmp_path / "data" / "unused.txt").write_text("not read by any loader")
    config = config_file(tmp_path)
    out = tmp_path / "carry"
    assert gpu_carry.main(["--config", str(config), "--out", str(out), "adopt"]) == 0
    carried = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert carried in (["daynight.zip", "reviews/dev.tsv", "reviews/train.tsv"],
                       ["daynight.zip.tar.xz", "reviews/dev.tsv", "reviews/train.tsv"])
    if (out / "daynight.zip.tar.xz").exists():  # as scripts/gpu_workflow.sh does on the GPU machine
        load_file_module("scripts/carry_zip.py").unpack(out / "daynight.zip.tar.xz", out / "daynight.zip")
    specs = yaml.safe_load(config.read_text())["datasets"]
    for name in ("reviews", "daynight"):
        spec = {**specs[name], "in_memory": True} if name == "daynight" else specs[name]
        here = load_dataset(spec, tmp_path / "data", False, tmp_path / "cache-here")
        there = load_dataset(spec, out, False, tmp_path / "cache-there")
        if name == "reviews":
            assert (there.train.texts, there.train.labels) == (here.train.texts, here.train.labels)
        else:
            assert torch.equal(there.train.images, here.train.images) and torch.equal(there.eval.labels,
                                                                                      here.eval.labels)
    assert "MiB in all, limit 64 MiB" in capsys.readouterr().out


def test_a_carry_over_the_limit_fails(tmp_path: Path, gpu_carry, capsys) -> None:
    write_tsv(tmp_path / "data" / "reviews" / "train.tsv", 24)
    write_tsv(tmp_path / "data" / "reviews" / "dev.tsv", 8)
    write_image_folder(tmp_path / "data" / "daynight.zip")
    config = config_file(tmp_path)
    assert gpu_carry.main(["--config", str(config), "--out", str(tmp_path / "carry"), "--limit-mib", "0.001",
                           "adopt"]) == 1
    assert "over the limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an existing folder is refused: nothing of an earlier carry rides along
        gpu_carry.main(["--config", str(config), "--out", str(tmp_path / "carry"), "adopt"])
