"""Image classification datasets: local files first (data_root), torchvision / Hugging Face hub when allowed.

Decoded images are cached as safetensors under the cache folder, so JPEG decoding happens once per machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from slimbench.atomic import atomic_target
from slimbench.data.base import DatasetInfo, ImageTensorDataset, Splits, find_file, seeded_split
from slimbench.data.registry import DATASETS
from slimbench.errors import CorruptFileError, DataNotFoundError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"


def read_idx(path: Path) -> torch.Tensor:
    """Read an (optionally gzipped) IDX file, MNIST's format: magic (0, 0, 8 = uint8, ndim), dims, then data.
    A truncated or garbled file is one error naming it, never a tensor of the wrong size."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise CorruptFileError(f"data file '{path}' is corrupt ({error.__class__.__name__}: {error}). "
                               f"Fix: download it again.") from None
    ndim = raw[3] if len(raw) >= 4 else 0
    if raw[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
        raise CorruptFileError(f"data file '{path}' is not an IDX file of bytes (header {raw[:4].hex() or 'empty'}). "
                               f"Fix: download it again.")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise CorruptFileError(f"data file '{path}' holds {len(body)} bytes of data but its header says {dims} "
                               f"({math.prod(dims)}): truncated or altered. Fix: download it again.")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def source_identity(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """What identifies source files without reading them: resolved path, size and modification time (ns)."""
    found = []
    for path in paths:
        stat = Path(path).stat()
        found.append((str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns))
    return found


def cached(cache: Path, key: str, build: Callable[[], ImageTensorDataset], sources: Sequence[Path],
           options: dict | None = None) -> ImageTensorDataset:
    """Decoded images, from the cache when an entry for exactly these source files (path, size, mtime) and
    decoding ``options`` exists; another data root, a replaced file or other options give another entry.
    An unreadable entry is rebuilt."""
    identity = json.dumps({"sources": source_identity(sources), "options": options or {}}, sort_keys=True)
    path = cache / f"{key}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.safetensors"
    if path.exists():
        try:
            tensors = load_file(str(path))
            return ImageTensorDataset(tensors["images"], tensors["labels"])
        except (SafetensorError, OSError, KeyError):
            path.unlink(missing_ok=True)
    try:
        dataset = build()
    except (zipfile.BadZipFile, zlib.error, EOFError, UnidentifiedImageError, OSError, KeyError) as error:
        named = ", ".join(f"'{p}'" for p in sources)
        raise CorruptFileError(f"data file {named} is corrupt or incomplete ({error.__class__.__name__}: "
                               f"{str(error).splitlines()[0] if str(error) else 'no detail'}). Fix: download it again.") from None
    with atomic_target(path) as tmp:  # several runs may build the same cache at once
        save_file({"images": dataset.images.contiguous(), "labels": dataset.labels.contiguous()}, str(tmp))
    return dataset


def decode_jpegs(blobs: Sequence[bytes], size: Optional[int] = None) -> torch.Tensor:
    """Decode encoded images to uint8 (N, 3, H, W) with a thread pool (PIL releases the GIL)."""

    def one(blob: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(blob)).convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image)

    with ThreadPoolExecutor() as pool:
        arrays = list(pool.map(one, blobs, chunksize=256))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def image_folder_zip(path: Path, prefix: str, classes: Sequence[str]) -> ImageTensorDataset:
    """A zip in ImageFolder layout (``prefix/<class>/<file>.jpg``) read without unpacking."""
    index = {name: i for i, name in enumerate(classes)}
    blobs, labels = [], []
    with zipfile.ZipFile(path) as archive:
        for member in sorted(archive.namelist()):
            parts = member.split("/")
            if len(parts) == 3 and parts[0] == prefix and parts[2] and parts[1] in index:
                blobs.append(archive.read(member))
                labels.append(index[parts[1]])
    return ImageTensorDataset(decode_jpegs(blobs), torch.tensor(labels, dtype=torch.long))


def mnist_like(
    name: str, root: Path, download: bool, cache: Path, folder: str, extra_dirs: Sequence[str],
    torchvision_cls: str, mean: tuple, std: tuple, split: str, eval_fraction: float, split_seed: int,
    how_to_get: str,
) -> Splits:
    def files(stem: str) -> list[str]:
        return [f"{d}/{stem}.gz" for d in (folder, *extra_dirs)] + [f"{d}/{stem}" for d in (folder, *extra_dirs)]

    def load(stem_images: str, stem_labels: str) -> ImageTensorDataset:
        image_file = find_file(root, files(stem_images), name, how_to_get)
        label_file = find_file(root, files(stem_labels), name, how_to_get)
        images, labels = read_idx(image_file), read_idx(label_file).long()
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or len(labels) == 0:
            raise CorruptFileError(f"{name}: '{image_file}' holds images of shape {list(images.shape)} but "
                                   f"'{label_file}' labels of shape {list(labels.shape)}; they must be (N, 28, 28) "
                                   f"and (N,) with N > 0. Fix: download both files again.")
        if labels.max() >= 10:
            raise CorruptFileError(f"{name}: '{label_file}' has label {int(labels.max())}; classes are 0-9. "
                                   f"Fix: download it again.")
        return ImageTensorDataset(images.unsqueeze(1), labels)

    def from_hub(train: bool) -> ImageTensorDataset:
        import torchvision.datasets as tvd

        ds = getattr(tvd, torchvision_cls)(str(cache / "torchvision"), train=train, download=True)
        return ImageTensorDataset(ds.data.unsqueeze(1), ds.targets.long())

    info = DatasetInfo(name, "image_classification", "accuracy", 10, 1, 28, mean, std, False, source="")
    try:
        test = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
        source = "local IDX files"
    except DataNotFoundError:
        if not download:
            raise
        test, source = from_hub(False), f"torchvision.datasets.{torchvision_cls} (download)"
    if split == "test-split":
        return held_out(test, _with_source(info, source), split, eval_fraction, split_seed)
    try:
        train = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    except DataNotFoundError:
        if not download:
            raise
        train, source = from_hub(True), f"torchvision.datasets.{torchvision_cls} (download)"
    return Splits(train, test, _with_source(info, source), {"scheme": "official", "train": "train", "eval": "test"})


def held_out(dataset: ImageTensorDataset, info: DatasetInfo, scheme: str, eval_fraction: float,
             split_seed: int) -> Splits:
    """One official split divided into train/eval with a seed, for when only that split is available
    (``scheme`` names which: ``test-split`` or ``train-split``)."""
    train_idx, eval_idx = seeded_split(len(dataset), eval_fraction, split_seed)
    official = scheme.split("-")[0]
    return Splits(dataset.subset(train_idx), dataset.subset(eval_idx), info,
                  {"scheme": scheme, "eval_fraction": eval_fraction, "split_seed": split_seed,
                   "note": f"official {official} split divided into train/eval with seed {split_seed}"})


def _with_source(info: DatasetInfo, source: str) -> DatasetInfo:
    return DatasetInfo(**{**info.to_dict(), "source": source})


@DATASETS.register("mnist")
def mnist(root: Path, download: bool, cache: Path, split: str = "official", eval_fraction: float = 0.2,
          split_seed: int = 0) -> Splits:
    """MNIST. ``split: test-split`` trains on a seeded part of the official test set (when only it exists)."""
    return mnist_like("mnist", root, download, cache, "mnist", ("MNIST/raw",), "MNIST", MNIST_MEAN, MNIST_STD,
                      split, eval_fraction, split_seed,
                      "put MNIST's IDX files (t10k-images-idx3-ubyte.gz, ...) in <data_root>/mnist/")


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: Path, download: bool, cache: Path, split: str = "official", eval_fraction: float = 0.2,
                  split_seed: int = 0) -> Splits:
    """Fashion-MNIST (Xiao et al., 2017); also found where Debian's ``dataset-fashion-mnist`` installs it."""
    return mnist_like("fashion_mnist", root, download, cache, "fashion-mnist", (FASHION_DEBIAN,), "FashionMNIST",
                      FASHION_MEAN, FASHION_STD, split, eval_fraction, split_seed,
                      "run 'apt-get install dataset-fashion-mnist' or put the IDX files in <data_root>/fashion-mnist/")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@DATASETS.register("cifar10")
def cifar10(root: Path, download: bool, cache: Path, split: str = "official", eval_fraction: float = 0.1,
            split_seed: int = 0) -> Splits:
    """CIFAR-10: a JPEG ImageFolder zip pair in <data_root>/cifar10/, else torchvision's pickled batches.

    ``split: train-split`` holds out a seeded ``eval_fraction`` of the training set as eval and needs only
    train.zip (used where the test zip cannot travel, e.g. the 64 MiB GPU carry limit).
    """
    info = DatasetInfo("cifar10", "image_classification", "accuracy", 10, 3, 32, CIFAR_MEAN, CIFAR_STD, True)
    how = "put train.zip and test.zip (ImageFolder layout, JPEG) in <data_root>/cifar10/"
    wanted = ("train",) if split == "train-split" else ("train", "test")
    try:
        zips = {s: find_file(root, [f"cifar10/{s}.zip"], "cifar10", how) for s in wanted}
        parts = {s: cached(cache, f"cifar10-jpeg-{s}", lambda s=s: image_folder_zip(zips[s], s, CIFAR10_CLASSES),
                            [zips[s]], {"prefix": s, "classes": CIFAR10_CLASSES})
                 for s in zips}
        note = "images re-encoded as JPEG (lossy) by the source repository; accuracies may differ slightly"
        info = DatasetInfo(**{**info.to_dict(), "source": "local JPEG zips", "notes": note})
    except DataNotFoundError:
        if not download:
            raise
        import torchvision.datasets as tvd

        parts = {}
        for s in wanted:
            ds = tvd.CIFAR10(str(cache / "torchvision"), train=s == "train", download=True)
            parts[s] = ImageTensorDataset(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                                          torch.tensor(ds.targets, dtype=torch.long))
        info = DatasetInfo(**{**info.to_dict(), "source": "torchvision.datasets.CIFAR10 (download)"})
    if split == "train-split":
        return held_out(parts["train"], info, split, eval_fraction, split_seed)
    return Splits(parts["train"], parts["test"], info, {"scheme": "official", "train": "train", "eval": "test"})


def tiny_imagenet_train(train_zip: Path, index: dict[str, int] | None = None) -> ImageTensorDataset:
    """The training images of a Tiny-ImageNet zip, labelled by ``index`` (wnid -> class; by default the
    sorted wnids of the zip itself)."""
    with zipfile.ZipFile(train_zip) as archive:
        members = sorted(n for n in archive.namelist() if n.endswith(".JPEG") and "/train/" in n)
        wnids = [m.split("/train/")[1].split("/")[0] for m in members]
        index = index or {w: i for i, w in enumerate(sorted(set(wnids)))}
        return ImageTensorDataset(decode_jpegs([archive.read(m) for m in members], 64),
                                  torch.tensor([index[w] for w in wnids], dtype=torch.long))


def tiny_imagenet_zip(train_zip: Path, val_zip: Path) -> tuple[ImageTensorDataset, ImageTensorDataset]:
    with zipfile.ZipFile(val_zip) as archive:
        names = archive.namelist()
        top = next(n.split("/")[0] for n in names if n.endswith("wnids.txt"))
        wnids = archive.read(f"{top}/wnids.txt").decode().split()
        index = {w: i for i, w in enumerate(wnids)}
        annotations = archive.read(f"{top}/val/val_annotations.txt").decode().splitlines()
        rows = [line.split("\t")[:2] for line in annotations if line.strip()]
        val = ImageTensorDataset(decode_jpegs([archive.read(f"{top}/val/images/{f}") for f, _ in rows], 64),
                                 torch.tensor([index[w] for _, w in rows], dtype=torch.long))
    return tiny_imagenet_train(train_zip, index), val


@DATASETS.register("tiny_imagenet")
def tiny_imagenet(root: Path, download: bool, cache: Path, split: str = "official", eval_fraction: float = 0.1,
                  split_seed: int = 0) -> Splits:
    """Tiny-ImageNet (64x64 ImageNet crops): the offline ImageNet subset; validation split as eval.

    ``split: train-split`` holds out a seeded ``eval_fraction`` of the training zip as eval and needs only that
    zip (the GPU carry limit of 64 MiB does not fit both zips)."""
    how = "put tiny-imagenet-200-train100.zip and tiny-imagenet-200-val.zip in <data_root>/tiny-imagenet/"
    try:
        train_zip = find_file(root, ["tiny-imagenet/tiny-imagenet-200-train100.zip",
                                     "tiny-imagenet/tiny-imagenet-200-train.zip"], "tiny_imagenet", how)
        val_zip = None if split == "train-split" else find_file(root, ["tiny-imagenet/tiny-imagenet-200-val.zip"],
                                                                 "tiny_imagenet", how)
    except DataNotFoundError:
        if not download:
            raise
        return _tiny_imagenet_hub(cache)
    key = f"tiny-imagenet-{train_zip.stem}"
    info = DatasetInfo("tiny_imagenet", "image_classification", "accuracy", 0, 3, 64, IMAGENET_MEAN,
                       IMAGENET_STD, True, source=f"local zips ({train_zip.name})",
                       notes="Tiny-ImageNet used as the offline ImageNet subset")
    if split == "train-split":
        train = cached(cache, f"{key}-sorted-wnids", lambda: tiny_imagenet_train(train_zip), [train_zip],
                       {"size": 64, "labels": "sorted train wnids"})
        info = DatasetInfo(**{**info.to_dict(), "num_classes": int(train.labels.max()) + 1})
        return held_out(train, info, split, eval_fraction, split_seed)
    holder: dict = {}

    def part(which: str) -> ImageTensorDataset:
        if not holder:
            holder["train"], holder["eval"] = tiny_imagenet_zip(train_zip, val_zip)
        return holder[which]

    both, decoding = [train_zip, val_zip], {"size": 64, "labels": "val wnids.txt"}
    train = cached(cache, f"{key}-train", lambda: part("train"), both, decoding)
    val = cached(cache, f"{key}-val", lambda: part("eval"), both, decoding)
    info = DatasetInfo(**{**info.to_dict(), "num_classes": int(val.labels.max()) + 1})
    return Splits(train, val, info, {"scheme": "official", "train": train_zip.name, "eval": "val"})


def _tiny_imagenet_hub(cache: Path) -> Splits:
    import datasets

    ds = datasets.load_dataset("zh-plus/tiny-imagenet", cache_dir=str(cache / "hf"))

    def convert(split) -> ImageTensorDataset:
        arrays = [np.asarray(im.convert("RGB")) for im in split["image"]]
        return ImageTensorDataset(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(),
                                  torch.tensor(split["label"], dtype=torch.long))

    info = DatasetInfo("tiny_imagenet", "image_classification", "accuracy", 200, 3, 64, IMAGENET_MEAN,
                       IMAGENET_STD, True, source="hub zh-plus/tiny-imagenet (download)")
    return Splits(convert(ds["train"]), convert(ds["valid"]), info, {"scheme": "official"})


@DATASETS.register("imagenet")
def imagenet(root: Path, download: bool, cache: Path, image_size: int = 224, train_per_class: int = 0) -> Splits:
    """ImageNet-1k from an ImageFolder tree <data_root>/imagenet/{train,val}, resized to ``image_size``.

    Held in memory after decoding, so cap it with ``train_per_class`` (0: all) for machines without
    hundreds of GB; the hub copy (ILSVRC/imagenet-1k) is gated and needs `huggingface-cli login`.
    """
    how = "put ImageNet in ImageFolder layout in <data_root>/imagenet/train/<wnid>/*.JPEG and .../val/<wnid>/"
    base = find_file(root, ["imagenet/train"], "imagenet", how).parent
    find_file(root, ["imagenet/val"], "imagenet", how)
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())

    def listing(split: str, per_class: int) -> tuple[list[Path], list[int]]:
        files, labels = [], []
        for i, wnid in enumerate(classes):
            found = sorted((base / split / wnid).glob("*.*"))
            found = found[:per_class] if per_class else found
            files += found
            labels += [i] * len(found)
        return files, labels

    def folder(split: str, per_class: int) -> ImageTensorDataset:
        files, labels = listing(split, per_class)
        decode = lambda: ImageTensorDataset(decode_jpegs([f.read_bytes() for f in files], image_size),  # noqa: E731
                                            torch.tensor(labels, dtype=torch.long))
        return cached(cache, f"imagenet-{image_size}-{split}{per_class}", decode, files,
                      {"size": image_size, "classes": classes})

    train, val = folder("train", train_per_class), folder("val", 0)
    info = DatasetInfo("imagenet", "image_classification", "accuracy", len(classes), 3, image_size, IMAGENET_MEAN,
                       IMAGENET_STD, True, source="local ImageFolder",
                       notes=f"resized to {image_size}x{image_size}; train_per_class={train_per_class or 'all'}")
    return Splits(train, val, info, {"scheme": "official", "train": "train", "eval": "val"})
