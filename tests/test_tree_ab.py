"""benchmarks/tree_ab.py on two stand-in trees whose ``slimbench base`` writes a stage log with a known training time
(old 10 s, new 20 s) and known weights: the runs alternate old new, new old, old new; each tree's own config is
the one given; the medians and the ratio are the ones worked out by hand (20 / 10 = 2.000)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from conftest import REPO

EXPERIMENT = "results/x/study/data/model/seed0/base"
FAKE_CLI = '''import json, sys
from pathlib import Path
config, folder = sys.argv[sys.argv.index("--config") + 1], Path(sys.argv[-1])
(folder / "model").mkdir(parents=True)
(folder / "model" / "stage.json").write_text(json.dumps(
    {{"time_s": {time_s}, "steps": 7, "final_loss": 0.5, "config": config}}))
(folder / "model" / "model.safetensors").write_bytes(b"{weights}")
'''


def fake_tree(root: Path, time_s: float, weights: str) -> Path:
    for package in ("methods", "baselines"):
        (root / package).mkdir(parents=True)
    (root / "slimbench").mkdir(parents=True)
    (root / "slimbench" / "__init__.py").write_text("")
    (root / "slimbench" / "cli.py").write_text(FAKE_CLI.format(time_s=time_s, weights=weights))
    (root / "config").mkdir()
    (root / "config" / "c.yaml").write_text("")
    return root


def tree_ab(tmp_path: Path, old: Path, new: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "tree_ab.py"), "--tree", f"old={old}",
                           "--tree", f"new={new}", "--config", "config/c.yaml", "--experiment", EXPERIMENT,
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path / "ab.csv"), *extra],
                          capture_output=True, text=True)


def test_runs_alternate_and_the_ratio_is_new_over_old(tmp_path):
    old, new = fake_tree(tmp_path / "old", 10, "same"), fake_tree(tmp_path / "new", 20, "same")
    done = tree_ab(tmp_path, old, new, "--repeats", "3")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "ab.csv").open()))
    assert [(row["tree"], row["position"]) for row in rows] == [("old", "0"), ("new", "1"), ("new", "0"),
                                                                ("old", "1"), ("old", "0"), ("new", "1")]
    assert [float(row["time_s"]) for row in rows] == [10, 20, 20, 10, 10, 20]
    assert "new/old = 2.000" in done.stdout and "bit for bit the same in every run" in done.stdout
    stage = (tmp_path / "work" / "new-1" / EXPERIMENT / "model" / "stage.json").read_text()
    assert str(new / "config" / "c.yaml") in stage  # each tree runs with its own config


def test_weights_that_differ_are_said_to_differ(tmp_path):
    done = tree_ab(tmp_path, fake_tree(tmp_path / "old", 10, "a"), fake_tree(tmp_path / "new", 10, "b"),
                   "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert "new/old = 1.000" in done.stdout and "differ between runs" in done.stdout


def test_a_tree_without_its_methods_is_refused_before_any_run(tmp_path):
    new = fake_tree(tmp_path / "new", 10, "a")
    (new / "methods").rmdir()  # the stages' package: without it the stages would come from another tree
    done = tree_ab(tmp_path, fake_tree(tmp_path / "old", 10, "a"), new)
    assert done.returncode != 0 and "each with slimbench/, methods/, baselines/ folders" in done.stderr
    assert not (tmp_path / "work").exists()
