"""Text corpora for perplexity: WikiText-2 (word level, with <unk>) from local files or the hub."""

from __future__ import annotations

from pathlib import Path

from slimbench.data.base import DatasetInfo, Splits, TextCorpus, find_file
from slimbench.data.registry import DATASETS
from slimbench.errors import ConfigError, DataNotFoundError


@DATASETS.register("wikitext2")
def wikitext2(root: Path, download: bool, cache: Path, train_split: str = "train", eval_split: str = "test") -> Splits:
    """WikiText-2 (Merity et al., 2016). When the train file is missing offline, set ``train_split: valid``."""
    for split in (train_split, eval_split):
        if split not in ("train", "valid", "test"):
            raise ConfigError(f"wikitext2: split '{split}' must be one of train, valid, test.")
    how = "put WikiText-2's train.txt / valid.txt / test.txt (word level) in <data_root>/wikitext2/"
    try:
        read = lambda s: find_file(root, [f"wikitext2/{s}.txt", f"wikitext2/wiki.{s}.tokens"],  # noqa: E731
                                   "wikitext2", how).read_text(encoding="utf-8")
        train, test, source = read(train_split), read(eval_split), "local text files"
    except DataNotFoundError:
        if not download:
            raise
        import datasets

        hub = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-v1", cache_dir=str(cache / "hf"))
        name = {"train": "train", "valid": "validation", "test": "test"}
        read = lambda s: "".join(hub[name[s]]["text"])  # noqa: E731
        train, test, source = read(train_split), read(eval_split), "hub Salesforce/wikitext"
    info = DatasetInfo("wikitext2", "language_modeling", "perplexity", source=source,
                       notes=f"trained/calibrated on '{train_split}', evaluated on '{eval_split}'")
    return Splits(TextCorpus(train), TextCorpus(test), info, {"train": train_split, "eval": eval_split})
