"""StyleGAN2 building blocks of FLOAT's motion auto-encoder (paper Sec. 4.1, A.1).

This is the *reference formulation*: every block computes exactly what the released
checkpoint was trained with (the reference implementation's blocks), stays differentiable,
and is what training uses. Attribute names reproduce the checkpoint's state-dict keys
(``conv.modulation.weight``, ``conv2.0.kernel``, ...), so ``float.pth`` loads unchanged.
The fast inference path lives in :mod:`float_core.models.decoder_inference`.

Conventions (StyleGAN2, Karras et al. 2020):

- *Equalised learning rate*: weights are stored unscaled (N(0, 1) at init) and multiplied
  by ``1 / sqrt(fan_in)`` at every call.
- *FIR filtering*: the separable kernel ``[1, 3, 3, 1]`` (outer product, normalised to
  sum 1) applied with ``upfirdn2d`` semantics: zero-insertion upsampling, padding,
  convolution with the flipped kernel, then decimation.
- *Fused leaky ReLU*: ``leaky_relu(x + b, 0.2) * sqrt(2)`` (the gain keeps the
  activation variance at 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The FIR kernel of every blur/up/down-sampling layer in the checkpoint.
DEFAULT_BLUR_KERNEL: tuple[int, ...] = (1, 3, 3, 1)
#: Negative slope and gain of the fused leaky ReLU.
LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2.0)
#: Added to the squared norm before the demodulation rsqrt (StyleGAN2 Eq. 3).
DEMOD_EPS = 1e-8


# --------------------------------------------------------------------------- functions
def make_fir_kernel(taps: Sequence[float] = DEFAULT_BLUR_KERNEL) -> Tensor:
    """The 2-D FIR kernel: the outer product of ``taps`` with itself, normalised to sum 1."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    if k.ndim != 1 or k.numel() == 0:
        raise ValueError(f"taps must be a non-empty 1-D sequence, got {taps!r}")
    k2 = k[None, :] * k[:, None]
    return k2 / k2.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> Tensor:
    """StyleGAN2's ``upfirdn2d`` (native formulation): upsample, pad, FIR-filter, downsample.

    Args:
        x: (B, C, H, W) input.
        kernel: (kh, kw) FIR kernel; it is flipped, i.e. applied as a true convolution.
        up: zero-insertion upsampling factor (a sample followed by ``up - 1`` zeros).
        down: decimation factor applied after filtering.
        pad: (before, after) padding, identical along height and width; negative
            values crop.

    Returns:
        (B, C, (H * up + pad[0] + pad[1] - kh) // down + 1, same along width).
    """
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    # Treat every channel as an independent single-channel image.
    out = x.reshape(b * c, 1, h, w)
    if up > 1:
        out = out.reshape(b * c, 1, h, 1, w, 1)
        out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
        out = out.reshape(b * c, 1, h * up, w * up)
    p0, p1 = pad
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = out.shape[-2:]
        out = out[:, :, max(-p0, 0):hh - max(-p1, 0), max(-p0, 0):ww - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(out.dtype).reshape(1, 1, kh, kw)
    out = F.conv2d(out, weight)
    if down > 1:
        out = out[:, :, ::down, ::down]
    return out.reshape(b, c, out.shape[-2], out.shape[-1])


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = LEAKY_SLOPE,
                     scale: float = LEAKY_GAIN) -> Tensor:
    """``leaky_relu(x + bias, slope) * scale`` with ``bias`` broadcast along dim 1 (channels)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.reshape(shape), negative_slope) * scale


# --------------------------------------------------------------------------- layers
class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU 0.2 and gain sqrt(2). ``bias``: (1, C, 1, 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: ``weight`` (out, in) used as ``weight / sqrt(in)``.

    With ``activation=True`` the bias goes through :func:`fused_leaky_relu` instead of the
    matmul (as in the reference implementation: leaky ReLU 0.2 of ``x W^T + b``, times sqrt(2)).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight * self.scale
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, weight)
            return fused_leaky_relu(out, bias) if bias is not None else F.leaky_relu(out, LEAKY_SLOPE) * LEAKY_GAIN
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: ``weight`` (out, in, k, k) times ``1 / sqrt(in k k)``."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size * kernel_size)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}"


class Blur(nn.Module):
    """FIR filter with padding ``pad`` (no resampling); ``kernel`` buffer (kh, kw).

    ``upsample_factor`` > 1 multiplies the kernel by factor^2: used after a stride-2
    transposed convolution, whose zero-inserted output has 1/factor^2 of the energy.
    """

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_fir_kernel(kernel) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion then filtering); ``kernel`` buffer is the FIR times factor^2."""

    def __init__(self, kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_fir_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU | LeakyReLU], as an ``nn.Sequential``.

    Keys follow the checkpoint: ``0.weight``, ``1.bias`` without downsampling and
    ``0.kernel``, ``1.weight``, ``2.bias`` with it (the released checkpoint's ConvLayer keys).
    Downsampling blurs with pad ((p+1)//2, p//2), p = 4 - 2 + k - 1, then convolves with
    stride 2 and no padding.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL, bias: bool = True,
                 activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            # With a bias the activation carries it (and the sqrt(2) gain); without one the
            # reference uses a plain leaky ReLU with no gain.
            layers.append(FusedLeakyReLU(out_channel) if bias else nn.LeakyReLU(LEAKY_SLOPE))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Encoder residual block halving the resolution: (conv2(conv1(x)) + skip(x)) / sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel,
                              bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (per-sample weights, run as one grouped conv).

    ``weight`` (1, out, in, k, k), scale ``1/sqrt(in k k)``; ``modulation`` EqualLinear
    (style_dim -> in) with bias initialised to 1. Per sample: w = scale * weight * s; with
    demodulation w *= rsqrt(sum_{in,k,k} w^2 + 1e-8). Upsampling: transposed conv stride 2,
    padding 0, then ``blur`` (FIR times 4).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def modulated_weight(self, style: Tensor) -> Tensor:
        """Per-sample weights (B, out, in, k, k) for styles (B, style_dim)."""
        s = self.modulation(style).reshape(-1, 1, self.in_channel, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4], keepdim=True) + DEMOD_EPS)
        return weight

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        weight = self.modulated_weight(style)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            # conv_transpose2d wants (in, out/groups, k, k) per group.
            weight = weight.transpose(1, 2).reshape(b * c, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = self.blur(out.reshape(b, self.out_channel, out.shape[-2], out.shape[-1]))
        else:
            weight = weight.reshape(b * self.out_channel, c, k, k)
            out = F.conv2d(x, weight, padding=self.padding, groups=b)
            out = out.reshape(b, self.out_channel, h, w)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")


class NoiseInjection(nn.Module):
    """Per-layer noise strength ``weight`` (1). FLOAT never injects noise: without ``noise`` it is the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        return x if noise is None else x + self.weight * noise


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection (inactive) -> FusedLeakyReLU."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
                 demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    demodulate=demodulate, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network: ``input`` (1, C, size, size)."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class ToRGB(nn.Module):
    """RGB head: ConvLayer(c, 3, 1) (bias-free conv then FusedLeakyReLU(3)) + ``bias``, plus the
    FIR-upsampled RGB of the previous level when given (as in the reference decoder).

    Unlike StyleGAN2's ToRGB it is not modulated: the checkpoint's ``conv`` is a plain ConvLayer.
    """

    def __init__(self, in_channel: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ConvLayer(in_channel, 3, 1)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def identity_grid(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """The (1, H, W, 2) identity sampling grid of ``grid_sample`` (channel 0 = x, 1 = y).

    Built like the reference: float64 ``linspace(-1, 1, n)`` cast to float32.
    """
    ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float64, device=device).float()
    xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float64, device=device).float()
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).unsqueeze(0)


class ToFlow(nn.Module):
    """Flow head of one decoder level: predicts a warp + mask and warps an encoder feature.

    From the 3 raw channels o = conv(x, style) + bias (+ upsampled previous o):
    grid = tanh(o[:, :2]) + identity grid, mask = sigmoid(o[:, 2]);
    feat_warp = grid_sample(feat, grid) * mask and the stream continues as
    feat_warp + x (1 - mask) (paper A.1; the reference implementation's ToFlow).
    """

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)

    def forward(self, x: Tensor, style: Tensor, feat: Tensor,
                skip: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns ``(feat_warp, out, raw, flow)``: warped masked feature, continued stream,
        raw 3-channel output (the next level's skip) and the sampling grid (B, H, W, 2)."""
        raw = self.conv(x, style) + self.bias
        if skip is not None:
            raw = raw + self.upsample(skip)
        b, _, h, w = raw.shape
        flow = torch.tanh(raw[:, 0:2]).permute(0, 2, 3, 1) + identity_grid(h, w, raw.device).to(raw.dtype)
        mask = torch.sigmoid(raw[:, 2:3])
        if feat.shape[0] != b:
            feat = feat.expand(b, -1, -1, -1)
        feat_warp = F.grid_sample(feat, flow, mode="bilinear", padding_mode="zeros",
                                  align_corners=False) * mask
        out = feat_warp + x * (1 - mask)
        return feat_warp, out, raw, flow


@torch.no_grad()
def perturb_constant_init_(module: nn.Module, std: float = 0.1, generator: torch.Generator | None = None) -> nn.Module:
    """Add N(0, std^2) noise to every parameter initialised to a constant (biases, the
    modulation bias of 1, noise strengths) so that no term vanishes in tests and benchmarks.

    Mirrors how the reference fixtures were made (tests/fixtures/reference/README.md). Returns ``module``.
    """
    for name, param in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias" or name.endswith("noise.weight"):
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype, device="cpu")
            param.add_(noise.to(param.device) * std)
    return module
