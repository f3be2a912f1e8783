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


def test_holdout_is_a_seeded_share_of_train_that_training_never_sees(tmp_path):
    root = needs_shared_data("mnist")
    spec = {"loader": "mnist", "split": "test-split", "eval_fraction": 0.2, "split_seed": 0}
    whole = load_dataset(spec, root, False, tmp_path)
    held = load_dataset({**spec, "holdout_fraction": 0.1}, root, False, tmp_path)
    assert (len(held.train), len(held.holdout), len(held.eval)) == (7200, 800, 2000)  # 10% of the 8,000
    assert torch.equal(held.eval.images, whole.eval.images) and whole.holdout is None
    rows = {tuple(x.flatten().tolist()) for x in whole.train.images}  # every training image, by content
    kept = {tuple(x.flatten().tolist()) for x in held.train.images}
    apart = {tuple(x.flatten().tolist()) for x in held.holdout.images}
    assert not kept & apart and (kept | apart) <= rows
    assert held.split["holdout"] == {"examples": 800, "fraction": 0.1, "seed": 2}


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


def test_tiny_imagenet_train_split_needs_only_the_train_zip(tmp_path):
    import zipfile

    from torchvision.io import encode_jpeg

    folder = tmp_path / "tiny-imagenet"
    folder.mkdir()
    wnids = ["n03", "n01", "n02"]  # the zip's order; classes are numbered in sorted order
    with zipfile.ZipFile(folder / "tiny-imagenet-200-train100.zip", "w") as archive:
        for k, wnid in enumerate(wnids):
            for i in range(10):
                image = torch.full((3, 64, 64), 40 * k + i, dtype=torch.uint8)
                name = f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{i}.JPEG"
                archive.writestr(name, encode_jpeg(image).numpy().tobytes())
    spec = {"loader": "tiny_imagenet", "split": "train-split", "eval_fraction": 0.2, "split_seed": 0}
    splits = load_dataset(spec, tmp_path, False, tmp_path / "cache")
    assert (len(splits.train), len(splits.eval)) == (24, 6) and splits.info.num_classes == 3
    assert splits.split["scheme"] == "train-split"
    labels = torch.cat([splits.train.labels, splits.eval.labels]).sort().values
    assert labels.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    # class 0 is the first wnid in sorted order (n01), whose images are the mid-grey ones (k = 1)
    grey = [float(x.float().mean()) for x, y in zip(splits.train.images, splits.train.labels) if int(y) == 0]
    assert all(35 <= g <= 55 for g in grey)
    assert splits.info.augment  # Tiny-ImageNet trains with crops and flips unless its spec says otherwise
    assert not load_dataset({**spec, "augment": False}, tmp_path, False, tmp_path / "cache").info.augment


def test_augment_in_the_dataset_spec_turns_the_training_augmentation_on_or_off(tmp_path):
    """MNIST trains unaugmented by default; ``augment: true`` gives its training batches random crops and flips
    (evaluation batches stay the plain normalised images), and a text dataset refuses the option. ``augment: false``
    on a loader that augments: the Tiny-ImageNet test above."""
    import pytest

    from slimbench.errors import ConfigError
    from slimbench.tasks import TASKS

    root = needs_shared_data("mnist")
    spec = {"loader": "mnist", "split": "test-split", "eval_fraction": 0.2, "split_seed": 0}
    plain, augmented = (load_dataset({**spec, **extra}, root, False, tmp_path) for extra in ({}, {"augment": True}))
    assert not plain.info.augment and augmented.info.augment
    assert torch.equal(plain.train.images, augmented.train.images)  # the same examples; only training differs
    batch = (augmented.train.images[:64], augmented.train.labels[:64])
    normalised = (batch[0].float() / 255 - plain.info.mean[0]) / plain.info.std[0]
    for splits, moved in ((plain, False), (augmented, True)):
        task = TASKS.get(splits.info.task)(splits.info)
        torch.manual_seed(0)
        train_x, _ = task.to_device(batch, torch.device("cpu"), train=True)
        eval_x, _ = task.to_device(batch, torch.device("cpu"), train=False)
        assert torch.allclose(eval_x, normalised, atol=1e-6)
        assert torch.allclose(train_x, normalised, atol=1e-6) != moved
    text = needs_shared_data("wikitext2")
    with pytest.raises(ConfigError, match="task 'language_modeling' has no augmentation.*Fix: remove augment"):
        load_dataset({"loader": "wikitext2", "train_split": "valid", "eval_split": "test", "augment": True}, text,
                     False, tmp_path)
