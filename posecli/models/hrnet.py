"""HRNet (Sun et al., 2019) with a 1x1 heatmap head.

Module names equal MMPose's checkpoint keys (``backbone.stage2.0.fuse_layers...``,
``head.final_layer``), so MMPose checkpoints load with ``strict=True`` as they are.
Variants are data: see ``ARCHS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Stage:
    num_modules: int
    block: str  # "BASIC" or "BOTTLENECK"
    num_blocks: tuple[int, ...]  # per branch
    num_channels: tuple[int, ...]  # per branch


@dataclass(frozen=True)
class HRNetConfig:
    stage1: Stage
    stage2: Stage
    stage3: Stage
    stage4: Stage

    @property
    def out_channels(self) -> int:
        """Channels of the highest-resolution branch, which feeds the head."""
        return self.stage4.num_channels[0]


def hrnet_config(width: int, stage1_channels: int = 64, blocks: int = 4, stage3_modules: int = 4, stage4_modules: int = 3) -> HRNetConfig:
    """The standard HRNet-W<width>; the other arguments shrink it for tests."""
    w = width
    return HRNetConfig(
        stage1=Stage(1, "BOTTLENECK", (blocks,), (stage1_channels,)),
        stage2=Stage(1, "BASIC", (blocks,) * 2, (w, 2 * w)),
        stage3=Stage(stage3_modules, "BASIC", (blocks,) * 3, (w, 2 * w, 4 * w)),
        stage4=Stage(stage4_modules, "BASIC", (blocks,) * 4, (w, 2 * w, 4 * w, 8 * w)),
    )


ARCHS: dict[str, HRNetConfig] = {
    "hrnet-w32": hrnet_config(32),
    "hrnet-w48": hrnet_config(48),
    # The reference test model of ../shared/reference (MMPose-trained, 254,841 parameters).
    "hrnet-small": hrnet_config(8, stage1_channels=32, blocks=1, stage3_modules=1, stage4_modules=1),
}


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place: one pass less over the activations (out is this block's own tensor)
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_blocks(block: type, cin: int, planes: int, n: int) -> nn.Sequential:
    downsample = None
    if cin != planes * block.expansion:
        downsample = conv_bn(cin, planes * block.expansion, 1, relu=False)
    layers = [block(cin, planes, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class HRModule(nn.Module):
    """Parallel branches, then every output branch sums all inputs resampled to its resolution."""

    def __init__(self, block: type, num_blocks, in_channels: list[int], channels, multiscale_output: bool):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(make_blocks(block, in_channels[i], channels[i], num_blocks[i]) for i in range(n))
        out = [c * block.expansion for c in channels]
        self.fuse_layers = nn.ModuleList()
        if n > 1:
            for i in range(n if multiscale_output else 1):
                self.fuse_layers.append(nn.ModuleList(self._fuse(out, j, i) for j in range(n)))
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out

    @staticmethod
    def _fuse(ch: list[int], j: int, i: int) -> nn.Module | None:
        if j == i:
            return None
        if j > i:  # lower resolution: 1x1 conv, then nearest upsampling
            return nn.Sequential(
                nn.Conv2d(ch[j], ch[i], 1, bias=False), nn.BatchNorm2d(ch[i]),
                nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
            )  # fmt: skip
        # higher resolution: stride-2 3x3 convs; only the last one changes channels and has no ReLU
        steps = [conv_bn(ch[j], ch[j], 3, 2) for _ in range(i - j - 1)]
        return nn.Sequential(*steps, conv_bn(ch[j], ch[i], 3, 2, relu=False))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        fused = []
        for layers in self.fuse_layers:
            terms = [x if layer is None else layer(x) for layer, x in zip(layers, xs)]
            # Summed in branch order, as MMPose; the first add makes a new tensor (a term may be
            # an input branch, shared with other outputs), the rest add into it in place.
            y = terms[0] + terms[1]
            for t in terms[2:]:
                y += t
            fused.append(self.relu(y))
        return fused


def make_transition(pre: list[int], cur: tuple[int, ...]) -> nn.ModuleList:
    """Adapt the previous stage's branches and add a new, stride-2, lower-resolution branch."""
    layers = nn.ModuleList()
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(conv_bn(pre[i], c, 3) if pre[i] != c else None)
        else:
            steps = [conv_bn(pre[-1], pre[-1], 3, 2) for _ in range(i - len(pre))]
            layers.append(nn.Sequential(*steps, conv_bn(pre[-1], c, 3, 2)))
    return layers


class HRNet(nn.Module):
    def __init__(self, cfg: HRNetConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        s1 = cfg.stage1
        block1 = BLOCKS[s1.block]
        self.layer1 = make_blocks(block1, 64, s1.num_channels[0], s1.num_blocks[0])
        channels = [s1.num_channels[0] * block1.expansion]
        for n, stage in ((2, cfg.stage2), (3, cfg.stage3), (4, cfg.stage4)):
            block = BLOCKS[stage.block]
            setattr(self, f"transition{n - 1}", make_transition(channels, stage.num_channels))
            modules = []
            channels = list(stage.num_channels)
            for m in range(stage.num_modules):
                # MMPose's HRNet keeps only the highest-resolution output at the very end.
                last = n == 4 and m == stage.num_modules - 1
                module = HRModule(block, stage.num_blocks, channels, stage.num_channels, multiscale_output=not last)
                channels = module.out_channels
                modules.append(module)
            setattr(self, f"stage{n}", nn.Sequential(*modules))

    @staticmethod
    def _transit(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(transition):
            if layer is None:
                out.append(xs[i])
            else:  # as MMPose: a transition always starts from the lowest-resolution branch
                out.append(layer(xs[-1]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for n in (2, 3, 4):
            xs = self._transit(getattr(self, f"transition{n - 1}"), xs)
            xs = getattr(self, f"stage{n}")(xs)
        return xs[0]


class HeatmapHead(nn.Module):
    """MMPose's ``HeatmapHead`` without deconvolutions: a single 1x1 conv to K heatmaps."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, 1)

    def forward(self, x):
        return self.final_layer(x)


class PoseHRNet(nn.Module):
    """Backbone + head: (B, 3, 256, 192) normalised RGB -> (B, K, 64, 48) heatmaps."""

    def __init__(self, cfg: HRNetConfig, num_keypoints: int):
        super().__init__()
        self.backbone = HRNet(cfg)
        self.head = HeatmapHead(cfg.out_channels, num_keypoints)
        self.init_weights()

    def init_weights(self):
        """HRNet's own initialisation, as MMPose: N(0, 0.001) convs, unit BN, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(arch: str, num_keypoints: int) -> PoseHRNet:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return PoseHRNet(ARCHS[arch], num_keypoints)
