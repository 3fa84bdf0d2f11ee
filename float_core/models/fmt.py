"""Flow matching transformer (FMT): the vector-field predictor of FLOAT (paper Sec. 4.2, Fig. 3).

A DiT-style transformer over the ``L' + L`` frames of one window (``L'`` previous frames,
``L`` frames being generated). Unlike DiT, every frame has its *own* condition

    c^l = ToCondition([w_{r->S}, w_a^l, w_e]) + Emb(t)            (paper Sec. 4.2, "Driving Conditions")

which drives frame-wise adaptive layer norm and gating (paper Eq. 9), and self-attention is
restricted to a band of ``2 T + 1`` neighbouring frames. Tensor names, arithmetic and numerics
follow the released checkpoint, so that ``float.pth`` loads unchanged under the ``fmt.``
prefix and the reference fixtures are reproduced.

Shapes: B batch, L' = ``num_prev_frames``, L = ``num_frames``, N = L' + L, h = ``dim_h``,
d = ``dim_w`` (motion latent), d_a = ``dim_a`` (audio feature), d_e = ``dim_e`` (7 emotions).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..precision import full_precision

if TYPE_CHECKING:  # imported for annotations only; keeps this module free of config coupling
    from ..config import FloatConfig

__all__ = [
    "FMTBlock",
    "FlowMatchingTransformer",
    "TimestepEmbedder",
    "alignment_mask",
    "sinusoid_table",
    "timestep_embedding",
]

#: Layer-norm epsilon of every normalisation in the FMT (no affine, eps 1e-6, as released).
_LN_EPS = 1e-6


# --------------------------------------------------------------------------- pure functions
def sinusoid_table(n: int, dim: int) -> Tensor:
    """Fixed sinusoid position table (Vaswani et al.), shape ``(n, dim)``, float32.

    Channel ``j`` of position ``p`` holds ``sin`` (even ``j``) or ``cos`` (odd ``j``) of the
    angle ``p / 10000^(2 (j // 2) / dim)``. As in the reference implementation,
    the angles are computed in float64, rounded to float32, and only then passed to sin/cos;
    computing them in float32 directly differs by up to ~1e-5 for the 60x1024 table.
    """
    if n < 1 or dim < 1:
        raise ValueError(f"sinusoid_table needs n >= 1 and dim >= 1, got n={n}, dim={dim}")
    position = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    exponent = (2 * (torch.arange(dim) // 2)).to(torch.float64) / dim
    angles = (position / torch.pow(10000.0, exponent)).to(torch.float32)
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table


def alignment_mask(n: int, window: int) -> Tensor:
    """Band attention mask of the FMT, shape ``(n, n)``, bool, **True = attention blocked**.

    Frame ``i`` may attend frame ``j`` iff ``|i - j| <= window`` (paper Sec. 4.2: "a masked
    self-attention layer that attends to 2 T neighboring frames").
    """
    if n < 1 or window < 0:
        raise ValueError(f"alignment_mask needs n >= 1 and window >= 0, got n={n}, window={window}")
    index = torch.arange(n)
    return (index[:, None] - index[None, :]).abs() > window


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of the flow time, ``(len(t),) -> (len(t), dim)``: ``[cos(t f), sin(t f)]``.

    ``f_k = exp(-ln(max_period) k / (dim // 2))``, ``k = 0 .. dim // 2 - 1``. The flow time is used
    as is, in ``[0, 1]`` (not scaled by 1000 as in diffusion models). For odd ``dim`` a zero
    column is appended so the output still has ``dim`` channels.
    """
    if dim < 1:
        raise ValueError(f"timestep_embedding needs dim >= 1, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.reshape(-1, 1).float() * freqs.unsqueeze(0)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Frame-wise AdaLN (paper Eq. 9, left): ``LN(x) (1 + scale) + shift`` with per-frame coefficients."""
    return x * (1 + scale) + shift


# --------------------------------------------------------------------------- sub-modules
class _PatchEmbed(nn.Module):
    """Motion latent -> hidden size (``x_embedder.proj``)."""

    def __init__(self, dim_in: int, dim_h: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_h)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class TimestepEmbedder(nn.Module):
    """Flow time ``(B,) -> (B, h)``: :func:`timestep_embedding` then Linear -> SiLU -> Linear (``mlp.0``, ``mlp.2``)."""

    def __init__(self, dim_h: int, freq_embed_size: int = 256):
        super().__init__()
        self.freq_embed_size = freq_embed_size
        self.mlp = nn.Sequential(nn.Linear(freq_embed_size, dim_h), nn.SiLU(), nn.Linear(dim_h, dim_h))

    def forward(self, t: Tensor) -> Tensor:
        freq = timestep_embedding(t, self.freq_embed_size).to(self.mlp[0].weight.dtype)
        return self.mlp(freq)


class _BandAttention(nn.Module):
    """Multi-head self-attention with a boolean mask (``attn.qkv``, ``attn.proj``)."""

    def __init__(self, dim_h: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim_h, 3 * dim_h)
        self.proj = nn.Linear(dim_h, dim_h)

    def forward(self, x: Tensor, blocked: Tensor) -> Tensor:
        batch, n, dim_h = x.shape
        q, k, v = self.qkv(x).reshape(batch, n, 3, self.num_heads, dim_h // self.num_heads).permute(2, 0, 3, 1, 4)
        # SDPA's boolean mask means "allowed"; ours means "blocked". Every row keeps its own
        # frame, so no row is fully masked (which would give NaN). Scale 1/sqrt(d_head).
        # Reproduces the reference fixtures bit for bit (fmt_tiny_forward: max error 0).
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked)
        return self.proj(y.transpose(1, 2).reshape(batch, n, dim_h))


class _Mlp(nn.Module):
    """Position-wise MLP (``mlp.fc1``, GELU tanh approximation, ``mlp.fc2``)."""

    def __init__(self, dim_h: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim_h, hidden)
        self.fc2 = nn.Linear(hidden, dim_h)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class FMTBlock(nn.Module):
    """One FMT block: frame-wise AdaLN + gated band attention, then frame-wise AdaLN + gated MLP (Eq. 9)."""

    def __init__(self, dim_h: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim_h, elementwise_affine=False, eps=_LN_EPS)
        self.attn = _BandAttention(dim_h, num_heads)
        self.norm2 = nn.LayerNorm(dim_h, elementwise_affine=False, eps=_LN_EPS)
        self.mlp = _Mlp(dim_h, int(dim_h * mlp_ratio))
        # "ToScaleShift" of Fig. 3: per-frame (beta, gamma, alpha) for attention and MLP.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_h, 6 * dim_h))

    def forward(self, x: Tensor, c: Tensor, blocked: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa * self.attn(_modulate(self.norm1(x), shift_msa, scale_msa), blocked)
        return x + gate_mlp * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))


class _FinalLayer(nn.Module):
    """Frame-wise AdaLN then Linear to the motion-latent size (``decoder.adaLN_modulation.1``, ``decoder.linear``)."""

    def __init__(self, dim_h: int, dim_out: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim_h, elementwise_affine=False, eps=_LN_EPS)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_h, 2 * dim_h))
        self.linear = nn.Linear(dim_h, dim_out)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


# --------------------------------------------------------------------------- the transformer
class FlowMatchingTransformer(nn.Module):
    """The FMT vector-field predictor ``v_t(x_t, c_t)`` over ``L' + L`` frames (paper Sec. 4.2, Fig. 3).

    Args:
        dim_h: hidden size h (official 1024).
        num_heads: attention heads (official 8).
        depth: number of blocks (official 8).
        dim_w: motion-latent size d (official 512).
        dim_a: audio-feature size (official 512).
        dim_e: number of emotions (7).
        mlp_ratio: MLP hidden size / h (official 4).
        num_frames: L, frames generated per window (official 50).
        num_prev_frames: L', frames carried over from the previous window (official 10).
        attention_window: T, frame i attends frames i-T .. i+T (official 2).
        freq_embed_size: size of the sinusoidal flow-time embedding (official 256).
    """

    def __init__(
        self,
        dim_h: int,
        num_heads: int,
        depth: int,
        dim_w: int,
        dim_a: int,
        dim_e: int,
        mlp_ratio: float,
        num_frames: int,
        num_prev_frames: int,
        attention_window: int,
        freq_embed_size: int = 256,
    ):
        super().__init__()
        if dim_h % num_heads:
            raise ValueError(f"dim_h ({dim_h}) must be divisible by num_heads ({num_heads})")
        if min(dim_h, num_heads, depth, dim_w, dim_a, dim_e, num_frames, freq_embed_size) < 1:
            raise ValueError(
                "dim_h, num_heads, depth, dim_w, dim_a, dim_e, num_frames and freq_embed_size must be >= 1"
            )
        if num_prev_frames < 0 or attention_window < 0:
            raise ValueError(
                f"num_prev_frames and attention_window must be >= 0, got {num_prev_frames}, {attention_window}"
            )
        self.dim_h, self.dim_w, self.dim_a, self.dim_e = dim_h, dim_w, dim_a, dim_e
        self.num_frames, self.num_prev_frames = num_frames, num_prev_frames
        seq_len = num_prev_frames + num_frames

        self.x_embedder = _PatchEmbed(dim_w, dim_h)
        self.t_embedder = TimestepEmbedder(dim_h, freq_embed_size)
        # "ToCondition" (Fig. 2): [w_{r->S}, w_a^l, w_e] -> h, per frame.
        self.c_embedder = nn.Linear(dim_w + dim_a + dim_e, dim_h)
        # A fixed table, but stored as a (frozen) parameter: that is how float.pth holds it.
        self.pos_embed = nn.Parameter(sinusoid_table(seq_len, dim_h).unsqueeze(0), requires_grad=False)
        # A persistent buffer: it is one of float.pth's 947 keys (never read by the loader).
        self.register_buffer("alignment_mask", alignment_mask(seq_len, attention_window))
        self.blocks = nn.ModuleList(FMTBlock(dim_h, num_heads, mlp_ratio) for _ in range(depth))
        self.decoder = _FinalLayer(dim_h, dim_w)

    @classmethod
    def from_config(cls, config: "FloatConfig") -> "FlowMatchingTransformer":
        """Build the FMT with the sizes of a :class:`~float_core.config.FloatConfig`."""
        return cls(
            dim_h=config.fmt_hidden, num_heads=config.fmt_heads, depth=config.fmt_depth,
            dim_w=config.style_dim, dim_a=config.dim_a, dim_e=config.dim_e, mlp_ratio=config.mlp_ratio,
            num_frames=config.num_frames, num_prev_frames=config.num_prev_frames,
            attention_window=config.attention_window, freq_embed_size=config.freq_embed_size,
        )

    @property
    def sequence_length(self) -> int:
        """N = L' + L positions per forward pass."""
        return self.num_prev_frames + self.num_frames

    # ----------------------------------------------------------------- forward
    def forward(
        self, t: Tensor, x: Tensor, wa: Tensor, wr: Tensor, we: Tensor, prev_x: Tensor, prev_wa: Tensor,
    ) -> Tensor:
        """Predict the vector field for the previous and current frames.

        Args:
            t: flow time in [0, 1], shape ``(B,)`` or ``(1,)`` (shared), unscaled.
            x: noisy motion latents of the current window, ``(B, n, d)`` with ``1 <= n <= L``
                (``n < L``: a shorter pass over the first ``L' + n`` positions, for live chunks).
            wa: audio features of the current window, ``(B, n, d_a)``.
            wr: source motion latent ``w_{r->S}``, ``(B, d)`` (shared by all frames).
            we: emotion probabilities, ``(B, d_e)`` or ``(B, 1, d_e)`` (shared by all frames).
            prev_x: the last L' generated latents of the previous window, ``(B, L', d)``.
            prev_wa: the last L' audio features of the previous window, ``(B, L', d_a)``.

        Returns:
            ``(B, L' + n, d)``; the velocity of the current window is ``[:, L':]``.
        """
        x = torch.cat([prev_x, x], dim=1)
        wa = torch.cat([prev_wa, wa], dim=1)
        batch, n, _ = x.shape
        if n > self.sequence_length or n <= prev_x.shape[1] or wa.shape[1] != n:
            raise ValueError(f"prev_x + x must have L' + 1 .. L' + L = {self.sequence_length} frames and as many "
                             f"audio frames as latents, got {n} latents and {wa.shape[1]} audio frames")
        # A shorter pass (live chunks) uses the first n positions of the fixed sinusoid table and
        # of the band mask: both are functions of the frame offsets only, so frame i of a short
        # pass is computed exactly as frame i of a full one would be given the same neighbours.
        pos_embed, blocked = self.pos_embed, self.alignment_mask
        if n < self.sequence_length:
            pos_embed, blocked = pos_embed[:, :n], blocked[:n, :n]
        if we.dim() == 2:
            we = we.unsqueeze(1)
        dtype = self.c_embedder.weight.dtype
        # Per-frame condition: [w_{r->S}, w_a^l, w_e] (paper Sec. 4.2, in the released checkpoint's order).
        condition = torch.cat(
            [wr.unsqueeze(1).expand(batch, n, -1), wa, we.expand(batch, n, -1)], dim=-1
        ).to(dtype)
        # Under low-precision autocast (float_core.precision) the embedders and the final layer
        # stay float32: they see the raw conditions and produce the velocity, and rounding them
        # to bf16 cost 1.4 dB of frame PSNR for ~1.5 % of the FLOPs (measured, precision.py).
        with full_precision(x.device):
            c = self.c_embedder(condition) + self.t_embedder(t).unsqueeze(1)  # (B or 1 -> B, N, h)
            h = self.x_embedder(x.to(dtype)) + pos_embed
        for block in self.blocks:
            h = block(h, c, blocked)
        with full_precision(x.device):
            return self.decoder(h, c)

    def guided_velocity(
        self,
        t: Tensor,
        x: Tensor,
        wa: Tensor,
        wr: Tensor,
        we: Tensor,
        prev_x: Tensor,
        prev_wa: Tensor,
        a_cfg: float = 2.0,
        e_cfg: float = 1.0,
    ) -> Tensor:
        """Incremental classifier-free vector field (paper Eq. 13).

        ``v = v_u + a_cfg (v_a - v_u) + e_cfg (v_ae - v_a)`` with
        ``v_u`` = audio and emotion zeroed, ``v_ae`` = all conditions, ``v_a`` = emotion zeroed.
        The previous-window latents and audio and the source motion are never dropped (they are
        part of every branch, as in the reference). The needed branches run as one batch, in the
        reference's order [uncond, all_cond, audio_cond]. Two exact simplifications avoid work:
        ``a_cfg == e_cfg == 1`` gives ``v_ae`` (one branch) and ``a_cfg == e_cfg`` gives
        ``v_u + a_cfg (v_ae - v_u)`` (two branches); they equal the three-branch formula up to
        float rounding.

        Returns:
            ``(B, L' + L, d)``, like :meth:`forward`.
        """
        if a_cfg == 1 and e_cfg == 1:
            return self(t, x, wa, wr, we, prev_x, prev_wa)

        batch = x.shape[0]
        we = we.unsqueeze(1) if we.dim() == 2 else we
        we = we.expand(batch, -1, -1)
        zero_wa, zero_we = torch.zeros_like(wa), torch.zeros_like(we)
        # Branch inputs (audio, emotion): uncond, all_cond[, audio_cond].
        branches = [(zero_wa, zero_we), (wa, we)]
        if a_cfg != e_cfg:
            branches.append((wa, zero_we))
        k = len(branches)
        t_batch = t if t.numel() == 1 else t.repeat(k)
        out = self(
            t_batch, x.repeat(k, 1, 1), torch.cat([b[0] for b in branches]), wr.repeat(k, 1),
            torch.cat([b[1] for b in branches]), prev_x.repeat(k, 1, 1), prev_wa.repeat(k, 1, 1),
        ).chunk(k, dim=0)
        v_uncond, v_all = out[0], out[1]
        if k == 2:
            return v_uncond + a_cfg * (v_all - v_uncond)
        v_audio = out[2]
        return v_uncond + a_cfg * (v_audio - v_uncond) + e_cfg * (v_all - v_audio)
