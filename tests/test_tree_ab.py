"""benchmarks/tree_ab.py on two stand-in trees whose ``slimbench base`` writes a stage log with known training times
(old 10, 30, 11 s; new 20, 21, 60 s, in the order each tree runs) and known weights: the runs alternate old new,
new old, old new; each tree's own config is the one given; the medians (11 and 21: not the means, 17 and 33.7) and
their ratio (21 / 11 = 1.909) are worked out by hand. Bad arguments are refused before any run."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

EXPERIMENT = "results/x/study/data/model/seed0/base"
FAKE_CLI = '''import json, sys
from pathlib import Path
times = Path(__file__).parents[1] / "times.txt"  # this tree's next step time, one line per run
first, *rest = times.read_text().split()
times.write_text(" ".join(rest))
step, config = sys.argv[1], sys.argv[sys.argv.index("--config") + 1]
folder = Path(sys.argv[sys.argv.index("--config") + 2])
overrides = sys.argv[sys.argv.index("--set") + 1] if "--set" in sys.argv else None
if step == "base":
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "stage.json").write_text(json.dumps(
        {{"time_s": float(first), "steps": 7, "final_loss": 0.5, "config": config, "set": overrides}}))
    (folder / "model" / "model.safetensors").write_bytes(b"{weights}")
else:
    assert not (folder / "metrics.json").exists()
    (folder / "metrics.json").write_text(json.dumps({{"eval_time_s": float(first), "process_age_at_evaluation_s":
                                                     0.25, "metrics": {{"accuracy": len("{weights}")}}}}))
'''


def fake_tree(root: Path, times: list[float], weights: str) -> Path:
    for package in ("slimbench", "methods", "baselines"):
        (root / package).mkdir(parents=True)
    (root / "slimbench" / "__init__.py").write_text("")
    (root / "slimbench" / "cli.py").write_text(FAKE_CLI.format(weights=weights))
    (root / "times.txt").write_text(" ".join(map(str, times)))
    (root / "config").mkdir()
    (root / "config" / "c.yaml").write_text("")
    return root


def tree_ab(tmp_path: Path, old: Path, new: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "tree_ab.py"), "--tree", f"old={old}",
                           "--tree", f"new={new}", "--config", "config/c.yaml", "--experiment", EXPERIMENT,
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path / "ab.csv"), *extra],
                          capture_output=True, text=True)


def test_runs_alternate_and_the_ratio_is_of_the_medians_new_over_old(tmp_path):
    old, new = fake_tree(tmp_path / "old", [10, 30, 11], "same"), fake_tree(tmp_path / "new", [20, 21, 60], "same")
    done = tree_ab(tmp_path, old, new, "--repeats", "3")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "ab.csv").open()))
    assert [(row["tree"], row["position"]) for row in rows] == [("old", "0"), ("new", "1"), ("new", "0"),
                                                                ("old", "1"), ("old", "0"), ("new", "1")]
    assert [float(row["time_s"]) for row in rows] == [10, 20, 21, 30, 11, 60]
    assert {(row["steps"], row["final_loss"]) for row in rows} == {("7", "0.5")}
    assert "{'old': 11.0, 'new': 21.0}" in done.stdout and "new/old = 1.909" in done.stdout
    assert "bit for bit the same in every run" in done.stdout
    stage = (tmp_path / "work" / "new-1" / EXPERIMENT / "model" / "stage.json").read_text()
    assert str(new / "config" / "c.yaml") in stage  # each tree runs with its own config


def test_evaluation_jobs_reuse_one_base_per_tree_and_split_their_wall_time(tmp_path):
    """--step evaluate: each tree trains its base once (the first of its times), then evaluates it once per repeat
    (the rest); each row's after_s is its measured process time less the age (0.25) and the evaluation's time."""
    old = fake_tree(tmp_path / "old", [99, 0.5, 0.75], "same")
    new = fake_tree(tmp_path / "new", [98, 0.5, 0.5], "same")
    done = tree_ab(tmp_path, old, new, "--step", "evaluate", "--repeats", "2", "--set", '{"threads": 1}')
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "ab.csv").open()))
    assert [(row["tree"], float(row["time_s"])) for row in rows] == [("old", 0.5), ("new", 0.5), ("new", 0.5),
                                                                     ("old", 0.75)]
    for row in rows:
        assert float(row["after_s"]) == pytest.approx(float(row["process_s"]) - 0.25 - float(row["time_s"]))
        assert row["process_age_s"] == "0.25" and row["metrics"] == '{"accuracy": 4}'
    assert (old / "times.txt").read_text() == "" and sorted(p.name for p in (tmp_path / "work").iterdir()) == [
        "new", "old"]
    stage = (tmp_path / "work" / "new" / EXPERIMENT / "model" / "stage.json").read_text()
    assert '"set": "{\\"threads\\": 1}"' in stage  # the overrides reach every step
    assert "median evaluation job s" in done.stdout and "task metrics bit for bit the same" in done.stdout


def test_weights_that_differ_are_said_to_differ(tmp_path):
    done = tree_ab(tmp_path, fake_tree(tmp_path / "old", [10], "a"), fake_tree(tmp_path / "new", [10], "b"),
                   "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert "new/old = 1.000" in done.stdout and "differ between runs" in done.stdout


def without_methods(tree: Path) -> None:
    (tree / "methods").rmdir()  # the stages' package: without it the stages would come from another tree


def without_config(tree: Path) -> None:
    (tree / "config" / "c.yaml").unlink()


@pytest.mark.parametrize("breaking, extra, message", [
    (without_methods, [], "lacks methods/"),
    (without_config, [], "lacks config/c.yaml"),
    (None, ["--repeats", "0"], "--repeats must be at least 1"),
    (None, ["--tree", "third"], "--tree must be given twice, as NAME=PATH"),
    (None, ["--set", "[1]"], "--set must be a JSON object"),
])
def test_bad_arguments_are_refused_before_any_run(tmp_path, breaking, extra, message):
    old, new = fake_tree(tmp_path / "old", [10], "a"), fake_tree(tmp_path / "new", [10], "a")
    if breaking:
        breaking(new)
    done = tree_ab(tmp_path, old, new, *extra)
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "work").exists() and (old / "times.txt").read_text() == "10"  # old never ran


def test_a_work_folder_with_an_earlier_run_is_refused(tmp_path):
    (tmp_path / "work" / "old-0").mkdir(parents=True)
    done = tree_ab(tmp_path, fake_tree(tmp_path / "old", [10], "a"), fake_tree(tmp_path / "new", [10], "a"))
    assert done.returncode != 0 and "is not empty" in done.stderr

