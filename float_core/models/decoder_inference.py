"""Fast inference path of the motion decoder (``Synthesis``), numerically equal to it.

:class:`~float_core.models.motion_autoencoder.Synthesis` is the reference formulation
(per-sample weights as a grouped convolution, FIR filters as pad + reshape + single-channel
convolutions). Rendering a video calls it for every frame, so this module re-expresses the
same arithmetic in a cheaper form (measurements in docs/performance.md):

- Weights are snapshotted once: the equalised-lr scales are folded in, the modulation
  layers become plain affine maps, the sqrt(2) activation gain is folded into the conv
  weights and biases (leaky ReLU is positively homogeneous), and the demodulation
  coefficient rsqrt(sum_{i,k} (W_oik s_i)^2) becomes one matmul s^2 @ sum_k W_oik^2.
- FIR filters run as depthwise convolutions (the 2x upsampling of the 3-channel skips as a
  depthwise stride-2 transposed convolution), with the layer bias folded into them.
- Low resolutions (<= ``batch_max_resolution``) batch all frames: inputs are scaled by the
  style, one shared convolution runs, outputs are scaled by the demodulation (StyleGAN2's
  non-fused form). Higher resolutions go frame by frame with per-frame folded weights,
  which avoids two full-size elementwise passes per layer.
- The transposed convolutions, FIR filters and grid_sample features are channels_last
  (fastest there); the float32 3x3 convolutions up to 128 px run NCHW, as accurate as the
  reference's (channels_last fp32 3x3 is ~3-4x less accurate in oneDNN with many channels,
  see ``NCHW_MAX_RESOLUTION``).
- The flow head (1x1 conv, bias, upsampled flow skip, tanh, sigmoid, grid, grid_sample) is
  bit-identical to the reference for identical inputs: grid_sample amplifies grid rounding
  by ~W/2 times the feature slope. Activations are in place, ``to_rgb1`` and the last level's
  stream mix (never used by the image) are skipped, and the 3-channel RGB 1x1 conv runs
  before the mask (conv(g * m) = m * conv(g) for a per-pixel scalar m). At the last level,
  whose warped features feed only that fixed conv, the source is projected to RGB once per
  call and 3 channels are warped instead of C (warp and 1x1 conv commute; ~80 ms CPU per
  512 px frame less).
- In bfloat16 / float16 mode the convolutions run in that dtype while the flow head (1x1
  conv, tanh, sigmoid, grid_sample) and the RGB head stay in float32: low precision there
  gives visible warping errors. The convolutions of the levels up to
  ``float32_max_resolution`` stay float32 too: an error there moves the flow of every later
  level (the flow skip is upsampled into each), while they hold little of the compute.

Equality with the reference is tested in ``tests/test_decoder_inference.py``.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .motion_autoencoder import Synthesis
from .stylegan import (DEMOD_EPS, LEAKY_GAIN, LEAKY_SLOPE, EqualLinear, StyledConv, ToFlow, ToRGB, identity_grid,
                       upfirdn2d)

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: Set to "0" to leave the C allocator's settings alone (see :func:`keep_freed_memory`).
MALLOC_TUNING_ENV = "FLOAT_MALLOC_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)
_malloc_tuned = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of handing it back to the kernel.

    The 512 px levels create tensors of 32 MiB and more (32 channels x 512 x 512 float32).
    glibc serves blocks above its mmap threshold (32 MiB at most) with a fresh ``mmap``, so
    each such tensor costs ~8000 page faults when first written. Measured on the 2-core
    development VM (official decoder, 1 thread): 33k page faults and ~150 ms of system time
    per frame, and the memory-bound glue ops (lerp, FIR, copies) 3-7x slower. With mmap
    allocations off (``M_MMAP_MAX = 0``) and no automatic trimming, big blocks come from the
    heap and are reused: 0 page faults, ~15 ms of system time per frame. This is what the
    PyTorch CPU tuning guide gets by preloading jemalloc/tcmalloc, without the preload.

    Process-wide and idempotent; freed memory stays reserved by the process for reuse.
    Applies on Linux with glibc only (returns whether it did); ``FLOAT_MALLOC_TUNING=0``
    turns it off.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if os.environ.get(MALLOC_TUNING_ENV, "1") == "0" or platform.system() != "Linux" \
            or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    _malloc_tuned = bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _malloc_tuned


# --------------------------------------------------------------------------- snapshots
def _snap(t: Tensor) -> Tensor:
    """A float32 copy, detached from the module (the decoder is a snapshot, not a view)."""
    return t.detach().to(torch.float32, copy=True)


def _affine(layer: EqualLinear) -> tuple[Tensor, Tensor]:
    """An EqualLinear (no activation) as (weight (out, in), bias (out,)) with scales folded in."""
    if layer.activation:
        raise ValueError("modulation layers must not have an activation")
    w = _snap(layer.weight * layer.scale)
    b = _snap(layer.bias * layer.lr_mul) if layer.bias is not None else torch.zeros_like(w[:, 0])
    return w, b


@dataclass(frozen=True)
class _StyledConvSpec:
    """A StyledConv with every constant folded (see module docstring)."""

    weight: Tensor        # (out, in, k, k) float32, equalised-lr scale folded
    weight_sq: Tensor     # (in, out) float32: sum over k of weight^2, for demodulation
    mod_weight: Tensor    # (in, d)
    mod_bias: Tensor      # (in,)
    bias: Tensor          # (out,) activation bias times sqrt(2)
    upsample: bool
    blur: Tensor | None   # (out, 1, kh, kw) depthwise FIR (times 4) for upsampling layers
    blur_pad: tuple[int, int]
    compute_weight: Tensor  # the conv weight as the batched (low-resolution) path calls it
    dtype: torch.dtype      # the convolution's compute dtype

    @classmethod
    def from_module(cls, layer: StyledConv, dtype: torch.dtype) -> "_StyledConvSpec":
        conv = layer.conv
        if not conv.demodulate:
            raise ValueError("StyledConv layers of the decoder must demodulate")
        weight = _snap(conv.weight[0] * conv.scale)
        mod_w, mod_b = _affine(conv.modulation)
        blur, pad = None, (0, 0)
        if conv.upsample:
            # upfirdn2d convolves with the flipped kernel; conv2d correlates.
            kernel = torch.flip(_snap(conv.blur.kernel), [0, 1])
            blur = kernel.expand(weight.shape[0], 1, *kernel.shape).contiguous()
            pad = conv.blur.pad
        return cls(weight=weight, weight_sq=weight.pow(2).sum([2, 3]).T.contiguous(), mod_weight=mod_w,
                   mod_bias=mod_b, bias=(_snap(layer.activate.bias).flatten() * LEAKY_GAIN),
                   upsample=conv.upsample, blur=blur, blur_pad=pad,
                   compute_weight=_conv_layout(weight, conv.upsample, dtype, resolution=0), dtype=dtype)

    def styles(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame input scales s (K, in) and output scales rsqrt(...) * sqrt(2) (K, out)."""
        s = torch.addmm(self.mod_bias, latents, self.mod_weight.T)
        demod = torch.rsqrt(s.pow(2) @ self.weight_sq + DEMOD_EPS) * LEAKY_GAIN
        return s, demod


@dataclass(frozen=True)
class _HeadSpec:
    """One level's ToFlow and ToRGB, folded."""

    flow_weight: Tensor   # (3, C) equalised-lr scale folded (the conv does not demodulate)
    flow_mod_weight: Tensor  # (C, d)
    flow_mod_bias: Tensor    # (C,)
    flow_bias: Tensor     # (3,)
    rgb_weight: Tensor    # (3, C)
    rgb_act_bias: Tensor  # (3,) FusedLeakyReLU bias of ToRGB.conv
    rgb_bias: Tensor      # (3,) ToRGB.bias
    up_kernel: Tensor     # (3, 1, 4, 4) FIR (times 4) for the RGB skip, as a depthwise transposed conv
    flow_up_kernel: Tensor  # (4, 4) the same FIR for the flow skip, applied exactly as the reference
    flow_up_pad: tuple[int, int]

    @classmethod
    def from_modules(cls, to_flow: ToFlow, to_rgb: ToRGB) -> "_HeadSpec":
        fconv = to_flow.conv
        flow_w = _snap(fconv.weight[0, :, :, 0, 0] * fconv.scale)
        mod_w, mod_b = _affine(fconv.modulation)
        rgb_conv, rgb_act = to_rgb.conv[0], to_rgb.conv[1]
        if rgb_conv.weight.shape[-1] != 1 or rgb_conv.bias is not None:
            raise ValueError("ToRGB.conv must be a bias-free 1x1 EqualConv2d followed by FusedLeakyReLU")
        up = to_flow.upsample
        if up.factor != 2 or up.kernel.shape != (4, 4) or up.pad != (2, 1):
            raise ValueError("the fast decoder supports the [1, 3, 3, 1] FIR with factor 2 only")
        # upfirdn2d(up=2, pad=(2, 1)) with a 4-tap kernel == conv_transpose2d(stride 2, padding 1)
        # with the same (unflipped) kernel: both compute out[o] = sum_i x[i] k[o + 1 - 2 i].
        kernel = _snap(up.kernel)
        return cls(
            flow_weight=flow_w, flow_mod_weight=mod_w, flow_mod_bias=mod_b,
            flow_bias=_snap(to_flow.bias).flatten(),
            rgb_weight=_snap(rgb_conv.weight[:, :, 0, 0] * rgb_conv.scale),
            rgb_act_bias=_snap(rgb_act.bias).flatten(), rgb_bias=_snap(to_rgb.bias).flatten(),
            up_kernel=kernel.expand(3, 1, 4, 4).contiguous(), flow_up_kernel=kernel, flow_up_pad=up.pad)

    def upsample(self, skip: Tensor) -> Tensor:
        return F.conv_transpose2d(skip, self.up_kernel, stride=2, padding=1, groups=3)

    def upsample_flow(self, skip: Tensor) -> Tensor:
        """The flow skip upsampled with the reference's own ``upfirdn2d``: bit-identical raw
        flow outputs for identical inputs (grid_sample amplifies any last-bit difference of the
        grid by ~W/2 times the feature slope). A 3-channel map, so the slower formulation is cheap."""
        return upfirdn2d(skip.contiguous(), self.flow_up_kernel, up=2, pad=self.flow_up_pad)


# --------------------------------------------------------------------------- helpers
#: float32 3x3 (non-upsampling) convolutions up to this resolution run NCHW. oneDNN's
#: channels_last fp32 3x3 kernel is ~3-4x less accurate with many channels (relative error vs
#: float64 ~7e-7 against ~1.7e-7 for NCHW, which is what the reference's grouped conv gets, at
#: 512 channels; 3.8e-7 vs 1.7e-7 at 128) and the decoder's chained warps amplify that. NCHW
#: costs ~nothing up to 64 px and +16 ms/frame at 128, but is 2-3x slower at 256/512 (32-64
#: channels, where channels_last is nearly as accurate), so those stay channels_last.
NCHW_MAX_RESOLUTION = 128

#: By default a level batches the frames of a call when its 3x3 convolution costs less than
#: this many multiply-adds per frame (the CPU's choice; CUDA batches every level). Below it a
#: frame's convolution is small and per-call overhead dominates, so batching pays (the tiny
#: model, every level batched: 3.0 ms per frame against 4.1 with its 32 px level frame by
#: frame); above it a frame is a large matmul on its own. A preview must decode its render
#: batch's batched levels for every frame of the batch to equal the render bit for bit, so
#: batching only the cheap levels keeps it cheap: at official size (levels up to 16 px
#: batched, 0.6 G multiply-adds per frame at 16 px, 2.4 G at 32 px), float32, EPYC-AVX2, a
#: render took 418-470 ms per frame (2 threads) against 425-455 ms with 32 px batched too,
#: and a preview 0.54-0.61 s against 0.79-1.05 s.
BATCH_MAX_FRAME_MACS = 1e9

#: Default ``float32_max_resolution`` of a low-precision decoder: levels up to 16 px (~5 % of
#: the official decoder's FLOPs) stay float32. Measured at official size (float_core.precision):
#: bf16 frame PSNR vs float32, min / mean over 4 frames: 39.9 / 47.5 dB with every level in
#: bf16, 45.6 / 50.2 up to 8 px, 46.0 / 51.7 up to 16 px, 47.5 / 53.7 up to 32 px (~21 %).
LOW_PRECISION_FLOAT32_MAX_RESOLUTION = 16


def _conv_format(upsample: bool, dtype: torch.dtype, resolution: int) -> torch.memory_format:
    """Memory format of a conv's input and weight (see NCHW_MAX_RESOLUTION). Transposed convs
    are channels_last (several times faster, equally accurate); bf16 is channels_last throughout."""
    if upsample or dtype != torch.float32 or resolution > NCHW_MAX_RESOLUTION:
        return torch.channels_last
    return torch.contiguous_format


def _conv_layout(weight: Tensor, upsample: bool, dtype: torch.dtype, resolution: int) -> Tensor:
    """A (out, in, k, k) weight in the layout/dtype the conv call wants at ``resolution``
    (conv_transpose2d takes (in, out, k, k))."""
    fmt = _conv_format(upsample, dtype, resolution)
    if upsample:
        weight = weight.transpose(0, 1)
    # In the activations' layout, so oneDNN does not reorder the weight at every call.
    return weight.to(dtype).contiguous(memory_format=fmt)


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _conv1x1(x: Tensor, weight: Tensor) -> Tensor:
    """1x1 conv of (B, C, H, W) with per-sample weights (B, O, C) -> (B, O, H, W) float32.

    One batched matmul, on whichever memory layout ``x`` has (channels_last or contiguous),
    so that no full-size copy is made.
    """
    b, c, h, w = x.shape
    weight = weight.to(torch.float32)
    if x.is_contiguous(memory_format=torch.channels_last):
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        return torch.bmm(rows.to(weight.dtype), weight.transpose(1, 2)).reshape(b, h, w, -1).permute(0, 3, 1, 2)
    return torch.bmm(weight, x.reshape(b, c, h * w).to(weight.dtype)).reshape(b, -1, h, w)


class InferenceDecoder:
    """Fast, inference-only equivalent of a :class:`Synthesis` decoder.

    Args:
        synthesis: the decoder to snapshot. Later changes to its weights are not seen:
            build a new InferenceDecoder after loading new weights.
        dtype: ``torch.float32`` (matches the reference to float32 noise), ``torch.bfloat16``
            or ``torch.float16`` (convolutions in that dtype, flow/RGB heads in float32).
        batch_max_resolution: levels up to this resolution batch all frames; higher
            ones run frame by frame with per-frame folded weights (default: the levels whose
            3x3 convolution costs less than :data:`BATCH_MAX_FRAME_MACS` per frame, measured).
        float32_max_resolution: with a low-precision ``dtype``, the convolutions of the
            levels up to this resolution still run in float32 (0: none). See
            :data:`LOW_PRECISION_FLOAT32_MAX_RESOLUTION` for the measured default.

    The device is that of the synthesis weights.
    """

    def __init__(self, synthesis: Synthesis, dtype: torch.dtype = torch.float32,
                 batch_max_resolution: int | None = None, float32_max_resolution: int | None = None):
        if dtype not in _SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be one of {_SUPPORTED_DTYPES}, got {dtype}")
        if batch_max_resolution is not None and batch_max_resolution < 4:
            raise ValueError(f"batch_max_resolution must be >= 4, got {batch_max_resolution}")
        if float32_max_resolution is None:
            float32_max_resolution = LOW_PRECISION_FLOAT32_MAX_RESOLUTION
        if float32_max_resolution < 0:
            raise ValueError(f"float32_max_resolution must be >= 0, got {float32_max_resolution}")
        self.dtype = dtype
        self.float32_max_resolution = float32_max_resolution
        self.style_dim = synthesis.style_dim
        self.size = synthesis.size
        self.device = synthesis.input.input.device
        if self.device.type == "cpu":
            keep_freed_memory()
        with torch.no_grad():
            self.const = _snap(synthesis.input.input)
            self.heads = [_HeadSpec.from_modules(f, r) for f, r in zip(synthesis.to_flows, synthesis.to_rgbs)]
            self.resolutions = [2 ** (3 + i) for i in range(len(self.heads))]
            self.conv1 = _StyledConvSpec.from_module(synthesis.conv1, self.conv_dtype(4))
            # convs[2 i] (upsampling) and convs[2 i + 1] output level i's resolution
            self.convs = [_StyledConvSpec.from_module(c, self.conv_dtype(self.resolutions[j // 2]))
                          for j, c in enumerate(synthesis.convs)]
        if batch_max_resolution is None:  # up to the first level whose convolution per frame is not cheap
            batch_max_resolution = 4
            for r, conv in zip(self.resolutions, self.convs[1::2]):
                if r * r * conv.weight.numel() >= BATCH_MAX_FRAME_MACS:
                    break
                batch_max_resolution = r
        self.batch_max_resolution = batch_max_resolution
        self.grids = {r: identity_grid(r, r, self.device) for r in self.resolutions}

    def conv_dtype(self, resolution: int) -> torch.dtype:
        """The compute dtype of the convolutions that output ``resolution``."""
        return torch.float32 if resolution <= self.float32_max_resolution else self.dtype

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def __call__(self, latents: Tensor, feats: Sequence[Tensor], keep: int | None = None) -> Tensor:
        """Render latents (K, d) with the source pyramid (low to high, batch 1).

        Returns (K, 3, size, size) float32 frames, unclamped; with ``keep`` only frame ``keep``
        of the batch, (1, 3, size, size), computed exactly as in the batch of K (the batched
        levels run for all K frames, the frame-by-frame levels for that frame alone), so a
        single-frame preview equals the frame a K-frame render delivers, bit for bit, in every
        precision: a batch of K and a batch of 1 would round differently.
        """
        if latents.ndim != 2 or latents.shape[1] != self.style_dim:
            raise ValueError(f"latents must have shape (K, {self.style_dim}), got {tuple(latents.shape)}")
        if len(feats) != len(self.heads):
            raise ValueError(f"feats must hold {len(self.heads)} pyramid levels, got {len(feats)}")
        for i, (f, r) in enumerate(zip(feats, self.resolutions)):
            if f.ndim != 4 or f.shape[0] != 1 or f.shape[-1] != r:
                raise ValueError(f"feats[{i}] must have shape (1, C, {r}, {r}), got {tuple(f.shape)}")
        latents = latents.to(self.device, torch.float32)
        feats = [_channels_last(f.to(self.device, torch.float32)) for f in feats]
        # The last level's warped features only feed the RGB head, a fixed (unmodulated) 1x1
        # conv. Warping and a 1x1 conv are both linear per channel, conv(warp(f)) = warp(conv(f)),
        # so project the source once per call and warp 3 channels instead of C (see _heads).
        feats[-1] = _conv1x1(feats[-1], self.heads[-1].rgb_weight[None]).contiguous()
        k = latents.shape[0]
        if keep is not None and not 0 <= keep < k:
            raise ValueError(f"keep must be a frame of the batch (0..{k - 1}), got {keep}")

        # Every layer's styles, for all frames at once (tiny matmuls).
        conv1_styles = self.conv1.styles(latents)
        conv_styles = [c.styles(latents) for c in self.convs]
        flow_styles = [torch.addmm(h.flow_mod_bias, latents, h.flow_mod_weight.T) for h in self.heads]

        # Low resolutions: all frames in one batch.
        x = self._batched_conv(self.const.expand(k, -1, -1, -1), self.conv1, *conv1_styles)
        x = _channels_last(x)
        rgb = flow = None
        n_low = sum(r <= self.batch_max_resolution for r in self.resolutions)
        for i in range(n_low):
            x = self._batched_conv(x, self.convs[2 * i], *conv_styles[2 * i])
            x = self._batched_conv(x, self.convs[2 * i + 1], *conv_styles[2 * i + 1])
            x, rgb, flow = self._heads(i, x, flow_styles[i], feats[i], rgb, flow, last=i == len(self.heads) - 1)
        if n_low == len(self.heads):
            return (rgb if keep is None else rgb[keep:keep + 1]).float().contiguous()

        # High resolutions: frame by frame, with per-frame folded weights.
        frames = []
        for j in (range(k) if keep is None else (keep,)):
            xj = x[j:j + 1]
            rgbj = None if rgb is None else rgb[j:j + 1]
            flowj = None if flow is None else flow[j:j + 1]
            for i in range(n_low, len(self.heads)):
                xj = self._frame_conv(xj, self.convs[2 * i], conv_styles[2 * i][0][j], conv_styles[2 * i][1][j])
                xj = self._frame_conv(xj, self.convs[2 * i + 1], conv_styles[2 * i + 1][0][j],
                                      conv_styles[2 * i + 1][1][j])
                xj, rgbj, flowj = self._heads(i, xj, flow_styles[i][j:j + 1], feats[i], rgbj, flowj,
                                              last=i == len(self.heads) - 1)
            frames.append(rgbj)
        return torch.cat(frames).float().contiguous()

    # ------------------------------------------------------------------ layers
    def _finish(self, y: Tensor, spec: _StyledConvSpec, scale: Tensor | None) -> Tensor:
        """Blur (upsampling layers), per-(frame, channel) output scale, bias, leaky ReLU in place."""
        if scale is not None:
            y = y.mul_(scale.to(y.dtype)[:, :, None, None])
        bias = spec.bias.to(y.dtype)
        if spec.upsample:
            p0, p1 = spec.blur_pad
            if p0 != p1:
                y, p0 = F.pad(y, [p0, p1, p0, p1]), 0
            # The FIR is linear per channel, so the output scale commutes with it and the
            # layer bias rides on the depthwise conv.
            y = F.conv2d(y, spec.blur.to(y.dtype), bias, padding=p0, groups=y.shape[1])
        elif scale is not None:
            y = y.add_(bias[None, :, None, None])
        return F.leaky_relu_(y, LEAKY_SLOPE)

    def _batched_conv(self, x: Tensor, spec: _StyledConvSpec, s: Tensor, demod: Tensor) -> Tensor:
        """Modulate inputs, one shared conv for all frames, demodulate outputs."""
        x = x.to(spec.dtype) * s.to(spec.dtype)[:, :, None, None]
        weight = spec.compute_weight
        if spec.upsample:
            y = F.conv_transpose2d(x, weight, stride=2)
        else:
            x = x.contiguous(memory_format=_conv_format(False, spec.dtype, 0))
            y = F.conv2d(x, weight, padding=spec.weight.shape[-1] // 2)
        return self._finish(y, spec, demod)

    def _frame_conv(self, x: Tensor, spec: _StyledConvSpec, s: Tensor, demod: Tensor) -> Tensor:
        """One frame: fold style, demodulation and gain into the weight (and bias into the conv)."""
        res = x.shape[-1] * (2 if spec.upsample else 1)
        weight = _conv_layout(spec.weight * s[None, :, None, None] * demod[:, None, None, None], spec.upsample,
                              spec.dtype, res)
        x = x.to(spec.dtype)
        if spec.upsample:
            return self._finish(F.conv_transpose2d(x, weight, stride=2), spec, None)
        x = x.contiguous(memory_format=_conv_format(False, spec.dtype, res))
        y = F.conv2d(x, weight, spec.bias.to(spec.dtype),
                     padding=spec.weight.shape[-1] // 2)
        return F.leaky_relu_(y, LEAKY_SLOPE)

    def _heads(self, i: int, x: Tensor, flow_style: Tensor, feat: Tensor, rgb: Tensor | None,
               flow: Tensor | None, last: bool) -> tuple[Tensor, Tensor, Tensor]:
        """ToFlow + ToRGB of level i (float32). Returns (stream, rgb, raw flow output)."""
        head = self.heads[i]
        b, _, h, w = x.shape
        raw = _conv1x1(x, head.flow_weight[None] * flow_style[:, None, :]) + head.flow_bias[None, :, None, None]
        if flow is not None:
            raw = raw + head.upsample_flow(flow)
        grid = torch.tanh(raw[:, 0:2]).permute(0, 2, 3, 1) + self.grids[h]
        mask = torch.sigmoid(raw[:, 2:3])
        # channels_last features make grid_sample parallel and several times faster on CPU
        # (splitting rows into a batch of 2 gave no measurable gain on top of that).
        sampled = F.grid_sample(feat.expand(b, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        # RGB: ConvLayer(c, 3, 1) on sampled * mask == mask * conv(sampled); at the last level
        # ``feat`` is already the RGB projection of the source (see __call__).
        pre = (sampled if last else _conv1x1(sampled, head.rgb_weight.expand(b, -1, -1))).mul_(mask)
        out_rgb = F.leaky_relu_(pre.add_(head.rgb_act_bias[None, :, None, None]), LEAKY_SLOPE)
        out_rgb = out_rgb.mul_(LEAKY_GAIN).add_(head.rgb_bias[None, :, None, None])
        if rgb is not None:
            out_rgb = out_rgb.add_(head.upsample(rgb))
        if last:
            return x, out_rgb, raw  # the stream after the last level is never used
        # stream = sampled * mask + x * (1 - mask) = x + mask * (sampled - x)
        stream = torch.lerp(x, sampled.to(x.dtype), mask.to(x.dtype))
        return _channels_last(stream), out_rgb, raw
