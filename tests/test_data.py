"""Loaders read the real offline files; splits are fixed by seed."""

import torch

from slimbench.data import load_dataset

from conftest import needs_shared_data


def test_mnist_test_split_is_seeded_and_disjoint(tmp_path):
    root = needs_shared_data("mnist")
    spec = {"loader": "mnist", "split": "test-split", "eval_fraction": 0.2, "split_seed": 0}
    a = load_dataset(spec, root, False, tmp_path)
    b = load_dataset(spec, root, False, tmp_path)
    assert (len(a.train), len(a.eval)) == (8000, 2000)
    assert torch.equal(a.train.images, b.train.images)
    assert a.train.images.shape[1:] == (1, 28, 28) and a.info.num_classes == 10
    assert a.split["scheme"] == "test-split"
    other = load_dataset({**spec, "split_seed": 1}, root, False, tmp_path)
    assert not torch.equal(other.eval.labels, a.eval.labels)


def test_glue_files_parse_with_their_layouts(tmp_path):
    root = needs_shared_data("glue")
    sst2 = load_dataset({"loader": "glue", "task": "sst2"}, root, False, tmp_path)
    assert (len(sst2.train), len(sst2.eval)) == (67349, 872) and set(sst2.train.labels) == {0, 1}
    cola = load_dataset({"loader": "glue", "task": "cola"}, root, False, tmp_path)
    assert cola.info.metric == "mcc" and len(cola.eval) == 516 and "partial" in cola.info.notes
    rte = load_dataset({"loader": "glue", "task": "rte", "train_size": 100}, root, False, tmp_path)
    assert len(rte.train) == 100 and rte.train.pairs is not None and len(rte.eval) == 277


def test_wikitext_reads_valid_and_test(tmp_path):
    root = needs_shared_data("wikitext2")
    splits = load_dataset({"loader": "wikitext2", "train_split": "valid", "eval_split": "test"}, root, False, tmp_path)
    assert "Homarus gammarus" in splits.train.text and len(splits.eval.text) > 1_000_000
