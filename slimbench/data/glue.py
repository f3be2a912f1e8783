"""GLUE tasks through the generic file loader: local TSV files (<data_root>/glue/<task>/{train,dev}.tsv) or the
hub's nyu-mll/glue, both read by `datasets` (:mod:`slimbench.data.files`).

Local files come in the layouts of ../shared/data/README.md: SST-2 with a header and the label first (its dev
file names the sentence column ``content``), CoLA without a header (sentence, label; or GLUE's original four
columns source, label, mark, sentence), RTE/MRPC/QNLI/QQP/MNLI with a header naming the columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from slimbench.data.base import DatasetInfo, Splits, TextDataset, find_file
from slimbench.data.files import hub_dataset, read_table_files, to_text_dataset
from slimbench.data.registry import DATASETS
from slimbench.errors import ConfigError, DataNotFoundError

HUB = "nyu-mll/glue"
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
# Local files spell some labels out; the hub's ClassLabels use the same order.
LABEL_NAMES = {"rte": {"entailment": 0, "not_entailment": 1},
               "qnli": {"entailment": 0, "not_entailment": 1},
               "mnli": {"entailment": 0, "neutral": 1, "contradiction": 2}}
COLA_HEADERLESS = {2: ("sentence", "label"), 4: ("source", "label", "mark", "sentence")}


def headerless_columns(path: Path, task: str) -> Optional[tuple[str, ...]]:
    """CoLA's files have no header row: their column names, told apart by the number of fields."""
    if task != "cola":
        return None
    with open(path, encoding="utf-8") as handle:
        fields = len(handle.readline().rstrip("\n").split("\t"))
    if fields not in COLA_HEADERLESS:
        raise ConfigError(f"GLUE cola: {path} has {fields} tab-separated fields; expected 2 (sentence, label) or 4 "
                          f"(source, label, mark, sentence).")
    return COLA_HEADERLESS[fields]


def read_local(path: Path, task: str, cache: Path) -> TextDataset:
    """One local split; rows without a label (short rows in some copies) are dropped, as GLUE's scripts do."""
    _, _, columns, label = GLUE_TASKS[task]
    table = read_table_files({"split": path}, cache, headerless_columns(path, task))["split"]
    if task == "sst2" and "content" in table.column_names:
        table = table.rename_column("content", "sentence")
    table = table.filter(lambda row: row[label] not in (None, ""))
    return to_text_dataset(table, columns, label, LABEL_NAMES.get(task), f"GLUE {task} ({path})")


@DATASETS.register("glue")
def glue(root: Path, download: bool, cache: Path, task: str = "sst2") -> Splits:
    """A GLUE task; evaluation on the dev split (GLUE's test labels are hidden)."""
    if task not in GLUE_TASKS:
        raise ConfigError(f"unknown GLUE task '{task}'. Known: {', '.join(GLUE_TASKS)}.")
    metric, num_labels, columns, label = GLUE_TASKS[task]
    how = f"put train.tsv and dev.tsv of GLUE {task.upper()} in <data_root>/glue/{task}/"
    try:
        files = {s: find_file(root, [f"glue/{task}/{s}.tsv"], f"glue/{task}", how) for s in ("train", "dev")}
        train, dev = (read_local(files[s], task, cache) for s in ("train", "dev"))
        source = "local TSV"
    except DataNotFoundError:
        if not download:
            raise
        hub = hub_dataset(HUB, task, cache)
        dev_split = "validation_matched" if task == "mnli" else "validation"
        train, dev = (to_text_dataset(hub[s], columns, label, None, f"GLUE {task} (hub {s})") for s in ("train", dev_split))
        source = f"hub {HUB}"
    notes = ""
    if task == "cola" and len(dev) < 1043:
        notes = f"partial CoLA dev split ({len(dev)} of 1,043 rows)"
    info = DatasetInfo(f"glue/{task}", "text_classification", metric, num_labels, source=source, notes=notes)
    return Splits(train, dev, info, {"scheme": "official", "train": "train", "eval": "dev"})
