"""Datasets: a registry of loaders plus one entry point that applies the config's subset options."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from slimbench.data import camvid, files, glue, images, text  # noqa: F401  (register the loaders)
from slimbench.data.base import (ArrayDataset, DatasetInfo, ImageTensorDataset, Splits, TextCorpus,  # noqa: F401
                                 TextDataset, TokenBlockDataset, batches, seeded_split, seeded_subset)
from slimbench.data.registry import DATASETS
from slimbench.errors import ConfigError

DATA_ROOT_ENV = "SLIMBENCH_DATA_ROOT"
AUGMENTED_TASKS = ("image_classification", "semantic_segmentation")  # the tasks that read DatasetInfo.augment
SPEC_KEYS = ("loader", "train_size", "eval_size", "subset_seed", "holdout_fraction", "augment")  # not the loader's


def data_root(configured: Optional[str]) -> Path:
    """$SLIMBENCH_DATA_ROOT wins over the config's ``data_root`` (relative paths: from the working dir)."""
    return Path(os.environ.get(DATA_ROOT_ENV) or configured or "data").expanduser()


def check_augment(dataset: str, task: str) -> None:
    """Refuse ``augment`` on a dataset whose task has no augmentation (the config check calls this before any job)."""
    if task not in AUGMENTED_TASKS:
        raise ConfigError(f"dataset '{dataset}' sets augment, but its task '{task}' has no augmentation (only "
                          f"{', '.join(AUGMENTED_TASKS)}). Fix: remove augment.")


def load_dataset(spec: dict[str, Any], root: Path, download: bool, cache: Path) -> Splits:
    """Build a dataset from its catalog entry: ``{loader, train_size?, eval_size?, subset_seed?, holdout_fraction?,
    augment?, **options}``. ``holdout_fraction`` sets a seeded share of the training examples apart
    (``Splits.holdout``): no training sees it, so a stage can choose a setting on it (e.g. an early-exit threshold)
    without touching the evaluation set. ``augment`` turns the loader's training augmentation on or off (images
    only: random crop and flip, or the segmentation's scale, crop and flip)."""
    options = dict(spec)
    loader = DATASETS.get(options.pop("loader"))
    train_size, eval_size = options.pop("train_size", None), options.pop("eval_size", None)
    subset_seed, holdout_fraction = options.pop("subset_seed", 0), options.pop("holdout_fraction", None)
    augment = options.pop("augment", None)
    splits = loader(root, download, cache, **options)
    if augment is not None:
        check_augment(splits.info.name, splits.info.task)
        splits = replace(splits, info=replace(splits.info, augment=augment))
    if isinstance(splits.train, TextCorpus):
        if holdout_fraction:
            raise ConfigError(f"dataset '{splits.info.name}': holdout_fraction is for example datasets, not a "
                              f"token corpus. Fix: remove it.")
        return splits
    train = seeded_subset(splits.train, train_size, subset_seed)
    evaluation = seeded_subset(splits.eval, eval_size, subset_seed + 1)
    if not len(train) or not len(evaluation):
        raise ConfigError(f"dataset '{splits.info.name}' has {len(train)} training and {len(evaluation)} evaluation "
                          f"examples; both need at least one. Fix: check its files and split options.")
    holdout = None
    if holdout_fraction:
        kept, held = seeded_split(len(train), holdout_fraction, subset_seed + 2)
        train, holdout = train.subset(kept), train.subset(held)
    split = {**splits.split, "train_examples": len(train), "eval_examples": len(evaluation)}
    if holdout is not None:
        split["holdout"] = {"examples": len(holdout), "fraction": holdout_fraction, "seed": subset_seed + 2}
    if train_size or eval_size:
        split["subset"] = {"train_size": train_size, "eval_size": eval_size, "subset_seed": subset_seed}
    return Splits(train, evaluation, splits.info, split, holdout)
