"""Tasks turn a dataset batch into model inputs, logits, a loss and the task metric.

Four kinds cover the benchmark: image classification (timm-style ``model(x)``), semantic segmentation (a
map of logits per image), text classification (Hugging Face ``model(**tokens).logits``) and causal language
modelling (``model(input_ids).logits``).
Stages and the training loop only talk to a Task, never to a dataset or model type directly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.batching import TokenizedText
from slimbench.data import ArrayDataset, DatasetInfo, TextCorpus, TextDataset, TokenBlockDataset, batches
from slimbench.errors import ConfigError
from slimbench.metrics.task import (classification_metrics, confusion_matrix, perplexity,
                                   segmentation_metrics)
from slimbench.registry import Registry


class Task:
    """Base: batching, evaluation loop and the logits/loss interface."""

    def __init__(self, info: DatasetInfo, tokenizer: Any = None, **options: Any) -> None:
        self.info = info
        self.tokenizer = tokenizer
        self.options = options

    @property
    def metric(self) -> str:
        return self.info.metric

    def prepare(self, dataset: Any) -> ArrayDataset:
        """Turn the loader's split into something batchable (tokenization for corpora)."""
        return dataset

    def loader(self, dataset: ArrayDataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> Iterator[Any]:
        return batches(dataset, batch_size, shuffle, seed)

    def encode(self, dataset: Any, device: torch.device, static_shapes: bool = False) -> Any:
        """The training set in the form the training loop batches fastest (text: tokenized once)."""
        return dataset

    def to_device(self, batch: Any, device: torch.device, train: bool = False) -> Any:
        raise NotImplementedError

    def logits(self, model: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def labels(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: ArrayDataset, device: torch.device, batch_size: int = 256) -> dict:
        """The task metric (plus accuracy) and ``eval_loss``, the mean training loss on ``dataset``: the
        validation loss, which papers that argue from over- or underfitting report beside accuracy."""
        model.eval()
        predictions, labels, loss_sum = [], [], 0.0
        for batch in self.loader(dataset, batch_size):
            batch = self.to_device(batch, device)
            logits = self.logits(model, batch)
            predictions.append(logits.argmax(-1).cpu())
            labels.append(self.labels(batch).cpu())
            loss_sum += self.loss(logits.float(), batch).item() * len(labels[-1])
        metrics = classification_metrics(torch.cat(labels).tolist(), torch.cat(predictions).tolist(), self.metric)
        return {**metrics, "eval_loss": loss_sum / max(1, sum(len(x) for x in labels))}


TASKS: Registry[type[Task]] = Registry("task")


@TASKS.register("image_classification")
class ImageClassification(Task):
    """uint8 images -> normalized float on the device; random crop + flip when the dataset asks for it."""

    def to_device(self, batch: Any, device: torch.device, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        x = images.to(device, non_blocking=True).float().div_(255)
        mean, std = normalization(self.info.mean, self.info.std, device)
        x = (x - mean) / std
        if train and self.info.augment:
            x = random_crop_flip(x, padding=self.info.image_size // 8)
        size = self.options.get("resize")
        if size and size != x.shape[-1]:  # e.g. 224 for hub-pretrained models on small images
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x, labels.to(device, non_blocking=True)

    def logits(self, model: nn.Module, batch: Any) -> torch.Tensor:
        dtype = next(model.parameters()).dtype
        out = model(batch[0].to(dtype) if dtype.is_floating_point else batch[0])
        out = out.logits if hasattr(out, "logits") else out
        return out.float()

    def loss(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        return F.cross_entropy(logits, batch[1])

    def labels(self, batch: Any) -> torch.Tensor:
        return batch[1]


@lru_cache(maxsize=None)
def normalization(mean: tuple[float, ...], std: tuple[float, ...],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) mean and std, made once per device: a tensor built from host values per batch is a
    blocking copy, which waits for all queued GPU work."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def random_crop_flip(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-image random crop from a zero-padded copy and horizontal flip, done on the device."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(-1, x.shape[1], -1, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(-1, x.shape[1], h, -1)
    out = out.gather(3, cols)
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)


SEGMENTATION_EVAL_BATCH = 8


@TASKS.register("semantic_segmentation")
class SemanticSegmentation(Task):
    """Per-pixel classification: uint8 images (N, 3, H, W) and label maps (N, H, W) in, logits maps out.

    The model's logits are upsampled (bilinear) to the label size, as the edge-ViT authors' UPerNet does
    (``upernet.py``, ``F.interpolate(x, size=input_size, mode='bilinear')``, chensy7/efficient-vit @ 6163879);
    the loss is pixel cross-entropy without the ``ignore_index`` label (the dataset's void class); evaluation
    is at full resolution, mean IoU from a confusion matrix. Training batches get the dataset's augmentation
    (``info.extra``: random scale in ``scale``, random ``crop``, horizontal flip) when ``info.augment``.
    Evaluation batches hold at most :data:`SEGMENTATION_EVAL_BATCH` images (full-size maps are large; the
    batch size changes memory only, not the metric).
    """

    def __init__(self, info: DatasetInfo, tokenizer: Any = None, **options: Any) -> None:
        super().__init__(info, tokenizer, **options)
        missing = [k for k in ("crop", "scale") if info.augment and k not in info.extra]
        if missing:
            raise ConfigError(f"dataset '{info.name}' asks for segmentation augmentation but gives no {missing}. "
                              f"Fix: set crop [h, w] and scale [low, high] in its loader, or augment: false.")

    @property
    def ignore_index(self) -> int:
        return int(self.info.extra.get("ignore_index", 255))

    def to_device(self, batch: Any, device: torch.device, train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        x = images.to(device, non_blocking=True).float().div_(255)
        mean, std = normalization(self.info.mean, self.info.std, device)
        x = (x - mean) / std
        y = labels.to(device, non_blocking=True).long()
        if train and self.info.augment:
            x, y = scale_crop_flip(x, y, tuple(self.info.extra["scale"]), tuple(self.info.extra["crop"]),
                                   self.ignore_index)
        return x, y

    def logits(self, model: nn.Module, batch: Any) -> torch.Tensor:
        dtype = next(model.parameters()).dtype
        out = model(batch[0].to(dtype) if dtype.is_floating_point else batch[0])
        out = out.logits if hasattr(out, "logits") else out
        size = batch[1].shape[-2:]
        if out.shape[-2:] != size:
            out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        return out.float()

    def loss(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        return F.cross_entropy(logits, batch[1], ignore_index=self.ignore_index)

    def labels(self, batch: Any) -> torch.Tensor:
        return batch[1]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: ArrayDataset, device: torch.device, batch_size: int = 8) -> dict:
        """Mean IoU, pixel and mean class accuracy over every labelled pixel of ``dataset`` at full resolution,
        and ``eval_loss``, the pixel cross-entropy averaged over the labelled pixels."""
        model.eval()
        classes = self.info.num_classes
        confusion = torch.zeros(classes, classes, dtype=torch.long, device=device)
        loss_sum, pixels = 0.0, 0
        for batch in self.loader(dataset, min(batch_size, SEGMENTATION_EVAL_BATCH)):
            batch = self.to_device(batch, device)
            logits = self.logits(model, batch)
            confusion += confusion_matrix(batch[1], logits.argmax(1), classes, self.ignore_index)
            counted = int((batch[1] != self.ignore_index).sum())
            if counted:
                loss_sum += self.loss(logits, batch).item() * counted
                pixels += counted
        return {**segmentation_metrics(confusion.cpu()), "eval_loss": loss_sum / max(1, pixels)}


def scale_crop_flip(x: torch.Tensor, y: torch.Tensor, scale: tuple[float, float], crop: tuple[int, int],
                    ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The usual segmentation augmentation, per image on the device: resize by a factor drawn uniformly from
    ``scale`` (image bilinear, labels nearest), pad to at least ``crop`` (image with 0 = the mean after
    normalization, labels with ``ignore_index``), take a random ``crop`` window, flip horizontally with p=0.5.
    Draws come from torch's global CPU generator, which the training loop seeds."""
    height, width = crop
    images, labels = [], []
    for image, label in zip(x, y):
        factor = scale[0] + (scale[1] - scale[0]) * float(torch.rand(()))
        h, w = max(1, round(image.shape[-2] * factor)), max(1, round(image.shape[-1] * factor))
        image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        pad_h, pad_w = max(0, height - h), max(0, width - w)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            label = F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)
        top = int(torch.randint(0, image.shape[-2] - height + 1, ()))
        left = int(torch.randint(0, image.shape[-1] - width + 1, ()))
        image, label = image[:, top:top + height, left:left + width], label[top:top + height, left:left + width]
        if float(torch.rand(())) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.stack(labels)


@TASKS.register("text_classification")
class TextClassification(Task):
    """Sentences (pairs) tokenized per batch with the model's tokenizer, truncated to ``max_length``; for
    training, tokenized once (:meth:`encode`)."""

    def encode(self, dataset: Any, device: torch.device, static_shapes: bool = False) -> Any:
        """The whole split tokenized once and kept on ``device``, rows padded to ``max_length``; batches are cut
        to a bucketed length (:func:`slimbench.batching.bucket_length`). Right padding only: a tokenizer that
        pads left keeps the full length."""
        if not isinstance(dataset, TextDataset):
            return dataset
        limit = self.options.get("max_length", 128)
        tokens = self.tokenizer(dataset.texts, dataset.pairs, padding="max_length", truncation=True,
                                max_length=limit, return_tensors="pt")
        lengths = tokens["attention_mask"].sum(1)
        if getattr(self.tokenizer, "padding_side", "right") != "right":
            lengths = torch.full_like(lengths, tokens["input_ids"].shape[1])
        return TokenizedText({k: v.to(device) for k, v in tokens.items()},
                             torch.tensor(dataset.labels, dtype=torch.long, device=device), lengths, static_shapes)

    def to_device(self, batch: Any, device: torch.device, train: bool = False) -> dict[str, torch.Tensor]:
        if "input_ids" in batch:  # already tokenized (encode)
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        tokens = self.tokenizer(batch["texts"], batch["pairs"], padding=True, truncation=True,
                                max_length=self.options.get("max_length", 128), return_tensors="pt")
        return {**{k: v.to(device) for k, v in tokens.items()}, "labels": batch["labels"].to(device)}

    def logits(self, model: nn.Module, batch: Any) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits

    def loss(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        return F.cross_entropy(logits, batch["labels"])

    def labels(self, batch: Any) -> torch.Tensor:
        return batch["labels"]


@TASKS.register("language_modeling")
class LanguageModeling(Task):
    """Next-token prediction over non-overlapping blocks of ``block_size`` tokens."""

    def prepare(self, dataset: Any) -> ArrayDataset:
        if not isinstance(dataset, TextCorpus):
            return dataset
        block = self.options.get("block_size", 128)
        lines = [line for line in dataset.text.splitlines() if line.strip()]
        ids = [i for line in lines for i in self.tokenizer(line, add_special_tokens=False)["input_ids"]]
        usable = len(ids) // block * block
        return TokenBlockDataset(torch.tensor(ids[:usable], dtype=torch.long).view(-1, block))

    def to_device(self, batch: Any, device: torch.device, train: bool = False) -> dict[str, torch.Tensor]:
        return {"input_ids": batch["input_ids"].to(device)}

    def logits(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return model(input_ids=batch["input_ids"]).logits

    def loss(self, logits: torch.Tensor, batch: Any) -> torch.Tensor:
        ids = batch["input_ids"]
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset: ArrayDataset, device: torch.device, batch_size: int = 16) -> dict:
        model.eval()
        nll, tokens = 0.0, 0
        for batch in self.loader(dataset, batch_size):
            batch = self.to_device(batch, device)
            logits = self.logits(model, batch)
            count = batch["input_ids"][:, 1:].numel()
            nll += float(self.loss(logits, batch)) * count
            tokens += count
        return perplexity(nll, tokens)


def make_task(info: DatasetInfo, tokenizer: Any = None, **options: Any) -> Task:
    return TASKS.get(info.task)(info, tokenizer, **options)
