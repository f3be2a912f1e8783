"""Bad input fails at config time (or at data loading, before any training) with a message naming the fix."""

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from slimbench.config import (REPO, Experiment, evaluation_settings, experiments, load_config, tracked_settings,
                              validate_config)
from slimbench.data import DATA_ROOT_ENV
from slimbench.errors import ConfigError, DataNotFoundError

SMOKE = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def broken(edit):
    config = copy.deepcopy(SMOKE)
    edit(config)
    return config


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["studies"]["skeleton"]["grid"][0].update(models=["vit_mcro"]), "unknown model 'vit_mcro'"),
    (lambda c: c["studies"]["skeleton"]["grid"][0].update(datasets=["mnst"]), "unknown dataset 'mnst'"),
    (lambda c: c["studies"]["skeleton"]["chains"].append("base+prune_everything-0.5"), "unknown stage 'prune_everything'"),
    (lambda c: c["studies"]["skeleton"]["chains"].append("base+mlp_magnitude-1.5"), "out of range"),
    (lambda c: c["studies"]["skeleton"].update(figures=["pie_chart"]), "unknown figure 'pie_chart'"),
    (lambda c: c["studies"]["skeleton"]["base"].update(epoch=3) if "base" in c["studies"]["skeleton"]
     else c["studies"]["skeleton"].update(base={"epoch": 3}), "unknown training option"),
    (lambda c: c["studies"]["skeleton"]["grid"][0].update(models=["minilm"]), "is for text_classification"),
    (lambda c: c["datasets"]["mnist_smoke"].update(splitt="x"), "unknown option"),
    (lambda c: c["datasets"]["sst2_smoke"].update(augment=True), "task 'text_classification' has no augmentation"),
    (lambda c: c["datasets"]["mnist_smoke"].update(augment="yes"), "is not of type 'boolean'"),
    (lambda c: c.update(device="tpu"), "device"),
    (lambda c: c["studies"]["skeleton"].update(evaluation={"latency": {"paired": -1}}),
     "studies/skeleton/evaluation/latency/paired"),
    (lambda c: c.update(evaluation=None), "evaluation"),
])
def test_bad_config_is_rejected_before_any_work(edit, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(broken(edit))


def test_a_study_changes_only_the_evaluation_keys_it_names():
    """Written by hand: the top-level settings, the study's two changes on top, the other study untouched."""
    config = copy.deepcopy(SMOKE)
    config["evaluation"] = {"batch_size": 32, "latency": {"threads": 2, "paired": 4},
                            "budget": {"name": "board", "memory_mib": 512}}
    second = copy.deepcopy(config["studies"]["skeleton"])
    config["studies"]["lean"] = {**second, "evaluation": {"budget": None, "latency": {"paired": 0}}}
    validated = validate_config(config)
    defaults = {"flops": True, "model_memory": False}
    latency = {"batch_size": 1, "threads": 2, "warmup": 3, "repeats": 10, "cuda": True}
    assert evaluation_settings(validated, "skeleton") == {
        "batch_size": 32, "budget": {"name": "board", "memory_mib": 512}, "latency": {**latency, "paired": 4},
        **defaults}
    assert evaluation_settings(validated, "lean") == {"batch_size": 32, "budget": None,
                                                      "latency": {**latency, "paired": 0}, **defaults}
    assert validate_config(validated)["studies"]["lean"]["evaluation"]["budget"] is None  # validating twice
    validated["evaluation"]["batch_size"] = 7  # a later edit of the top level reaches both studies
    assert [evaluation_settings(validated, s)["batch_size"] for s in ("lean", "skeleton")] == [7, 7]
    lean = next(e for e in experiments(validated, "lean") if e.chain != "base")
    tracked = json.loads(tracked_settings(validated, lean, "evaluate"))["evaluation"]  # what decides reruns
    assert tracked["budget"] is None and tracked["latency"]["paired"] == 0
    # paired_cuda has no default: a study that does not ask for it keeps the settings it was evaluated with
    assert "paired_cuda" not in tracked["latency"]


def test_a_stage_fixed_with_a_new_revision_reruns_its_steps_and_revision_1_changes_nothing(monkeypatch):
    """Written by hand: revision 1 adds no key (the steps of every unfixed stage keep the settings they ran with);
    revision 2 joins the compress step's settings, so Snakemake reruns that step; other steps never carry it."""
    from dataclasses import replace

    from slimbench.stages import STAGES

    config = validate_config(copy.deepcopy(SMOKE))
    pruned = next(e for e in experiments(config, "skeleton") if e.chain == "base+mlp_magnitude-0.5")
    first = json.loads(tracked_settings(config, pruned, "compress"))
    assert "revision" not in first and first["stage"] == "mlp_magnitude"
    monkeypatch.setitem(STAGES._items, "mlp_magnitude", replace(STAGES.get("mlp_magnitude"), revision=2))
    assert json.loads(tracked_settings(config, pruned, "compress")) == {**first, "revision": 2}
    assert "revision" not in tracked_settings(config, pruned, "evaluate")


def test_every_shipped_config_validates():
    for path in sorted((REPO / "config").glob("*.yaml")):
        if path.name == "catalog.yaml":
            continue
        config = load_config(path)
        assert list(experiments(config)), path


def test_every_shipped_overlay_validates_on_default_yaml():
    """An overlay (config/overlays/) changes a few settings of default.yaml and names its own results folder."""
    overlays = sorted((REPO / "config" / "overlays").glob("*.yaml"))
    assert overlays
    for path in overlays:
        config = load_config([REPO / "config" / "default.yaml", path])
        assert config["name"] != "default" and list(experiments(config)), path
    compiled = load_config([REPO / "config" / "default.yaml", REPO / "config" / "overlays" / "compile_check.yaml"])
    stat = compiled["studies"]["stat"]
    assert stat["grid"][0]["base"]["compile"] == "reduce-overhead" and len(stat["chains"]) == 17  # chains kept


def test_experiment_folder_round_trips():
    exp = Experiment("smoke", "skeleton", "mnist_smoke", "vit_micro", 3, "base+mlp_magnitude-0.5+kd")
    assert Experiment.from_directory(exp.directory("results")) == exp
    assert exp.prefix.chain == "base+mlp_magnitude-0.5" and exp.base.chain == "base"


def test_missing_data_fails_fast_and_writes_nothing(tmp_path):
    config = broken(lambda c: c.update(data_root=str(tmp_path / "nowhere"), results_dir=str(tmp_path / "results")))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    folder = tmp_path / "results" / "smoke" / "skeleton" / "mnist_smoke" / "vit_micro" / "seed0" / "base"
    env = {k: v for k, v in os.environ.items() if k != DATA_ROOT_ENV}  # the config's data_root must count
    proc = subprocess.run([sys.executable, "-m", "slimbench.cli", "base", "--config", str(path), str(folder)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert "t10k-images-idx3-ubyte.gz" in proc.stderr and "data_root" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_data_error_names_the_files(tmp_path):
    from slimbench.data import load_dataset

    with pytest.raises(DataNotFoundError, match=r"(?s)glue/rte/train.tsv.*Fix"):
        load_dataset({"loader": "glue", "task": "rte"}, tmp_path, False, tmp_path / "cache")
