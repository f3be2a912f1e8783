"""Datasets defined in the config alone, read by the `datasets` package: no code per dataset.

``text_classification`` reads local csv/tsv/json/jsonl/parquet files (or a hub id when downloads are on) and
``image_folder`` reads an ImageFolder tree (``<split>/<class>/<image>``), unpacked or zipped, or a hub image
dataset. Both go through Arrow tables that `datasets` memory-maps from its cache, and images are decoded per
batch, so an ImageNet-sized folder never has to fit in memory (``in_memory: true`` decodes small sets once).
A hub id is tried only after the local files are missing and ``download`` is on; with ``HF_HUB_OFFLINE=1`` the
`datasets` cache (``<cache>/hf``) that a connected run filled answers instead.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from slimbench.data.base import DatasetInfo, ImageTensorDataset, Splits, TextDataset, find_file, seeded_split
from slimbench.data.registry import DATASETS
from slimbench.errors import ConfigError, DataNotFoundError

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
Labels = Union[Sequence[str], Mapping[str, int], None]


def hub_dataset(hub: str, config: Optional[str], cache: Path) -> Any:
    """A hub dataset (``datasets.load_dataset``): downloaded into ``<cache>/hf``, or read back from there
    offline (``HF_HUB_OFFLINE=1``) once a connected run has fetched it."""
    import datasets

    return datasets.load_dataset(hub, config, cache_dir=str(cache / "hf"))


def local_tables(builder: str, data_files: Mapping[str, str], cache: Path, **options: Any) -> Any:
    """``datasets.load_dataset`` of a packaged builder (csv, json, parquet, imagefolder) over local files, without
    the request it otherwise makes on every call to count the builder's downloads (a HEAD to S3: datasets 5.2,
    load.py ``increase_load_count``): reading local files touches no network. Hub loads keep the setting."""
    import datasets

    counting, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, False
    try:
        return datasets.load_dataset(builder, data_files=dict(data_files), cache_dir=str(cache / "hf"), **options)
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counting


def read_table_files(files: Mapping[str, Path], cache: Path, column_names: Optional[Sequence[str]]) -> Any:
    """Local files of one format as a ``DatasetDict`` of memory-mapped Arrow tables. TSV is read without quote
    handling (GLUE's files contain bare quotes); ``column_names`` names the columns of headerless files."""
    suffixes = {path.suffix for path in files.values()}
    if len(suffixes) != 1 or next(iter(suffixes)) not in FORMATS:
        raise ConfigError(f"text_classification: files {sorted(map(str, files.values()))} must share one of the "
                          f"formats {', '.join(FORMATS)}.")
    suffix = suffixes.pop()
    options: dict[str, Any] = {}
    if FORMATS[suffix] == "csv":
        options = {"delimiter": "\t" if suffix == ".tsv" else ",", "keep_default_na": False}
        if suffix == ".tsv":
            options["quoting"] = 3  # csv.QUOTE_NONE
        if column_names:
            options.update(column_names=list(column_names), header=None)
    return local_tables(FORMATS[suffix], {k: str(v) for k, v in files.items()}, cache, **options)


def label_index(labels: Labels, names: Optional[Sequence[str]]) -> Optional[dict[str, int]]:
    """The config's label mapping as {raw value: class}: a list gives classes in order, a dict is taken as is,
    and without either a hub ClassLabel's names are used (raw integers are then the classes)."""
    if labels is None:
        return None if names is None else {name: i for i, name in enumerate(names)}
    if isinstance(labels, Mapping):
        return {str(k): int(v) for k, v in labels.items()}
    return {str(name): i for i, name in enumerate(labels)}


def to_text_dataset(table: Any, text: Sequence[str], label: str, mapping: Optional[dict[str, int]],
                    where: str) -> TextDataset:
    missing = [c for c in (*text, label) if c not in table.column_names]
    if missing:
        raise ConfigError(f"{where}: column(s) {missing} not found; the columns are {table.column_names}. Fix: set "
                          f"'text' and 'label' (or 'column_names' for files without a header row).")
    raw = table[label]
    try:
        labels = [mapping[str(v)] if mapping and str(v) in mapping else int(v) for v in raw]
    except (TypeError, ValueError):
        unknown = sorted({str(v) for v in raw} - set(mapping or {}))[:5]
        raise ConfigError(f"{where}: label values {unknown} are not integers. Fix: give 'labels' (a list of the "
                          f"label names in class order, or a mapping name: class).") from None
    texts = [str(t) for t in table[text[0]]]
    pairs = [str(t) for t in table[text[1]]] if len(text) > 1 else None
    return TextDataset(texts, labels, pairs)


def resolve_files(root: Path, files: Mapping[str, str], name: str) -> dict[str, Path]:
    how = f"put the files named under 'files' of dataset '{name}' below the data root"
    return {split: find_file(root, [path], name, how) for split, path in files.items()}


@DATASETS.register("text_classification")
def text_classification(root: Path, download: bool, cache: Path, files: Optional[Mapping[str, str]] = None,
                        hub: Optional[str] = None, hub_config: Optional[str] = None,
                        text: Union[str, Sequence[str]] = "sentence", label: str = "label", labels: Labels = None,
                        num_classes: Optional[int] = None, column_names: Optional[Sequence[str]] = None,
                        hub_splits: Optional[Mapping[str, str]] = None, metric: str = "accuracy",
                        name: str = "text_classification", notes: str = "") -> Splits:
    """Sentence (pair) classification from files ``{train: path, eval: path}`` below the data root (csv, tsv,
    json, jsonl or parquet), else the hub dataset ``hub`` (``hub_config``) when downloads are on.

    ``text`` names one column, or two for sentence pairs; ``label`` the label column; ``labels`` maps raw
    label values to classes; ``hub_splits`` names the hub's splits (default ``{train: train, eval: validation}``).
    """
    text = (text,) if isinstance(text, str) else tuple(text)
    if not 1 <= len(text) <= 2:
        raise ConfigError(f"dataset '{name}': 'text' names one column or a sentence pair, not {list(text)}.")
    names = None
    try:
        if not files:
            raise DataNotFoundError(f"dataset '{name}' names no local 'files'. Fix: give 'files: {{train: ..., "
                                    f"eval: ...}}' below the data root, or 'hub' with 'download: true'.")
        if set(files) != {"train", "eval"}:
            raise ConfigError(f"dataset '{name}': 'files' maps train and eval to files, not {sorted(files)}.")
        found = resolve_files(root, files, name)
        tables, chosen = read_table_files(found, cache, column_names), {"train": "train", "eval": "eval"}
        source = f"local files ({found['train'].name}, {found['eval'].name})"
    except DataNotFoundError:
        if not (download and hub):
            raise
        tables, source = hub_dataset(hub, hub_config, cache), f"hub {hub}"
        chosen = dict(hub_splits or {"train": "train", "eval": "validation"})
        feature = tables[chosen["train"]].features.get(label)
        names = getattr(feature, "names", None)
    mapping = label_index(labels, names)
    parts = {k: to_text_dataset(tables[v], text, label, mapping, f"dataset '{name}' ({k})") for k, v in chosen.items()}
    classes = num_classes or (len(set(mapping.values())) if mapping else max(parts["train"].labels) + 1)
    info = DatasetInfo(name, "text_classification", metric, classes, source=source, notes=notes)
    return Splits(parts["train"], parts["eval"], info, {"scheme": "official", **chosen})


# --------------------------------------------------------------------------------------------------------------
# Images: an ImageFolder tree (or zip) or a hub image dataset, decoded per batch from Arrow.
# --------------------------------------------------------------------------------------------------------------


def decode(item: Any, size: int, mode: str) -> np.ndarray:
    """One encoded image (`datasets`' undecoded ``{bytes, path}``, or a PIL image) -> uint8 (H, W, C)."""
    if isinstance(item, dict):
        item = Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])
    image = item.convert(mode)
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


@dataclass
class ArrowImageDataset:
    """Images of a memory-mapped Arrow table, decoded and resized when a batch is collated (thread pool)."""

    table: Any
    size: int
    mode: str
    image: str = "image"
    label: str = "label"

    def __len__(self) -> int:
        return len(self.table)

    def subset(self, indices: Sequence[int]) -> "ArrowImageDataset":
        return ArrowImageDataset(self.table.select(list(indices)), self.size, self.mode, self.image, self.label)

    def collate(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.table[list(indices)]
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            arrays = list(pool.map(lambda item: decode(item, self.size, self.mode), rows[self.image]))
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(rows[self.label], dtype=torch.long)


def unpacked(archive: Path, cache: Path) -> Path:
    """A zip unpacked once into the cache (keyed by its name, size and time), so `datasets` sees a folder."""
    stat = archive.stat()
    target = cache / "unpacked" / f"{archive.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not target.exists():
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp)
    return target


def image_tables(folder: Path, splits: Mapping[str, str], cache: Path) -> Any:
    """``datasets``' imagefolder over ``folder/<split>/<class>/*``: labels from the class folders (shared by all
    splits), images kept as file paths in the Arrow table."""
    data_files = {}
    for key, split in splits.items():
        if not (folder / split).is_dir():
            raise DataNotFoundError(f"image folder '{folder}' has no '{split}/' folder (split '{key}'). Fix: use the "
                                    f"ImageFolder layout <split>/<class>/<image>, or set 'splits'.")
        data_files[key] = str(folder / split / "**")
    return local_tables("imagefolder", data_files, cache)


@DATASETS.register("image_folder")
def image_folder(root: Path, download: bool, cache: Path, path: Optional[str] = None, hub: Optional[str] = None,
                 hub_config: Optional[str] = None, splits: Optional[Mapping[str, str]] = None,
                 hub_splits: Optional[Mapping[str, str]] = None,
                 image_size: int = 224, in_chans: int = 3, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), split: str = "official",
                 eval_fraction: float = 0.1, split_seed: int = 0, image_column: str = "image",
                 label_column: str = "label", in_memory: bool = False, name: str = "image_folder",
                 notes: str = "") -> Splits:
    """Image classification from ``path`` (a folder or a .zip below the data root in ImageFolder layout
    ``<split>/<class>/<image>``), else the hub dataset ``hub`` when downloads are on.

    ``splits`` maps train/eval to the folder names (default train, val), ``hub_splits`` to the hub's split names
    (default train, validation).
    Images are resized to ``image_size`` and normalised with ``mean``/``std``; ``split: train-split`` holds out
    a seeded ``eval_fraction`` of train as eval and needs only the train split.
    """
    if in_chans not in (1, 3) or len(mean) != in_chans or len(std) != in_chans:
        raise ConfigError(f"dataset '{name}': in_chans must be 1 or 3 with as many mean/std values, got {in_chans}, "
                          f"{list(mean)}, {list(std)}.")
    if split not in ("official", "train-split"):
        raise ConfigError(f"dataset '{name}': split must be official or train-split, not '{split}'.")
    keys = ("train",) if split == "train-split" else ("train", "eval")
    try:
        if not path:
            raise DataNotFoundError(f"dataset '{name}' names no local 'path'. Fix: give 'path' (a folder or zip "
                                    f"below the data root), or 'hub' with 'download: true'.")
        how = f"put the ImageFolder tree <split>/<class>/<image> of dataset '{name}' at <data_root>/{path}"
        found = find_file(root, [path], name, how)
        folder = unpacked(found, cache) if found.suffix == ".zip" else found
        folders = {"train": "train", "eval": "val", **(splits or {})}
        tables = image_tables(folder, {k: folders[k] for k in keys}, cache)
        source, chosen = f"local ImageFolder ({found.name})", {k: k for k in keys}
    except DataNotFoundError:
        if not (download and hub):
            raise
        tables, source = hub_dataset(hub, hub_config, cache), f"hub {hub}"
        named = {"train": "train", "eval": "validation", **(hub_splits or {})}
        chosen = {k: named[k] for k in keys}
    import datasets

    mode = "RGB" if in_chans == 3 else "L"
    parts = {}
    for key, split_name in chosen.items():
        table = tables[split_name].cast_column(image_column, datasets.Image(decode=False))
        parts[key] = ArrowImageDataset(table, image_size, mode, image_column, label_column)
    feature = tables[chosen["train"]].features.get(label_column)
    classes = len(feature.names) if hasattr(feature, "names") else int(max(parts["train"].table[label_column])) + 1
    info = DatasetInfo(name, "image_classification", "accuracy", classes, in_chans, image_size, tuple(mean),
                       tuple(std), source=source, notes=notes, extra={"classes": list(
                           getattr(feature, "names", []))})
    if in_memory:
        parts = {k: into_memory(v) for k, v in parts.items()}
    if split == "train-split":
        train_idx, eval_idx = seeded_split(len(parts["train"]), eval_fraction, split_seed)
        return Splits(parts["train"].subset(train_idx), parts["train"].subset(eval_idx), info,
                      {"scheme": split, "eval_fraction": eval_fraction, "split_seed": split_seed,
                       "note": f"train split divided into train/eval with seed {split_seed}"})
    return Splits(parts["train"], parts["eval"], info, {"scheme": "official", **chosen})


def into_memory(dataset: ArrowImageDataset) -> ImageTensorDataset:
    """Every image decoded once into memory: fast batches (and GPU residency) for sets that fit."""
    images, labels = dataset.collate(range(len(dataset)))
    return ImageTensorDataset(images, labels)
