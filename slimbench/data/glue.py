"""GLUE tasks from local TSV files (<data_root>/glue/<task>/{train,dev}.tsv) or the hub's nyu-mll/glue.

Local files come in the layouts of ../shared/data/README.md: SST-2 with a header and the label first, CoLA
without a header (sentence, label), RTE/MRPC/QNLI with a header naming the columns.
"""

from __future__ import annotations

import csv
from pathlib import Path

from slimbench.data.base import DatasetInfo, Splits, TextDataset, find_file
from slimbench.data.registry import DATASETS
from slimbench.errors import ConfigError, DataNotFoundError

# task -> (metric, number of labels, sentence columns, label column) as in the GLUE paper (Wang et al., 2019).
GLUE_TASKS = {
    "sst2": ("accuracy", 2, ("sentence",), "label"),
    "cola": ("mcc", 2, ("sentence",), "label"),
    "rte": ("accuracy", 2, ("sentence1", "sentence2"), "label"),
    "mrpc": ("f1", 2, ("sentence1", "sentence2"), "label"),
    "qnli": ("accuracy", 2, ("question", "sentence"), "label"),
    "qqp": ("f1", 2, ("question1", "question2"), "label"),
    "mnli": ("accuracy", 3, ("premise", "hypothesis"), "label"),
}
RTE_LABELS = {"entailment": 0, "not_entailment": 1}
MNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def read_tsv(path: Path, task: str, columns: tuple[str, ...]) -> TextDataset:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task == "cola" and rows and len(rows[0]) == 2:  # headerless: sentence, label
        header, body = ["sentence", "label"], rows
    elif task == "cola":  # GLUE's original 4-column layout without header: source, label, mark, sentence
        header, body = ["source", "label", "mark", "sentence"], rows
    else:
        header, body = rows[0], rows[1:]
        if task == "sst2" and "content" in header:  # the dev file's name for the sentence column
            header = ["sentence" if h == "content" else h for h in header]
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in (*columns, "label") if c not in col]
    if missing:
        raise ConfigError(f"GLUE {task}: {path} lacks column(s) {missing}; its header is {header}.")
    labels_map = RTE_LABELS if task == "rte" else MNLI_LABELS if task == "mnli" else {}
    texts, pairs, labels = [], [], []
    for row in body:
        if len(row) < len(header):
            continue
        raw = row[col["label"]]
        labels.append(labels_map[raw] if raw in labels_map else int(raw))
        texts.append(row[col[columns[0]]])
        if len(columns) > 1:
            pairs.append(row[col[columns[1]]])
    return TextDataset(texts, labels, pairs or None)


@DATASETS.register("glue")
def glue(root: Path, download: bool, cache: Path, task: str = "sst2") -> Splits:
    """A GLUE task; evaluation on the dev split (GLUE's test labels are hidden)."""
    if task not in GLUE_TASKS:
        raise ConfigError(f"unknown GLUE task '{task}'. Known: {', '.join(GLUE_TASKS)}.")
    metric, num_labels, columns, _ = GLUE_TASKS[task]
    how = f"put train.tsv and dev.tsv of GLUE {task.upper()} in <data_root>/glue/{task}/"
    try:
        files = {s: find_file(root, [f"glue/{task}/{s}.tsv"], f"glue/{task}", how) for s in ("train", "dev")}
        train, dev = (read_tsv(files[s], task, columns) for s in ("train", "dev"))
        source = "local TSV"
    except DataNotFoundError:
        if not download:
            raise
        import datasets

        hub = datasets.load_dataset("nyu-mll/glue", task, cache_dir=str(cache / "hf"))
        split = lambda s: TextDataset(list(hub[s][columns[0]]), list(hub[s]["label"]),  # noqa: E731
                                      list(hub[s][columns[1]]) if len(columns) > 1 else None)
        train, dev, source = split("train"), split("validation_matched" if task == "mnli" else "validation"), "hub"
    notes = ""
    if task == "cola" and len(dev) < 1043:
        notes = f"partial CoLA dev split ({len(dev)} of 1,043 rows)"
    info = DatasetInfo(f"glue/{task}", "text_classification", metric, num_labels, source=source, notes=notes)
    return Splits(train, dev, info, {"scheme": "official", "train": "train", "eval": "dev"})
