"""HRNet for float32 CPU inference on oneDNN's fused convolutions.

Eager PyTorch runs a folded conv, its ReLU and a residual addition as separate passes
over memory, and lays each weight out for oneDNN again on every call. Here every
convolution is one oneDNN call with the bias, the addition and the ReLU applied as it
writes its output ("post-ops"), on a weight packed once for the call size. The network
is rebuilt from a trained ``PoseHRNet`` with the same structure and MMPose's order of
summation, so the heatmaps equal the BN-folded eager network's to float rounding (the
tests allow 1e-5; measured runs were bit-equal). It is faster than the folded eager network
and than torch.compile's, without a compile (docs/benchmarks.md). Inference only, CPU only:
the packed weights are opaque oneDNN tensors, with no gradient and no ``.to()``.

The kernels are ``torch.ops.mkldnn._convolution_pointwise``, the ones inductor emits
for the same patterns when it compiles a CNN for CPU; ``available()`` says whether this
torch has them.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from posecli.models.fuse import fuse_conv_bn
from posecli.models.hrnet import BasicBlock, Bottleneck, HRModule, PoseHRNet


@functools.cache
def available() -> bool:
    """Whether this torch build has the fused kernels and the weight packing, and they compute a conv right.

    They are private APIs, and builds differ (oneDNN on ARM runs on other backends): one tiny
    fused convolution is checked against ``F.conv2d`` before any network is trusted to them.
    """
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")):  # fmt: skip
        return False
    x, other = (torch.randn(2, 8, 6, 5, generator=torch.Generator().manual_seed(i)) for i in (0, 1))
    x, other = (t.contiguous(memory_format=torch.channels_last) for t in (x, other))
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():  # the caller's random state is kept
            conv = nn.Conv2d(8, 8, 3, padding=1)
            got = FusedConv(conv, True, list(x.shape))(x, add=other)
            expected = torch.relu(conv(x) + other)
    except RuntimeError:
        return False
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=1e-4, atol=1e-5))


class FusedConv(nn.Module):
    """A BN-folded Conv2d, optionally followed by ``+ add`` and a ReLU, as one oneDNN call."""

    def __init__(self, conv: nn.Conv2d, relu: bool, input_shape: list[int]):
        super().__init__()
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.relu = relu
        weight = conv.weight.detach().float().cpu().contiguous()
        # Packed for this input shape; a call of another size still works (oneDNN re-lays it out).
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), *self.args, input_shape)
        self.bias = conv.bias.detach().float().cpu() if conv.bias is not None else None

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if add is None:
            act = "relu" if self.relu else "none"
            return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args, act, [], "")
        act = "relu" if self.relu else None
        return torch.ops.mkldnn._convolution_pointwise.binary(x, add, self.weight, self.bias, *self.args, "add", None,
                                                              act, [], "")  # fmt: skip


def _chain(seq: nn.Sequential, shapes: dict[nn.Module, list[int]]) -> nn.Sequential:
    """Folded ``conv_bn`` chains (Conv, Identity[, ReLU]), nested or not -> one flat Sequential of FusedConvs.

    Upsample layers are kept; each ReLU goes into the conv before it.
    """
    layers = [m for m in _flat(seq) if not isinstance(m, nn.Identity)]
    out = []
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            out.append(FusedConv(m, i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU), shapes[m]))
        elif not isinstance(m, nn.ReLU):
            out.append(m)
    return nn.Sequential(*out)


def _flat(seq: nn.Sequential) -> list[nn.Module]:
    return [leaf for m in seq for leaf in (_flat(m) if isinstance(m, nn.Sequential) else [m])]


class FusedBlock(nn.Module):
    """HRNet's BasicBlock or Bottleneck: the last conv adds the identity and applies the ReLU."""

    def __init__(self, block: BasicBlock | Bottleneck, shapes):
        super().__init__()
        convs = [block.conv1, block.conv2] + ([block.conv3] if isinstance(block, Bottleneck) else [])
        self.convs = nn.ModuleList(FusedConv(c, True, shapes[c]) for c in convs)
        self.downsample = None if block.downsample is None else _chain(block.downsample, shapes)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        for conv in self.convs[:-1]:
            x = conv(x)
        return self.convs[-1](x, add=identity)


class FusedHRModule(nn.Module):
    def __init__(self, module: HRModule, shapes):
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(FusedBlock(b, shapes) for b in br)) for br in module.branches)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(None if layer is None else _chain(layer, shapes) for layer in layers)
            for layers in module.fuse_layers
        )  # fmt: skip

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        fused = []
        for i, layers in enumerate(self.fuse_layers):
            # Summed in branch order, as MMPose and HRModule. A higher-resolution input's last
            # stride-2 conv adds the running sum as it writes; the others are added after.
            y, own = None, False  # own: y is this sum's tensor, not an input branch (shared by all outputs)
            for j, (layer, x) in enumerate(zip(layers, xs)):
                if j < i and y is not None:
                    y, own = layer[-1](layer[:-1](x), add=y), True
                    continue
                term = x if layer is None else layer(x)
                if y is None:
                    y, own = term, layer is not None
                elif own:
                    y.add_(term)
                else:
                    y, own = y + term, True
            fused.append(y.relu_())
        return fused


# Crops per call, chosen by paired w32 runs (docs/benchmarks.md): the stem, layer1 and the first
# transition, whose 256-channel 64x48 activations are HRNet's largest, run 4 crops at a time; the
# stages after them, whose low-resolution branches want more rows per call, run 16.
EARLY_CHUNK = 4
LATE_CHUNK = 16


class FusedPoseHRNet(nn.Module):
    """``PoseHRNet``'s forward on FusedConvs: (B, 3, H, W) float32 channels-last -> heatmaps.

    Runs its first part ``EARLY_CHUNK`` crops at a time; call it with up to ``LATE_CHUNK``.
    """

    def __init__(self, net: PoseHRNet, early_shapes, late_shapes):
        super().__init__()
        hr, e, s = net.backbone, early_shapes, late_shapes
        self.stem = nn.Sequential(FusedConv(hr.conv1, True, e[hr.conv1]), FusedConv(hr.conv2, True, e[hr.conv2]))
        self.layer1 = nn.Sequential(*(FusedBlock(b, e) for b in hr.layer1))
        self.transitions = nn.ModuleList(
            nn.ModuleList(None if layer is None else _chain(layer, e if n == 1 else s) for layer in getattr(hr, f"transition{n}"))
            for n in (1, 2, 3)
        )  # fmt: skip
        self.stages = nn.ModuleList(nn.Sequential(*(FusedHRModule(m, s) for m in getattr(hr, f"stage{n}")))
                                    for n in (2, 3, 4))  # fmt: skip
        self.head = FusedConv(net.head.final_layer, False, s[net.head.final_layer])

    def early(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.stem(x))
        return [x if layer is None else layer(x) for layer in self.transitions[0]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.early(part) for part in x.split(EARLY_CHUNK)]
        xs = parts[0] if len(parts) == 1 else [torch.cat(branch) for branch in zip(*parts)]
        for transition, stage in zip([None, *self.transitions[1:]], self.stages):
            if transition is not None:  # as HRNet: a new branch starts from the lowest-resolution one
                xs = [xs[i] if layer is None else layer(xs[-1]) for i, layer in enumerate(transition)]
            xs = stage(xs)
        return self.head(xs[0])


def conv_input_shapes(net: nn.Module, input_size: tuple[int, int]) -> dict[nn.Module, list[int]]:
    """Each Conv2d of ``net`` -> the (C, H, W) of its input for one crop of ``input_size`` (w, h)."""
    shapes: dict[nn.Module, list[int]] = {}

    def record(conv, args):
        shapes[conv] = list(args[0].shape[1:])

    hooks = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)]
    w, h = input_size
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 3, h, w))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def onednn_network(net: PoseHRNet, input_size: tuple[int, int]) -> FusedPoseHRNet:
    """``net`` (BatchNorm folded or not; not changed) on oneDNN, weights packed for its call sizes.

    ``input_size`` is (w, h). Raises ``RuntimeError`` where ``available()`` is False.
    """
    if not available():
        raise RuntimeError("this torch has no oneDNN fused convolutions (torch.ops.mkldnn._convolution_pointwise)")
    folded = fuse_conv_bn(net).float().cpu()
    per_crop = conv_input_shapes(folded, input_size)
    early, late = ({conv: [n, *chw] for conv, chw in per_crop.items()} for n in (EARLY_CHUNK, LATE_CHUNK))
    return FusedPoseHRNet(folded, early, late).eval()
