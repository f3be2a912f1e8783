"""CamVid semantic segmentation (Brostow et al., 2008), the 11-class SegNet version at 480x360.

Read from ``<data_root>/camvid/{train,val,test}.zip`` (each ``images/<name>.jpg`` + ``labels/<name>.png``,
uint8 class ids 0..10, 11 = void), decoded once and cached as safetensors like the other image sets. The
augmentation (random scale, crop, flip) is the task's, on the device (:func:`slimbench.tasks.scale_crop_flip`);
its settings travel in ``DatasetInfo.extra``.
"""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from slimbench.data.base import DatasetInfo, ImageTensorDataset, Splits, find_file
from slimbench.data.images import IMAGENET_MEAN, IMAGENET_STD, cached, decode_jpegs
from slimbench.data.registry import DATASETS
from slimbench.errors import ConfigError, CorruptFileError

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CAMVID_VOID = 11
SPLITS = ("train", "val", "test")


@dataclass
class SegmentationDataset:
    """Images uint8 (N, 3, H, W) and label maps uint8 (N, H, W). No ``to``: batches are collated on the host
    and augmented one batch at a time on the device (a chunk of many full-size images would not fit)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> "SegmentationDataset":
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return SegmentationDataset(self.images[index], self.labels[index])

    def collate(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return self.images[index], self.labels[index]


def decode_pngs(blobs: Sequence[bytes]) -> torch.Tensor:
    """Single-channel PNG label maps to uint8 (N, H, W); palette or grey images keep their stored indices."""

    def one(blob: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(blob))
        if image.mode not in ("L", "P"):
            raise CorruptFileError(f"a CamVid label map is a {image.mode} image; it must hold one class id per pixel "
                                   f"(mode L or P). Fix: use the SegNet CamVid label PNGs.")
        return np.asarray(image, dtype=np.uint8)

    with ThreadPoolExecutor() as pool:
        return torch.from_numpy(np.stack(list(pool.map(one, blobs))))


def segmentation_zip(path: Path) -> ImageTensorDataset:
    """One split's zip: images and label maps paired by file stem (sorted), checked for matching sizes."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        images = {Path(n).stem: n for n in names if n.startswith("images/") and n.endswith(".jpg")}
        labels = {Path(n).stem: n for n in names if n.startswith("labels/") and n.endswith(".png")}
        if not images or images.keys() != labels.keys():
            unpaired = sorted(images.keys() ^ labels.keys())[:5]
            raise CorruptFileError(f"'{path}' must hold images/<name>.jpg and labels/<name>.png for the same names; "
                                   f"found {len(images)} images, {len(labels)} label maps (unpaired: {unpaired}). "
                                   f"Fix: recreate the zip.")
        stems = sorted(images)
        pixels = decode_jpegs([archive.read(images[s]) for s in stems])
        maps = decode_pngs([archive.read(labels[s]) for s in stems])
    if pixels.shape[-2:] != maps.shape[-2:]:
        raise CorruptFileError(f"'{path}': images are {tuple(pixels.shape[-2:])} but label maps "
                               f"{tuple(maps.shape[-2:])}. Fix: recreate the zip.")
    if int(maps.max()) > CAMVID_VOID:
        raise CorruptFileError(f"'{path}': label id {int(maps.max())} found; CamVid's are 0..10 and {CAMVID_VOID} "
                               f"(void). Fix: use the 11-class SegNet label maps.")
    return ImageTensorDataset(pixels, maps)


def split_of(name: str, root: Path, cache: Path) -> SegmentationDataset:
    """A split by name; ``train+val`` concatenates (all splits share the 480x360 size)."""
    parts = []
    for split in name.split("+"):
        if split not in SPLITS:
            raise ConfigError(f"dataset 'camvid': unknown split '{split}'. Fix: use train, val, test or a '+' "
                              f"join of them (e.g. train+val).")
        path = find_file(root, [f"camvid/{split}.zip"], "camvid",
                         f"put CamVid's {split}.zip (images/<name>.jpg, labels/<name>.png) in <data_root>/camvid/")
        parts.append(cached(cache, f"camvid-{split}", lambda path=path: segmentation_zip(path), [path]))
    return SegmentationDataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


@DATASETS.register("camvid")
def camvid(root: Path, download: bool, cache: Path, train_split: str = "train", eval_split: str = "test",
           crop: Sequence[int] = (352, 480), scale: Sequence[float] = (0.5, 2.0)) -> Splits:
    """CamVid with the usual segmentation augmentation (random ``scale`` range, random ``crop`` [h, w],
    horizontal flip) on training batches (``augment: false`` in the spec turns it off); images normalised with
    ImageNet's mean/std (the authors' ``cnorm``, ``Uper_mobilevit.yml``, chensy7/efficient-vit @ 6163879). Only
    local zips: no hub copy is wired up, so ``download`` does not help (the error says where to put the files)."""
    if len(crop) != 2 or min(crop) < 1 or len(scale) != 2 or not 0 < scale[0] <= scale[1]:
        raise ConfigError(f"dataset 'camvid': crop must be [height, width] >= 1 and scale [low, high] with "
                          f"0 < low <= high; got crop={list(crop)}, scale={list(scale)}.")
    train, evaluation = split_of(train_split, root, cache), split_of(eval_split, root, cache)
    note = ("images re-encoded from PNG as JPEG (quality 90) by this workplace's copy; labels lossless; "
            "mIoU may differ slightly from the original")
    info = DatasetInfo("camvid", "semantic_segmentation", "mean_iou", len(CAMVID_CLASSES), 3,
                       int(train.images.shape[-1]), IMAGENET_MEAN, IMAGENET_STD, True,
                       source="local zips (SegNet CamVid)", notes=note,
                       extra={"classes": list(CAMVID_CLASSES), "ignore_index": CAMVID_VOID,
                              "crop": [int(c) for c in crop], "scale": [float(s) for s in scale],
                              "height": int(train.images.shape[-2])})
    return Splits(train, evaluation, info, {"scheme": "official", "train": train_split, "eval": eval_split})
