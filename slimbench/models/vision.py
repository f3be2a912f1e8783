"""timm image models: ViT/DeiT, Swin, MobileViT, ResNet, ... by timm architecture name.

Weights: trained here from scratch (``pretrained: false``), the hub's pretrained weights when the config
allows downloads, or a local checkpoint file (``checkpoint: path``) for offline machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from torch import nn

from slimbench.data import DatasetInfo
from slimbench.errors import ConfigError, DataNotFoundError
from slimbench.models.registry import family

# timm architectures whose constructor takes an image size (patch-based models need it at build time).
TAKES_IMG_SIZE = ("vit", "deit", "swin", "mobilevit", "eva", "beit", "cait", "levit")


@family("timm")
def timm_model(info: DatasetInfo, pretrained: bool, download: bool, arch: str, weights: str = "scratch",
               checkpoint: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """``weights``: scratch | hub | checkpoint. Dataset shape (classes, channels, size) comes from ``info``."""
    import timm  # here, not at the top: timm imports torchvision and torch._dynamo (2 s) that planning never needs

    if arch not in timm.list_models():
        raise ConfigError(f"timm has no architecture '{arch}' (timm {timm.__version__}); see timm.list_models().")
    if weights not in ("scratch", "hub", "checkpoint"):
        raise ConfigError(f"timm model '{arch}': weights must be scratch, hub or checkpoint, not '{weights}'.")
    options: dict[str, Any] = {"num_classes": info.num_classes, "in_chans": info.in_chans, **kwargs}
    if weights == "scratch" and any(arch.startswith(p) for p in TAKES_IMG_SIZE):
        options.setdefault("img_size", info.image_size)  # pretrained models keep theirs (task option resize)
    load = pretrained and weights != "scratch"
    if load and weights == "checkpoint":
        if not checkpoint or not Path(checkpoint).exists():
            raise DataNotFoundError(f"timm model '{arch}': checkpoint file '{checkpoint}' not found. "
                                    f"Fix: set 'checkpoint' to a .safetensors/.pth file of {arch}.")
        options["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
    elif load and not download:
        raise DataNotFoundError(f"timm model '{arch}' wants hub weights but downloads are off. Fix: set "
                                f"'download: true', or 'weights: checkpoint' with a local file.")
    return timm.create_model(arch, pretrained=load, **options)
