"""In-memory dataset containers and the helpers every dataset loader shares.

Datasets here are small enough to sit in memory (MNIST, CIFAR-10, Tiny-ImageNet, GLUE, WikiText-2), so a
batch is a slice of tensors rather than a DataLoader with workers: faster on 2 CPU cores and trivially
deterministic. Each container can take a subset by index and collate a batch of indices.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence

import torch

from slimbench.errors import ConfigError, DataNotFoundError


@dataclass(frozen=True)
class DatasetInfo:
    """What models and tasks need to know about a dataset, and what reports must say about it."""

    name: str
    task: str
    metric: str
    num_classes: int = 0
    in_chans: int = 0
    image_size: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    augment: bool = False
    source: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class ArrayDataset(Protocol):
    def __len__(self) -> int: ...

    def subset(self, indices: Sequence[int]) -> "ArrayDataset": ...

    def collate(self, indices: Sequence[int]) -> Any: ...


@dataclass
class ImageTensorDataset:
    """Images as uint8 (N, C, H, W) and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> "ImageTensorDataset":
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return ImageTensorDataset(self.images[index], self.labels[index])

    def collate(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(list(indices), dtype=torch.long, device=self.labels.device)
        return self.images[index], self.labels[index]

    def to(self, device: torch.device) -> "ImageTensorDataset":
        return ImageTensorDataset(self.images.to(device), self.labels.to(device))


@dataclass
class TextDataset:
    """Sentences (or sentence pairs) with integer labels, tokenized later by the model's tokenizer."""

    texts: list[str]
    labels: list[int]
    pairs: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> "TextDataset":
        pick = lambda xs: [xs[i] for i in indices]  # noqa: E731
        return TextDataset(pick(self.texts), pick(self.labels), pick(self.pairs) if self.pairs else None)

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        return {
            "texts": [self.texts[i] for i in indices],
            "pairs": [self.pairs[i] for i in indices] if self.pairs else None,
            "labels": torch.tensor([self.labels[i] for i in indices], dtype=torch.long),
        }


@dataclass
class TextCorpus:
    """Raw text for language modelling; the task tokenizes it into fixed-length blocks."""

    text: str

    def __len__(self) -> int:
        return len(self.text)


@dataclass
class TokenBlockDataset:
    """Token ids cut into (N, block) rows for causal language modelling."""

    blocks: torch.Tensor

    def __len__(self) -> int:
        return len(self.blocks)

    def subset(self, indices: Sequence[int]) -> "TokenBlockDataset":
        return TokenBlockDataset(self.blocks[torch.as_tensor(list(indices), dtype=torch.long)])

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[torch.as_tensor(list(indices), dtype=torch.long, device=self.blocks.device)]}

    def to(self, device: torch.device) -> "TokenBlockDataset":
        return TokenBlockDataset(self.blocks.to(device))


@dataclass
class Splits:
    train: Any
    eval: Any
    info: DatasetInfo
    split: dict = field(default_factory=dict)
    holdout: Any = None  # a share of train that no training sees (``holdout_fraction``), for choices made on data


def batches(dataset: ArrayDataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Any]:
    """Collated batches; with ``shuffle`` the order is a permutation drawn from ``seed``."""
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield dataset.collate(order[start : start + batch_size].tolist())


def seeded_split(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed train/eval split of ``range(n)``: the same seed always gives the same split."""
    n_eval = int(round(n * eval_fraction))
    if not 0 < n_eval < n:
        raise ConfigError(f"eval_fraction={eval_fraction} of {n} examples leaves {n - n_eval} for training and "
                          f"{n_eval} for evaluation; both need at least one. Fix: choose eval_fraction in (0, 1).")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def seeded_subset(dataset: ArrayDataset, size: Optional[int], seed: int) -> ArrayDataset:
    """At most ``size`` examples drawn without replacement with ``seed`` (all when size is None)."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    return dataset.subset(sorted(order.tolist()))


_recorders: list[list[tuple[Path, tuple[str, ...], Path]]] = []


@contextmanager
def files_found() -> Iterator[list[tuple[Path, tuple[str, ...], Path]]]:
    """Every file or folder :func:`find_file` returns meanwhile in this process, as (root, candidates, found):
    what a loader read, for scripts/gpu_carry.py (single-threaded use)."""
    found: list[tuple[Path, tuple[str, ...], Path]] = []
    _recorders.append(found)
    try:
        yield found
    finally:
        _recorders.remove(found)


def find_file(root: Path, candidates: Sequence[str], dataset: str, how_to_get: str) -> Path:
    """The first existing candidate below root (or absolute), else one error naming all of them."""
    for candidate in candidates:
        path = Path(candidate) if os.path.isabs(candidate) else root / candidate
        if path.exists():
            for found in _recorders:
                found.append((root, tuple(candidates), path))
            return path
    expected = "\n  ".join(str(Path(c) if os.path.isabs(c) else root / c) for c in candidates)
    raise DataNotFoundError(
        f"dataset '{dataset}': none of these files exist:\n  {expected}\n"
        f"Fix: {how_to_get}, or point 'data_root' in the config (or $SLIMBENCH_DATA_ROOT) at the folder holding "
        f"them, or set 'download: true' on a machine with internet."
    )
