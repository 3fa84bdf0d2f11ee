"""Motion latent auto-encoder (paper Sec. 4.1 and A.1; the released checkpoint's layout).

An image S is encoded into an identity latent w_{S->r} in R^d, a feature pyramid, and M
motion coefficients lambda(S). The motion latent of coefficients lambda is
w_{r->S} = sum_m lambda_m v_m with an orthonormal basis V = {v_m} (paper Eq. 1),
obtained as the QR decomposition of a learned (d, M) matrix. The decoder (a StyleGAN2
generator with flow-warping heads) renders w = w_{S->r} + w_{r->D}: the same style w
modulates every layer, and at each resolution a predicted flow warps the source feature
pyramid into the generator stream.

Module and attribute names reproduce the released checkpoint's ``motion_autoencoder.*`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..config import FloatConfig
from .stylegan import ConstantInput, ConvLayer, EqualConv2d, EqualLinear, ResBlock, StyledConv, ToFlow, ToRGB

#: Added to the direction matrix before its QR decomposition, as in the reference.
QR_EPS = 1e-8


def _check_size(size: int) -> int:
    if size < 4 or size & (size - 1):
        raise ValueError(f"size must be a power of two >= 4, got {size}")
    return int(math.log2(size))


class EncoderApp(nn.Module):
    """Appearance network: ConvLayer(3, c(size), 1), log2(size) - 2 downsampling ResBlocks to
    4x4, then EqualConv2d(c(4), dim, 4) to a 1x1 map. ``convs`` holds all of them in order."""

    def __init__(self, size: int, dim: int, channels: Callable[[int], int]):
        super().__init__()
        log_size = _check_size(size)
        convs: list[nn.Module] = [ConvLayer(3, channels(size), 1)]
        for i in range(log_size, 2, -1):
            convs.append(ResBlock(channels(2**i), channels(2 ** (i - 1))))
        convs.append(EqualConv2d(channels(4), dim, 4, padding=0, bias=False))
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Returns h (B, dim) and the feature pyramid, low to high resolution (8 ... size).

        The pyramid is every intermediate output except the final 1x1 code and the 4x4
        map: the ResBlock outputs at 8 ... size/2 and the first ConvLayer's at full size.
        """
        outs = []
        h = x
        for conv in self.convs:
            h = conv(h)
            outs.append(h)
        return h.flatten(1), outs[::-1][2:]


class Encoder(nn.Module):
    """Motion encoder: ``net_app`` (identity latent + pyramid) and ``fc`` (5 EqualLinear, no
    activations) mapping the latent to the M motion coefficients lambda."""

    def __init__(self, size: int, dim: int, dim_motion: int,
                 channels: Callable[[int], int] = FloatConfig.official().channels):
        super().__init__()
        self.net_app = EncoderApp(size, dim, channels)
        self.fc = nn.Sequential(*[EqualLinear(dim, dim) for _ in range(4)], EqualLinear(dim, dim_motion))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(B, 3, size, size) in [-1, 1] -> (h (B, dim), lambda (B, dim_motion), pyramid)."""
        h, feats = self.net_app(x)
        return h, self.fc(h), feats


class Direction(nn.Module):
    """Learned motion directions: ``weight`` (d, M); basis Q = reduced QR of (weight + 1e-8).

    Q is recomputed from the weight at every call (as the reference, so it follows training
    updates); LAPACK's sign convention, R's diagonal not forced positive.
    """

    def __init__(self, style_dim: int, motion_dim: int):
        super().__init__()
        if motion_dim > style_dim:
            raise ValueError(
                f"motion_dim ({motion_dim}) must be <= style_dim ({style_dim}): M orthonormal "
                "directions need M <= d")
        self.weight = nn.Parameter(torch.randn(style_dim, motion_dim))

    def basis(self) -> Tensor:
        """The orthonormal basis Q (d, M), columns v_m."""
        q, _ = torch.linalg.qr(self.weight + QR_EPS)
        return q

    def forward(self, alpha: Tensor | None = None) -> Tensor:
        """``alpha`` (..., M) -> sum_m alpha_m v_m (..., d); without ``alpha`` the basis (d, M)."""
        q = self.basis()
        if alpha is None:
            return q
        return alpha @ q.T


class Synthesis(nn.Module):
    """Flow-warping StyleGAN2 decoder (``dec``).

    ``input`` constant 4x4 -> ``conv1``; then per resolution 8 ... size: ``convs[2i]``
    (upsampling StyledConv), ``convs[2i+1]``, ``to_flows[i]`` (warps pyramid level i),
    ``to_rgbs[i]`` on the warped feature plus the upsampled previous RGB. ``to_rgb1`` is
    kept for the checkpoint's keys but never used (nor by the reference implementation).
    """

    def __init__(self, size: int, style_dim: int, motion_dim: int,
                 channels: Callable[[int], int] = FloatConfig.official().channels,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        log_size = _check_size(size)
        self.size = size
        self.style_dim = style_dim
        self.direction = Direction(style_dim, motion_dim)
        self.input = ConstantInput(channels(4))
        self.conv1 = StyledConv(channels(4), channels(4), 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(channels(4), upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.to_flows = nn.ModuleList()
        in_channel = channels(4)
        for i in range(3, log_size + 1):
            out_channel = channels(2**i)
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, blur_kernel=blur_kernel))
            self.to_flows.append(ToFlow(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel

    @property
    def num_levels(self) -> int:
        """Number of warped resolutions (official: 7, i.e. 8 ... 512)."""
        return len(self.to_flows)

    def forward(self, latent: Tensor, feats: Sequence[Tensor]) -> Tensor:
        """Render latents (K, d) with the pyramid ``feats`` (low to high, batch 1 or K).

        Returns (K, 3, size, size), unclamped.
        """
        if latent.ndim != 2 or latent.shape[1] != self.style_dim:
            raise ValueError(f"latent must have shape (K, {self.style_dim}), got {tuple(latent.shape)}")
        if len(feats) != self.num_levels:
            raise ValueError(f"feats must hold {self.num_levels} pyramid levels, got {len(feats)}")
        k = latent.shape[0]
        out = self.conv1(self.input(k), latent)
        skip_rgb: Tensor | None = None
        skip_flow: Tensor | None = None
        for i, feat in enumerate(feats):
            if feat.shape[0] not in (1, k):
                raise ValueError(f"feats[{i}] must have batch 1 or {k}, got {feat.shape[0]}")
            out = self.convs[2 * i](out, latent)
            out = self.convs[2 * i + 1](out, latent)
            feat_warp, out, skip_flow, _ = self.to_flows[i](out, latent, feat, skip_flow)
            skip_rgb = self.to_rgbs[i](feat_warp, skip_rgb)
        assert skip_rgb is not None  # num_levels >= 1 is guaranteed by size >= 8 in MotionAutoEncoder
        return skip_rgb


class MotionAutoEncoder(nn.Module):
    """The motion latent auto-encoder: ``enc`` (Encoder) and ``dec`` (Synthesis)."""

    def __init__(self, config: FloatConfig):
        super().__init__()
        if config.image_size < 8:
            raise ValueError(f"config.image_size must be >= 8 for the auto-encoder, got {config.image_size}")
        self.config = config
        self.enc = Encoder(config.image_size, config.style_dim, config.motion_dim, config.channels)
        self.dec = Synthesis(config.image_size, config.style_dim, config.motion_dim, config.channels)

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Image (B, 3, H, W) in [-1, 1] -> (identity w_{S->r} (B, d), lambda (B, M), pyramid).

        The pyramid is ordered low to high resolution (8, 16, ..., H).
        """
        size = self.config.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            raise ValueError(f"image must have shape (B, 3, {size}, {size}), got {tuple(image.shape)}")
        return self.enc(image)

    def basis(self) -> Tensor:
        """The orthonormal motion basis Q (d, M)."""
        return self.dec.direction.basis()

    def lambda_to_motion(self, lam: Tensor) -> Tensor:
        """Motion coefficients (..., M) -> motion latent Q lambda (..., d) (paper Eq. 1)."""
        if lam.shape[-1] != self.config.motion_dim:
            raise ValueError(f"lam must end with {self.config.motion_dim} coefficients, got {tuple(lam.shape)}")
        return self.dec.direction(lam)

    def decode(self, latent: Tensor, feats: Sequence[Tensor]) -> Tensor:
        """Latents w = w_{S->r} + w_{r->D} (K, d) and the source pyramid -> frames (K, 3, H, W), unclamped."""
        return self.dec(latent, feats)

    def forward(self, source: Tensor, driving: Tensor) -> Tensor:
        """Reconstruct ``driving`` from ``source`` (training, paper A.1/A.3):
        dec(w_{S->r} + Q lambda(D), pyramid(S))."""
        if source.shape != driving.shape:
            raise ValueError(f"source and driving must have the same shape, got {tuple(source.shape)} "
                             f"and {tuple(driving.shape)}")
        b = source.shape[0]
        identity, lam, feats = self.encode(torch.cat([source, driving]))  # one pass for both
        latent = identity[:b] + self.lambda_to_motion(lam[b:])
        return self.decode(latent, [f[:b] for f in feats])
