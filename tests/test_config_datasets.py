"""A new dataset needs only the config: a TSV sentence-classification set and an image folder, each written
to tmp_path, named in a config file and run through `slimbench run` (base and one compression stage)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from slimbench import cli
from slimbench.data import load_dataset
from slimbench.errors import ConfigError

WORDS = {0: ["dull", "bad", "awful", "boring"], 1: ["great", "fine", "superb", "lovely"]}
TINY_BERT = {"family": "hf_classifier", "tokenizer": "minilm", "config": {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "max_position_embeddings": 32, "num_labels": 2}}
TINY_VIT = {"family": "timm", "arch": "vit_tiny_patch16_224", "patch_size": 4, "embed_dim": 16, "depth": 1,
            "num_heads": 2}


def write_tsv(path: Path, n: int) -> list[tuple[str, str]]:
    """Headerless 'label<TAB>sentence' rows with the labels spelled out (a mapping in the config turns them
    into classes); sentences open with a bare double quote, as some of SST-2's do, which a quoting CSV reader
    would take as the start of a field running over the following lines."""
    rows = [("positive" if i % 2 else "negative", f"\" a {WORDS[i % 2][i % 4]} film , {i}") for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return rows


def write_image_folder(zip_path: Path) -> None:
    """ImageFolder layout in a zip: {train,val}/<class>/<i>.png, dark 'night' and bright 'day' 12x12 images."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(zip_path, "w") as archive:
        for split, count in (("train", 12), ("val", 4)):
            for cls, level in (("day", 200), ("night", 40)):
                for i in range(count):
                    pixels = np.clip(level + rng.integers(-20, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
                    blob = Path(zip_path.parent / "tmp.png")
                    Image.fromarray(pixels).save(blob)
                    archive.write(blob, f"{split}/{cls}/{i}.png")


def config_file(tmp_path: Path) -> Path:
    config = {
        "name": "adopted", "data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
        "results_dir": str(tmp_path / "results"), "reports_dir": str(tmp_path / "reports"),
        "download": False, "device": "cpu", "progress": False,
        "evaluation": {"batch_size": 8, "latency": {"warmup": 0, "repeats": 1}},
        "datasets": {
            "reviews": {"loader": "text_classification", "files": {"train": "reviews/train.tsv", "eval": "reviews/dev.tsv"},
                        "column_names": ["label", "sentence"], "text": "sentence", "label": "label",
                        "labels": ["negative", "positive"], "metric": "f1"},
            "daynight": {"loader": "image_folder", "path": "daynight.zip", "image_size": 8, "in_chans": 3,
                         "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        },
        "models": {"bert_2": TINY_BERT, "vit_8": TINY_VIT},
        "studies": {"adopt": {
            "grid": [{"datasets": ["reviews"], "models": ["bert_2"]}, {"datasets": ["daynight"], "models": ["vit_8"]}],
            "base": {"epochs": 1, "batch_size": 8, "lr": 0.001},
            "chains": ["base", "base+mlp_magnitude-0.5"], "task": {"max_length": 16}, "figures": []}},
    }
    path = tmp_path / "adopted.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(autouse=True)
def own_data_root(monkeypatch) -> None:
    """These configs bring their data in tmp_path: $SLIMBENCH_DATA_ROOT (set by CI) would win over it."""
    monkeypatch.delenv("SLIMBENCH_DATA_ROOT", raising=False)


@pytest.fixture
def adopted(tmp_path: Path) -> Path:
    write_tsv(tmp_path / "data" / "reviews" / "train.tsv", 24)
    write_tsv(tmp_path / "data" / "reviews" / "dev.tsv", 8)
    write_image_folder(tmp_path / "data" / "daynight.zip")
    return config_file(tmp_path)


def test_tsv_and_image_folder_datasets_from_the_config_run_base_and_a_stage(adopted: Path, tmp_path: Path) -> None:
    for dataset, model in (("reviews", "bert_2"), ("daynight", "vit_8")):
        experiment = tmp_path / "results" / "adopted" / "adopt" / dataset / model / "seed0" / "base+mlp_magnitude-0.5"
        assert cli.main(["run", "--config", str(adopted), str(experiment)]) == 0
        base = json.loads((experiment.parent / "base" / "metrics.json").read_text())
        pruned = json.loads((experiment / "metrics.json").read_text())
        assert pruned["cost"]["params"] < base["cost"]["params"]  # the stage really removed MLP neurons
        assert pruned["split"]["eval_examples"] == 8 and pruned["split"]["train_examples"] == 24
    assert base["metric"] == "accuracy" and base["dataset_info"]["num_classes"] == 2  # daynight, last
    assert base["dataset_info"]["extra"]["classes"] == ["day", "night"]
    assert pruned["dataset_info"]["source"] == "local ImageFolder (daynight.zip)"
    reviews = json.loads((experiment.parents[3] / "reviews" / "bert_2" / "seed0" / "base" / "metrics.json").read_text())
    assert reviews["metric"] == "f1" and "f1" in reviews["metrics"]


def test_file_loaders_keep_the_rows_labels_and_pixels(adopted: Path, tmp_path: Path) -> None:
    datasets = yaml.safe_load(adopted.read_text())["datasets"]
    root, cache = tmp_path / "data", tmp_path / "cache"
    text = load_dataset(datasets["reviews"], root, False, cache)
    rows = write_tsv(tmp_path / "expected.tsv", 24)  # the same rows, kept here as written
    assert text.train.texts == [sentence for _, sentence in rows] and text.train.texts[1].startswith('"')
    assert text.train.labels == [1 if label == "positive" else 0 for label, _ in rows]
    images = load_dataset({**datasets["daynight"], "in_memory": True}, root, False, cache)
    assert images.train.images.shape == (24, 3, 8, 8) and len(images.eval) == 8
    brightness = images.train.images.float().mean(dim=(1, 2, 3))
    assert (brightness[images.train.labels == 0] > 150).all() and (brightness[images.train.labels == 1] < 90).all()
    streamed = load_dataset(datasets["daynight"], root, False, cache)  # decoded per batch, from Arrow
    x, y = streamed.eval.collate([0, 5])
    assert x.shape == (2, 3, 8, 8) and x.dtype == images.eval.images.dtype and y.tolist() == [0, 1]
    split = load_dataset({**datasets["daynight"], "split": "train-split", "eval_fraction": 0.25}, root, False, cache)
    assert (len(split.train), len(split.eval)) == (18, 6)


def test_unknown_label_values_name_the_fix(adopted: Path, tmp_path: Path) -> None:
    spec = {**yaml.safe_load(adopted.read_text())["datasets"]["reviews"], "labels": None}
    with pytest.raises(ConfigError, match="labels"):
        load_dataset(spec, tmp_path / "data", False, tmp_path / "cache")


def test_local_files_are_read_without_a_network_request(adopted: Path, tmp_path: Path, monkeypatch) -> None:
    """`datasets` sends a HEAD to S3 on each packaged-builder load to count downloads (and swallows any error of
    it); a local read must not: every lookup is recorded and refused, with counting on before each load."""
    import socket

    import datasets as hf_datasets

    lookups = []

    def refuse(host, *args, **kwargs):
        lookups.append(host)
        raise OSError(f"no network in this test ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    specs = yaml.safe_load(adopted.read_text())["datasets"]
    for name in ("reviews", "daynight"):
        monkeypatch.setattr(hf_datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
        assert len(load_dataset(specs[name], tmp_path / "data", False, tmp_path / "cache").train) == 24
        assert lookups == [] and hf_datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, name  # and the setting restored
