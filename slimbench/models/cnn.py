"""CIFAR-style ResNets (He et al., 2016): 3x3 stem, no max-pool, four stages of BasicBlocks.

``blocks`` per stage gives ResNet-18 (2,2,2,2) or ResNet-34 (3,4,6,3); ``width`` scales the channels, so a
small ResNet for CPU runs is a config choice, not a different model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from slimbench.data import DatasetInfo
from slimbench.models.registry import family


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks: Sequence[int], width: int, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, channels = [], width
        for i, count in enumerate(blocks):
            out = width * 2**i
            layers.append(nn.Sequential(*[BasicBlock(channels if j == 0 else out, out, 2 if (i and j == 0) else 1)
                                          for j in range(count)]))
            channels = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


@family("cifar_resnet")
def cifar_resnet(info: DatasetInfo, pretrained: bool, download: bool, blocks: Sequence[int] = (2, 2, 2, 2),
                 width: int = 64) -> nn.Module:
    return CifarResNet(tuple(blocks), width, info.num_classes, info.in_chans)
