"""UPerNet segmentation models: Swin(-V2) teachers (transformers', or the authors' on torchvision) and a MobileViT-S
student on timm.

Both are the edge-ViT paper's networks (Youn et al. 2023, arXiv 2309.02617; authors' code chensy7/efficient-vit,
branch swin_v2_b @ 6163879, ``upernet.py``): a UPerNet on a Swin-V2 teacher and on a MobileViT-S student.
Both return a logits map (batch, classes, H', W'); the task upsamples it to the label size.

- ``upernet_swin``: transformers' ``UperNetForSemanticSegmentation`` with a Swin or Swin-V2 backbone built
  from ``SwinConfig``/``Swinv2Config`` (random init offline), or a whole UPerNet checkpoint from the hub
  (``weights: hub``, ``hub: openmmlab/upernet-swin-tiny``) on a connected machine, its classifier re-sized, or
  an ImageNet-pretrained Swin(-V2) backbone under a new head (``weights: backbone_hub``, e.g.
  ``microsoft/swinv2-tiny-patch4-window8-256``: not the authors' start, since transformers' backbone layer-norms
  its stage outputs and the weights are another release). transformers' head is mmseg's UPerNet
  (PPM scales 1, 2, 3, 6, conv-BN-ReLU laterals, ``hidden_size`` channels), not the authors'.
- ``upernet_swin_tv``: the authors' teacher as their code builds it: torchvision ``swin_v2_t(weights='DEFAULT')``,
  its stage outputs taken without LayerNorm, under their UPerNet head (fpn_out 96).
- ``upernet_mobilevit``: the authors' UPerNet head (their ``PSPModule`` + ``FPN_fuse`` + 3x3 classifier, ported
  below) on the four stage outputs of timm's MobileViT (strides 4-32). The authors take them from Hugging Face's
  ``MobileViTModel`` (``apple/mobilevit-small``, ``mobilevit_forward``: encoder layers 1-4, widths 64, 96, 128,
  160); timm's ``features_only`` would give the 640-wide ``final_conv`` at stride 32 instead, so the stem and
  stages are called directly and ``final_conv`` and the classifier are dropped. Not replicated: the authors'
  ``num_attention_heads=2`` override of the pretrained MobileViT-S (timm keeps its 4 heads).
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.data import DatasetInfo
from slimbench.errors import ConfigError, DataNotFoundError
from slimbench.models.registry import family
from slimbench.models.vision import timm_model

SWIN_STAGES = ["stage1", "stage2", "stage3", "stage4"]


class HubSegmenter(nn.Module):
    """A transformers segmentation model called on a tensor, returning its logits tensor (what tracing,
    FLOP counting and pruning expect)."""

    def __init__(self, net: nn.Module, info: DatasetInfo) -> None:
        super().__init__()
        self.net = net
        self.dataset_info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits

    def get_classifier(self) -> nn.Module:
        return self.net.decode_head.classifier


def swin_config(version: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                window_size: int, in_chans: int) -> Any:
    from transformers import SwinConfig, Swinv2Config

    if version not in (1, 2):
        raise ConfigError(f"upernet_swin: version must be 1 (Swin) or 2 (Swin-V2), not {version}.")
    make = SwinConfig if version == 1 else Swinv2Config
    return make(embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads), window_size=window_size,
                num_channels=in_chans, out_features=SWIN_STAGES)


def describe_upernet(model: nn.Module) -> dict[str, Any]:
    """The whole transformers config, so a saved model rebuilds offline with the exact architecture it had
    (a hub checkpoint's may differ from the spec: auxiliary head, widths)."""
    return {"upernet_config": model.net.config.to_dict()}


def pretrained_backbone(version: int, source: str) -> nn.Module:
    """A Swin(-V2) backbone's pretrained weights (e.g. ImageNet ``microsoft/swinv2-tiny-patch4-window8-256``) from
    the hub or a local folder, with the four stage outputs UPerNet reads."""
    from transformers import SwinBackbone, Swinv2Backbone

    return (SwinBackbone if version == 1 else Swinv2Backbone).from_pretrained(source, out_features=SWIN_STAGES)


@family("upernet_swin", describe=describe_upernet)
def upernet_swin(info: DatasetInfo, pretrained: bool, download: bool, version: int = 2, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 8,
                 hidden_size: int = 512, weights: str = "scratch", hub: Optional[str] = None,
                 upernet_config: Optional[dict] = None) -> nn.Module:
    """Defaults: Swin-V2-T (the authors' teacher backbone, torchvision ``swin_v2_t``: window 8) with
    transformers' default head width 512. ``weights``: scratch | hub (``hub``: a whole
    UperNetForSemanticSegmentation repository, classifier re-sized) | backbone_hub (``hub``: a Swin(-V2)
    backbone repository or local folder; its architecture replaces the spec's); hub weights need
    ``download: true`` unless ``hub`` is a local folder. ``upernet_config`` (written by :func:`describe_upernet`)
    rebuilds a saved model's exact architecture."""
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    if weights not in ("scratch", "hub", "backbone_hub"):
        raise ConfigError(f"upernet_swin: weights must be scratch, hub or backbone_hub, not '{weights}'.")
    load = pretrained and weights != "scratch"
    if load and (not hub or not (download or Path(hub).is_dir())):
        raise DataNotFoundError(f"upernet_swin: weights: {weights} needs 'hub' (a repository id, e.g. "
                                f"openmmlab/upernet-swin-tiny, or a local folder; got {hub!r}) and 'download: true' "
                                f"for a repository.")
    if upernet_config is not None:
        return HubSegmenter(UperNetForSemanticSegmentation(UperNetConfig.from_dict(upernet_config)), info)
    if load and weights == "hub":
        net = UperNetForSemanticSegmentation.from_pretrained(hub, num_labels=info.num_classes,
                                                             ignore_mismatched_sizes=True)
        return HubSegmenter(net, info)
    backbone = pretrained_backbone(version, hub) if load else None
    config = UperNetConfig(backbone_config=backbone.config if backbone is not None else
                           swin_config(version, embed_dim, depths, num_heads, window_size, info.in_chans),
                           num_labels=info.num_classes, hidden_size=hidden_size, use_auxiliary_head=False)
    net = UperNetForSemanticSegmentation(config)
    if backbone is not None:
        net.backbone.load_state_dict(backbone.state_dict())
    return HubSegmenter(net, info)


# ----------------------------------------------------------------------------------------------------------------
# The authors' UPerNet head (upernet.py @ 6163879: PSPModule, FPN_fuse, UperNet.head), ported as written.
# ----------------------------------------------------------------------------------------------------------------


class PSPModule(nn.Module):
    """Pyramid pooling on the deepest features: bins 1, 2, 4, 6, each to in/4 channels, concatenated with the
    input, then a 3x3 conv + BN + ReLU + Dropout2d(0.1) back to the input width."""

    def __init__(self, in_channels: int, bin_sizes: Sequence[int] = (1, 2, 4, 6)) -> None:
        super().__init__()
        out_channels = in_channels // len(bin_sizes)
        self.stages = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, out_channels, 1,
                                                                                      bias=False),
                                                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
                                     for b in bin_sizes])
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + out_channels * len(bin_sizes), in_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Dropout2d(0.1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        size = features.shape[-2:]
        pyramids = [features] + [F.interpolate(stage(features), size=size, mode="bilinear", align_corners=True)
                                 for stage in self.stages]
        return self.bottleneck(torch.cat(pyramids, dim=1))


class FPNFuse(nn.Module):
    """Top-down FPN: 1x1 lateral convs (stages 2-4), upsample-and-add, 3x3 smoothing, all levels upsampled to
    stride 4 and fused by a 3x3 conv + BN + ReLU. As in the authors' code the smoothing conv is ONE module
    used for every level (``nn.ModuleList([conv] * 3)``): its weights are shared."""

    def __init__(self, feature_channels: Sequence[int], fpn_out: int) -> None:
        super().__init__()
        if feature_channels[0] != fpn_out:
            raise ConfigError(f"UPerNet: the stride-4 features ({feature_channels[0]} channels) must have fpn_out "
                              f"({fpn_out}) channels, as in the authors' FPN_fuse. Fix: set fpn_out: {feature_channels[0]}.")
        self.conv1x1 = nn.ModuleList([nn.Conv2d(c, fpn_out, 1) for c in feature_channels[1:]])
        self.smooth_conv = nn.ModuleList([nn.Conv2d(fpn_out, fpn_out, 3, padding=1)] * (len(feature_channels) - 1))
        self.conv_fusion = nn.Sequential(nn.Conv2d(len(feature_channels) * fpn_out, fpn_out, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(fpn_out), nn.ReLU(inplace=True))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        features = features[:1] + [conv(f) for f, conv in zip(features[1:], self.conv1x1)]
        levels = [up_and_add(features[i], features[i - 1]) for i in reversed(range(1, len(features)))]
        levels = list(reversed([smooth(x) for smooth, x in zip(self.smooth_conv, levels)])) + [features[-1]]
        size = levels[0].shape[-2:]
        levels = levels[:1] + [F.interpolate(x, size=size, mode="bilinear", align_corners=True) for x in levels[1:]]
        return self.conv_fusion(torch.cat(levels, dim=1))


def up_and_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class UperNetHead(nn.Module):
    """PSP on the deepest level, FPN fusion, 3x3 classifier: logits at stride 4."""

    def __init__(self, feature_channels: Sequence[int], fpn_out: int, num_classes: int) -> None:
        super().__init__()
        self.ppn = PSPModule(feature_channels[-1])
        self.fpn = FPNFuse(feature_channels, fpn_out)
        self.head = nn.Conv2d(fpn_out, num_classes, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.fpn(features[:-1] + [self.ppn(features[-1])]))


class TimmStages(nn.Module):
    """A timm ByobNet (MobileViT) without ``final_conv`` and classifier: the outputs of ``stages[i]`` for
    ``indices`` (1-4: strides 4, 8, 16, 32)."""

    def __init__(self, net: nn.Module, indices: Sequence[int]) -> None:
        super().__init__()
        self.stem, self.stages, self.indices = net.stem, net.stages, tuple(indices)
        self.channels = [net.feature_info[i]["num_chs"] for i in self.indices[:-1]] + [
            _stage_width(net.stages[self.indices[-1]])]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, out = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.indices:
                out.append(x)
        return out


def _stage_width(stage: nn.Module) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class UperNetOnStages(nn.Module):
    """The authors' UPerNet on a backbone's stage outputs (timm's MobileViT, torchvision's Swin)."""

    def __init__(self, backbone: nn.Module, fpn_out: int, info: DatasetInfo) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = UperNetHead(backbone.channels, fpn_out, info.num_classes)
        self.dataset_info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))

    def get_classifier(self) -> nn.Module:
        return self.decode_head.head


class TorchvisionSwinStages(nn.Module):
    """torchvision Swin(-V2) ``features`` returning the outputs of blocks 1, 3, 5 and 7 (strides 4-32) as NCHW maps,
    without the final LayerNorm: the authors' ``swin_v2_t_forward`` (``upernet.py`` @ 6163879, lines 329-337)."""

    STAGES = (1, 3, 5, 7)

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = net.features
        self.channels = [self.features[i][-1].norm1.normalized_shape[0] for i in self.STAGES]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.STAGES:
                out.append(x.permute(0, 3, 1, 2))
        return out


AUTHORS_FPN_OUT = {"swin_v2_t": 96, "swin_v2_b": 128}  # upernet.py @ 6163879, lines 379-395


@family("upernet_swin_tv")
def upernet_swin_tv(info: DatasetInfo, pretrained: bool, download: bool, arch: str = "swin_v2_t",
                    fpn_out: Optional[int] = None, weights: str = "scratch", checkpoint: Optional[str] = None,
                    ) -> nn.Module:
    """The authors' teacher: torchvision Swin-V2-T (or -B) under their UPerNet head, fpn_out 96 (128 for -B).
    ``weights``: scratch | hub (torchvision's ImageNet ``weights='DEFAULT'``, as the authors start; needs
    ``download: true``, cached under ``$TORCH_HOME``) | checkpoint (a local state dict of that torchvision model,
    read with ``weights_only``). The head starts from PyTorch's default initialisation (the authors'
    ``init_weight`` was not compared)."""
    import torchvision

    if arch not in AUTHORS_FPN_OUT:
        raise ConfigError(f"upernet_swin_tv: arch must be one of {sorted(AUTHORS_FPN_OUT)}, not '{arch}'.")
    if weights not in ("scratch", "hub", "checkpoint"):
        raise ConfigError(f"upernet_swin_tv: weights must be scratch, hub or checkpoint, not '{weights}'.")
    if info.in_chans != 3:
        raise ConfigError(f"upernet_swin_tv: torchvision's Swin reads 3 channels; dataset '{info.name}' has "
                          f"{info.in_chans}.")
    load = pretrained and weights != "scratch"
    if load and weights == "hub" and not download:
        raise DataNotFoundError(f"upernet_swin_tv: weights: hub downloads torchvision's {arch} weights. Fix: set "
                                f"'download: true', or 'weights: checkpoint' with a local state dict file.")
    if load and weights == "checkpoint" and (not checkpoint or not Path(checkpoint).is_file()):
        raise DataNotFoundError(f"upernet_swin_tv: checkpoint file {checkpoint!r} not found. Fix: set 'checkpoint' "
                                f"to a saved state dict of torchvision's {arch}.")
    net = getattr(torchvision.models, arch)(weights="DEFAULT" if load and weights == "hub" else None)
    if load and weights == "checkpoint":
        try:
            net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        except (RuntimeError, AttributeError, TypeError, pickle.UnpicklingError) as error:
            raise ConfigError(f"upernet_swin_tv: {checkpoint} is not a state dict of torchvision's {arch} "
                              f"({str(error).splitlines()[0][:200]}). Fix: save one with torch.save(torchvision."
                              f"models.{arch}(weights='DEFAULT').state_dict(), path).") from None
    return UperNetOnStages(TorchvisionSwinStages(net), fpn_out or AUTHORS_FPN_OUT[arch], info)


@family("upernet_mobilevit")
def upernet_mobilevit(info: DatasetInfo, pretrained: bool, download: bool, arch: str = "mobilevit_s",
                      fpn_out: int = 64, weights: str = "scratch", checkpoint: Optional[str] = None,
                      **kwargs: Any) -> nn.Module:
    """Defaults: MobileViT-S with the authors' ``fpn_out`` 64 for MobileViT. ``weights``: scratch | hub
    (ImageNet MobileViT-S from timm's hub, as the authors start from) | checkpoint (a local timm file);
    ``kwargs`` go to ``timm.create_model`` (e.g. a narrower test backbone)."""
    backbone_info = replace(info, num_classes=0)  # no classifier: only the stages are kept
    net = timm_model(backbone_info, pretrained, download, arch, weights, checkpoint, **kwargs)
    if not hasattr(net, "stages") or len(net.stages) < 5:
        raise ConfigError(f"upernet_mobilevit: timm '{arch}' has no five 'stages' (strides 2-32); use a MobileViT.")
    return UperNetOnStages(TimmStages(net, (1, 2, 3, 4)), fpn_out, info)
