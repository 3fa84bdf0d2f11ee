"""Discriminators of stage-1 training (paper A.3, Eq. 17-19).

- :class:`StyleGAN2Discriminator`: the residual discriminator of StyleGAN2 [33] ("Disc denotes
  a discriminator adopted from [33]"), built from the auto-encoder's own blocks
  (:mod:`float_core.models.stylegan`).
- :class:`MultiScaleDiscriminator`: the paper's "2-scale discriminator" for L_full-adv: one
  StyleGAN2 discriminator on the image and one on a 2x average-pooled copy.
- :class:`ComponentDiscriminator`: the facial-component discriminator of GFPGAN [84] for the
  eye and lip RoIs; its intermediate features psi feed the Gram-matrix feature-style loss.

Channel widths are parameters so that the tiny test configuration stays cheap. The defaults
(``channel_base=16384``, ``max_channels=512``: 32 channels at 512 px doubling down to 512 at
<= 32 px) are StyleGAN2's channel multiplier 1, as LIA [85] (FLOAT's auto-encoder base) and the
motion encoder (:meth:`float_core.config.FloatConfig.channels`) use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.stylegan import DEFAULT_BLUR_KERNEL, ConvLayer, EqualLinear, ResBlock

__all__ = [
    "ComponentDiscriminator",
    "MultiScaleDiscriminator",
    "StyleGAN2Discriminator",
    "minibatch_stddev",
    "stylegan_channels",
]

#: GFPGAN's facial-component discriminator widths (conv1 64, then 128 and 256 after each 2x down).
DEFAULT_COMPONENT_CHANNELS: tuple[int, ...] = (64, 128, 256)


def stylegan_channels(channel_base: int = 16384, max_channels: int = 512) -> Callable[[int], int]:
    """Channels at resolution r: ``min(max_channels, channel_base // r)``, at least 1."""
    if channel_base < 1 or max_channels < 1:
        raise ValueError(f"channel_base and max_channels must be >= 1, got {channel_base}, {max_channels}")
    return lambda r: max(1, min(max_channels, channel_base // r))


def minibatch_stddev(x: Tensor, group_size: int = 4, num_features: int = 1) -> Tensor:
    """Append StyleGAN's minibatch standard-deviation channel(s) to ``x`` (B, C, H, W).

    Samples are split into groups of ``g`` (the largest divisor of B not above ``group_size``,
    so any batch size works; a batch of 5 uses g = 1, a batch of 6 uses g = 3); per group, the
    std over the group of every feature, averaged over channels (split in ``num_features``
    sets) and pixels, is broadcast as extra channel(s). Returns (B, C + num_features, H, W).
    """
    b, c, h, w = x.shape
    if c % num_features:
        raise ValueError(f"channels ({c}) must be divisible by num_features ({num_features})")
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    y = x.reshape(g, -1, num_features, c // num_features, h, w)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # (B/g, F, C/F, H, W)
    y = y.mean(dim=(2, 3, 4)).reshape(-1, num_features, 1, 1)  # (B/g, F, 1, 1)
    y = y.repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator: (B, 3, size, size) in [-1, 1] -> logits (B, 1).

    FromRGB ConvLayer(3, c(size), 1); log2(size) - 2 ResBlocks down to 4x4; minibatch stddev;
    ConvLayer(c(4) + 1, c(4), 3); EqualLinear(c(4) * 16, c(4)) with leaky ReLU; EqualLinear(c(4), 1).

    Args:
        size: input resolution, a power of two >= 4.
        channel_base, max_channels: widths, see :func:`stylegan_channels`.
        stddev_group: minibatch-stddev group size (StyleGAN2: 4).
    """

    def __init__(self, size: int, channel_base: int = 16384, max_channels: int = 512,
                 stddev_group: int = 4, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        self.size = size
        self.stddev_group = stddev_group
        ch = stylegan_channels(channel_base, max_channels)
        convs: list[nn.Module] = [ConvLayer(3, ch(size), 1)]
        for i in range(int(math.log2(size)), 2, -1):
            convs.append(ResBlock(ch(2**i), ch(2 ** (i - 1)), blur_kernel=blur_kernel))
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(ch(4) + 1, ch(4), 3)
        self.final_linear = nn.Sequential(EqualLinear(ch(4) * 4 * 4, ch(4), activation=True),
                                          EqualLinear(ch(4), 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"expected {self.size}x{self.size} images, got {tuple(x.shape[-2:])}")
        out = minibatch_stddev(self.convs(x), self.stddev_group)
        return self.final_linear(self.final_conv(out).flatten(1))


class MultiScaleDiscriminator(nn.Module):
    """The paper's 2-scale discriminator (A.3): StyleGAN2 discriminators on the image and on
    2x, 4x ... average-pooled copies. ``forward`` returns one (B, 1) logit tensor per scale."""

    def __init__(self, size: int, num_scales: int = 2, channel_base: int = 16384, max_channels: int = 512,
                 stddev_group: int = 4):
        super().__init__()
        if num_scales < 1 or size >> (num_scales - 1) < 4:
            raise ValueError(f"{num_scales} scales of a {size}-px image go below 4 px")
        self.discs = nn.ModuleList(
            StyleGAN2Discriminator(size >> k, channel_base, max_channels, stddev_group) for k in range(num_scales))

    def forward(self, x: Tensor) -> list[Tensor]:
        logits = []
        for k, disc in enumerate(self.discs):
            if k:
                x = F.avg_pool2d(x, 2)
            logits.append(disc(x))
        return logits


class ComponentDiscriminator(nn.Module):
    """Facial-component discriminator of GFPGAN [84] for eye / lip RoIs (paper A.3, Eq. 18-19).

    ConvLayer(3, c0, 3); per further width c: ConvLayer(prev, c, 3, downsample) + ConvLayer(c, c, 3);
    a final 3x3 conv to one channel (a patch-logit map). With the default widths (64, 128, 256)
    this is GFPGAN's network exactly. The output of every downsampling stage is one of the
    multi-resolution features psi whose Gram matrices L_x-FSM matches (Eq. 19).

    Args:
        in_size: RoI side; must be divisible by 2^(len(channels) - 1) (8 ... 128 with 3 widths).
        channels: widths of the input conv and of each downsampling stage.
    """

    def __init__(self, in_size: int, channels: Sequence[int] = DEFAULT_COMPONENT_CHANNELS,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"need at least two widths (input conv + one stage), got {tuple(channels)}")
        factor = 2 ** (len(channels) - 1)
        if in_size < factor or in_size % factor:
            raise ValueError(f"RoI size {in_size} must be a positive multiple of {factor} "
                             f"for {len(channels) - 1} downsampling stages")
        self.in_size = in_size
        self.conv_in = ConvLayer(3, channels[0], 3)
        self.stages = nn.ModuleList(
            nn.Sequential(ConvLayer(c_in, c_out, 3, downsample=True, blur_kernel=blur_kernel),
                          ConvLayer(c_out, c_out, 3))
            for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.final_conv = ConvLayer(channels[-1], 1, 3, activate=False)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """RoIs (N, 3, s, s) -> (patch logits (N, 1, s / 2^k, s / 2^k), [psi_1 ... psi_k])."""
        feats = []
        h = self.conv_in(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return self.final_conv(h), feats
