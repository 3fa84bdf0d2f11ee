"""Stage-1 (motion auto-encoder) training losses (paper A.2, A.3, A.4; Eq. 15-19).

The auto-encoder reconstructs a driving frame D from a source frame S of the same clip; with
D^ the reconstruction, Eq. 16 is

    L_total = L_L1 + 10 L_lp + 100 L_comp-lp + 1 L_full-adv
              + 1 L_eye-adv + 100 L_eye-FSM + 1 L_lip-adv + 100 L_lip-FSM     (weights: A.4)

- L_lp: VGG-19 perceptual loss [95] on a 3-level image pyramid, 4 VGG scales per level.
- L_comp-lp (Eq. 15): the same features masked to the facial components (eyes, mouth), every
  feature map with the mask resized to its own size, normalised by the mask area.
- L_full-adv (Eq. 17): non-saturating GAN loss of a 2-scale StyleGAN2 discriminator.
- L_x-adv, L_x-FSM (Eq. 18-19), x in {eye, lip}: GFPGAN's [84] facial-component discriminators
  on RoI crops, and the L1 distance between Gram matrices of their intermediate features.

Pure functions compute each term; :class:`Stage1Losses` owns the VGG and the three
discriminators and gives the trainer two calls::

    losses = Stage1Losses(load_vgg19(path), image_size=512)
    g_terms = losses.generator_step(fake, real)          # g_terms["total"].backward()
    d_terms = losses.discriminator_step(fake.detach(), real)
    sum(d_terms.values()).backward()                     # optimiser over losses.discriminator_parameters()

Facial components. The paper takes a tight mouth mask from a face-segmentation model [92] and
eye boxes from a landmark detector [5]. Neither runs here at training time, so the eye and mouth
boxes (and the L_comp-lp mask, their union) come from

- 68-point landmarks of the driving frame when the data set has them (``python -m
  float_core.train prepare --out DATA --landmarks`` writes ``landmarks.npy`` per clip;
  :class:`float_core.train.data.Stage1Dataset` then returns per-sample ``boxes``, see
  :func:`boxes_from_landmarks` and :func:`stack_component_boxes`), else
- fixed fractions (x0, y0, x1, y1) of FLOAT's aligned crop (:class:`ComponentBoxes`, the
  default): left eye (0.28, 0.30, 0.48, 0.50), right eye (0.52, 0.30, 0.72, 0.50), mouth
  (0.32, 0.55, 0.68, 0.79).

Per-sample boxes travel through the data loader as one float32 (B, 3, 4) tensor (rows in
:data:`COMPONENT_NAMES` order, pixels of the training resolution); :meth:`Stage1Losses.generator_step`
and :meth:`Stage1Losses.discriminator_step` take it as it is, or the dict of
:func:`unstack_component_boxes`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .discriminators import DEFAULT_COMPONENT_CHANNELS, ComponentDiscriminator, MultiScaleDiscriminator
from .vgg import DEFAULT_VGG_LAYERS, VGG19Features, load_vgg19

__all__ = [
    "COMPONENT_NAMES",
    "AutoEncoderLossWeights",
    "ComponentBoxes",
    "ComponentOutputs",
    "Stage1LossConfig",
    "Stage1Losses",
    "boxes_from_landmarks",
    "component_mask",
    "component_perceptual_loss",
    "component_perceptual_loss_from_features",
    "component_rois",
    "crop_components",
    "discriminator_loss",
    "discriminator_losses",
    "feature_style_loss",
    "fixed_component_boxes",
    "generator_losses",
    "generator_nonsaturating_loss",
    "gram_matrix",
    "image_pyramid",
    "perceptual_loss",
    "perceptual_loss_from_features",
    "r1_penalty",
    "resize_mask",
    "stack_component_boxes",
    "unstack_component_boxes",
    "vgg_pyramid_features",
]

#: A box (x0, y0, x1, y1): pixel edges, x0 < x1, y0 < y1 (a pixel i spans [i, i + 1)).
Box = tuple[float, float, float, float]
#: A shared box (4 numbers or a (4,) tensor) or per-sample boxes, a (B, 4) tensor.
BoxLike = Tensor | Sequence[float]
#: The facial components, in image coordinates: ``left_eye`` is the eye on the image's left
#: (the subject's right eye, iBUG points 36-41).
COMPONENT_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "mouth")
FeatureExtractor = Callable[[Tensor], Sequence[Tensor]]
Logits = Tensor | Sequence[Tensor]


# =========================================================================== weights
@dataclass(frozen=True)
class AutoEncoderLossWeights:
    """The balancing coefficients of Eq. 16 (A.4 values). Field names are the term names.

    A weight of 0 switches its term off: :class:`Stage1Losses` then skips the computation
    (and, for both weights of a component at 0, that discriminator's training).
    """

    l1: float = 1.0
    lp: float = 10.0
    comp_lp: float = 100.0
    full_adv: float = 1.0
    eye_adv: float = 1.0
    eye_fsm: float = 100.0
    lip_adv: float = 1.0
    lip_fsm: float = 100.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


# =========================================================================== perceptual losses
def image_pyramid(x: Tensor, levels: int = 3) -> list[Tensor]:
    """``[x, x / 2, x / 4, ...]`` (``levels`` images), each a 2x2 average (area) downsampling."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    out = [x]
    for _ in range(levels - 1):
        out.append(F.avg_pool2d(out[-1], 2))
    return out


def vgg_pyramid_features(vgg: FeatureExtractor, x: Tensor, levels: int = 3) -> list[list[Tensor]]:
    """``[[phi_1 ... phi_N] for each pyramid level]``: the features that L_lp and L_comp-lp share."""
    return [list(vgg(level)) for level in image_pyramid(x, levels)]


def perceptual_loss_from_features(fake_feats: Sequence[Sequence[Tensor]],
                                  real_feats: Sequence[Sequence[Tensor]]) -> Tensor:
    """Sum over pyramid levels and VGG scales of the mean L1 between features (real detached).

    Summing (not averaging) the 3 x 4 terms follows the FOMM/LIA multi-scale perceptual loss
    that FLOAT's auto-encoder builds on; lambda_lp = 10 (A.4) is relative to that sum.
    """
    terms = [F.l1_loss(f, r.detach()) for fl, rl in zip(fake_feats, real_feats, strict=True)
             for f, r in zip(fl, rl, strict=True)]
    return torch.stack(terms).sum()


def perceptual_loss(vgg: FeatureExtractor, fake: Tensor, real: Tensor, levels: int = 3) -> Tensor:
    """L_lp: multi-scale VGG-19 perceptual loss [95] (A.3); ``real``'s features under no_grad."""
    with torch.no_grad():
        real_feats = vgg_pyramid_features(vgg, real, levels)
    return perceptual_loss_from_features(vgg_pyramid_features(vgg, fake, levels), real_feats)


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """A binary mask (B, 1, H, W) at ``size``: 1 where any covered input pixel is 1 (max pooling),
    so a component never vanishes from a coarse feature map."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.adaptive_max_pool2d(mask, size)


def component_perceptual_loss_from_features(fake_feats: Sequence[Sequence[Tensor]],
                                            real_feats: Sequence[Sequence[Tensor]], mask: Tensor) -> Tensor:
    """Eq. 15 summed over the pyramid levels: sum_i 1/|M_i| ||M_i (x) phi_i(D^) - M_i (x) phi_i(D)||_1.

    ``mask`` (B, 1, H, W) in {0, 1} at image size is resized to every feature map (A.2: "we mask
    all the multi-resolution features (not only the image)"). |M_i| is taken as the number of
    masked *elements*, mask sum x channels, so each term is the mean L1 over the masked
    features: the scale of the unmasked L_lp terms, independent of the component's area. It is
    computed per sample, then averaged over the batch; a sample with an empty mask contributes 0.
    """
    total = mask.new_zeros(())
    for fl, rl in zip(fake_feats, real_feats, strict=True):
        for f, r in zip(fl, rl, strict=True):
            m = resize_mask(mask, tuple(f.shape[-2:])).to(f.dtype)
            num = ((f - r.detach()).abs() * m).flatten(1).sum(1)
            den = (m.flatten(1).sum(1) * f.shape[1]).clamp_min(1.0)
            total = total + (num / den).mean()
    return total


def component_perceptual_loss(vgg: FeatureExtractor, fake: Tensor, real: Tensor, masks: Tensor,
                              levels: int = 3) -> Tensor:
    """L_comp-lp (Eq. 15) on a ``levels``-level image pyramid; ``masks`` (B, 1, H, W) in {0, 1}."""
    with torch.no_grad():
        real_feats = vgg_pyramid_features(vgg, real, levels)
    return component_perceptual_loss_from_features(vgg_pyramid_features(vgg, fake, levels), real_feats, masks)


# =========================================================================== facial components
@dataclass(frozen=True)
class ComponentBoxes:
    """Fixed component boxes as fractions (x0, y0, x1, y1) of FLOAT's aligned crop.

    The crop (:func:`float_core.media.face.crop_box_for_face`) is a square of 1.6x the face
    box centred on it, so the face box spans the middle 62.5% of the crop. On the example
    portrait (dlib 68 landmarks on the 512-px crop) the eyes lie in x 0.34-0.43 / 0.57-0.67,
    y 0.38-0.43 and the mouth in x 0.36-0.62, y 0.60-0.70. The defaults are generous squares
    of 0.2 around the eyes (lids and some brow, head motion) and a 0.36 x 0.24 mouth box that
    also holds a wide-open mouth. Head turns move the components out of fixed boxes: landmark
    boxes (:func:`boxes_from_landmarks`) are better whenever landmarks are available.
    """

    left_eye: Box = (0.28, 0.30, 0.48, 0.50)
    right_eye: Box = (0.52, 0.30, 0.72, 0.50)
    mouth: Box = (0.32, 0.55, 0.68, 0.79)

    def __post_init__(self) -> None:
        for name in COMPONENT_NAMES:
            x0, y0, x1, y1 = getattr(self, name)
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                raise ValueError(f"{name} box {getattr(self, name)} is not a fraction box inside [0, 1]")


def fixed_component_boxes(image_size: int, boxes: ComponentBoxes = ComponentBoxes()) -> dict[str, Tensor]:
    """``{"left_eye", "right_eye", "mouth"}`` -> shared (4,) pixel boxes for ``image_size`` images."""
    return {name: torch.tensor(getattr(boxes, name), dtype=torch.float32) * image_size
            for name in COMPONENT_NAMES}


def boxes_from_landmarks(landmarks68: Tensor | np.ndarray, image_size: int, eye_scale: float = 1.5,
                         mouth_scale: float = 1.2, min_size: float | None = None) -> dict[str, Tensor]:
    """Square component boxes from 68-point iBUG landmarks (eyes 36-41 and 42-47, mouth 48-67).

    Each box is centred on the component's landmark mean, with side ``scale * max(width,
    height)`` of the landmarks (at least ``min_size``, default image_size / 16) and clipped to
    the image. ``eye_scale`` 1.5 keeps the lids; ``mouth_scale`` 1.2 a margin around the lips
    (the paper's tight mouth segmentation is not available here).

    Args:
        landmarks68: (68, 2) or (B, 68, 2) (x, y) pixel coordinates in the ``image_size`` image.

    Returns:
        ``COMPONENT_NAMES`` -> (4,) or (B, 4) float32 boxes (x0, y0, x1, y1).
    """
    lm = torch.as_tensor(landmarks68, dtype=torch.float32)
    single = lm.ndim == 2
    if single:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"expected (68, 2) or (B, 68, 2) landmarks, got {tuple(lm.shape)}")
    min_side = image_size / 16 if min_size is None else min_size
    out = {}
    for name, points, scale in (("left_eye", lm[:, 36:42], eye_scale), ("right_eye", lm[:, 42:48], eye_scale),
                                ("mouth", lm[:, 48:68], mouth_scale)):
        centre = points.mean(dim=1)
        extent = (points.amax(dim=1) - points.amin(dim=1)).amax(dim=1)
        half = (extent * scale).clamp_min(min_side)[:, None] / 2
        box = torch.cat([centre - half, centre + half], dim=1).clamp(0.0, float(image_size))
        out[name] = box[0] if single else box
    return out


def stack_component_boxes(boxes: Mapping[str, BoxLike]) -> Tensor:
    """``COMPONENT_NAMES`` -> (4,) or (B, 4) boxes as one float32 (3, 4) or (B, 3, 4) tensor.

    Rows follow :data:`COMPONENT_NAMES` (left eye, right eye, mouth), each (x0, y0, x1, y1) in
    pixels. This is the form a dataset item carries (``item["boxes"]``), since the default
    ``DataLoader`` collation stacks it into (B, 3, 4); :func:`unstack_component_boxes` inverts it.
    """
    missing = [n for n in COMPONENT_NAMES if n not in boxes]
    if missing:
        raise ValueError(f"boxes lack {missing}; expected keys {COMPONENT_NAMES}")
    parts = [torch.as_tensor(boxes[n], dtype=torch.float32) for n in COMPONENT_NAMES]
    if any(p.shape[-1:] != (4,) or p.ndim > 2 for p in parts):
        raise ValueError(f"each box must be (4,) or (B, 4), got {[tuple(p.shape) for p in parts]}")
    return torch.stack(torch.broadcast_tensors(*parts), dim=-2)


def unstack_component_boxes(boxes: Tensor) -> dict[str, Tensor]:
    """A (3, 4) or (B, 3, 4) tensor of :func:`stack_component_boxes` -> ``COMPONENT_NAMES`` ->
    (4,) or (B, 4) boxes (views), the form :meth:`Stage1Losses.generator_step` takes."""
    if boxes.ndim not in (2, 3) or boxes.shape[-2:] != (len(COMPONENT_NAMES), 4):
        raise ValueError(f"expected ({len(COMPONENT_NAMES)}, 4) or (B, {len(COMPONENT_NAMES)}, 4) boxes, "
                         f"got {tuple(boxes.shape)}")
    return {name: boxes[..., i, :] for i, name in enumerate(COMPONENT_NAMES)}


def _box_tensor(box: BoxLike, batch: int, device: torch.device) -> Tensor:
    """A shared (4,) or per-sample (B, 4) box as a (B, 4) float32 tensor on ``device``."""
    b = torch.as_tensor(box, dtype=torch.float32, device=device)
    if b.shape == (4,):
        return b.expand(batch, 4)
    if b.shape != (batch, 4):
        raise ValueError(f"a box must be (4,) or ({batch}, 4), got {tuple(b.shape)}")
    return b


def component_mask(boxes: Mapping[str, BoxLike] | Sequence[BoxLike], batch: int, image_size: int,
                   device: torch.device | str | None = None) -> Tensor:
    """The union of the boxes as a binary (B, 1, H, W) float mask (H = W = image_size).

    A pixel is inside a box when its centre is: a box on whole pixel edges covers exactly
    those pixels.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    items = list(boxes.values()) if isinstance(boxes, Mapping) else list(boxes)
    centres = torch.arange(image_size, device=device, dtype=torch.float32) + 0.5
    mask = torch.zeros(batch, image_size, image_size, dtype=torch.bool, device=device)
    for box in items:
        b = _box_tensor(box, batch, device)
        in_x = (centres >= b[:, 0:1]) & (centres < b[:, 2:3])  # (B, W)
        in_y = (centres >= b[:, 1:2]) & (centres < b[:, 3:4])  # (B, H)
        mask |= in_y[:, :, None] & in_x[:, None, :]
    return mask[:, None].float()


def crop_components(images: Tensor, boxes: BoxLike, out_size: int | tuple[int, int],
                    mirror: bool = False) -> Tensor:
    """RoI crop-and-resize (RoIAlign-like, without torchvision), differentiable w.r.t. ``images``.

    Output pixel j samples the box at x0 + (j + 0.5) (x1 - x0) / out_w (bilinear,
    ``grid_sample`` with ``align_corners=False``, zeros outside the image), so a box on whole
    pixels cropped at its own size returns those pixels exactly.

    Args:
        images: (B, C, H, W).
        boxes: shared (4,) or per-sample (B, 4) pixel boxes (x0, y0, x1, y1).
        out_size: RoI side, or (height, width).
        mirror: flip the crop left-right (the right eye, so one eye discriminator sees one layout).

    Returns:
        (B, C, out_h, out_w).
    """
    b, c, h, w = images.shape
    oh, ow = (out_size, out_size) if isinstance(out_size, int) else out_size
    bx = _box_tensor(boxes, b, images.device).to(images.dtype)
    # Normalised coordinates (align_corners=False): u = 2 x / W - 1.
    sx = (bx[:, 2] - bx[:, 0]) / w
    sy = (bx[:, 3] - bx[:, 1]) / h
    cx = (bx[:, 0] + bx[:, 2]) / w - 1
    cy = (bx[:, 1] + bx[:, 3]) / h - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([-sx if mirror else sx, zero, cx], dim=1),
                         torch.stack([zero, sy, cy], dim=1)], dim=1)
    grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def component_rois(images: Tensor, boxes: Mapping[str, BoxLike], eye_size: int, mouth_size: int,
                   mirror_right_eye: bool = True) -> tuple[Tensor, Tensor]:
    """(eyes (2B, C, eye_size, eye_size): all left eyes then all right eyes, mouths (B, C, ...)).

    Both eyes go to the single eye discriminator as separate samples (paper: one Disc_eye);
    the right eye is mirrored by default so the discriminator sees one eye layout.
    """
    eyes = torch.cat([crop_components(images, boxes["left_eye"], eye_size),
                      crop_components(images, boxes["right_eye"], eye_size, mirror=mirror_right_eye)])
    return eyes, crop_components(images, boxes["mouth"], mouth_size)


# =========================================================================== style (FSM) loss
def gram_matrix(features: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrices F F^T / (C H W) (Gatys [21]; GFPGAN's scaling).

    Computed in float32 so mixed-precision features cannot overflow.
    """
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def feature_style_loss(fake_feats: Sequence[Tensor], real_feats: Sequence[Tensor]) -> Tensor:
    """L_x-FSM (Eq. 19): sum over the feature levels of the mean L1 between Gram matrices,
    the real features detached (GFPGAN [84]; Eq. 19 is unweighted, so all levels weigh 1)."""
    terms = [F.l1_loss(gram_matrix(f), gram_matrix(r.detach()))
             for f, r in zip(fake_feats, real_feats, strict=True)]
    return torch.stack(terms).sum()


# =========================================================================== GAN losses
def _as_list(logits: Logits) -> list[Tensor]:
    return [logits] if isinstance(logits, Tensor) else list(logits)


def generator_nonsaturating_loss(fake_logits: Logits) -> Tensor:
    """Non-saturating generator loss -log sigmoid(l) = softplus(-l), averaged (Eq. 17).

    Also the component term L_x-adv: Eq. 18 reads "log[Disc_x(1 - D^_x)]", which we take to be
    the same non-saturating loss on the component discriminator, as in GFPGAN [84] which the
    paper follows. A list (one per discriminator scale or patch map) is summed over its items.
    """
    return torch.stack([F.softplus(-l).mean() for l in _as_list(fake_logits)]).sum()


def discriminator_loss(real_logits: Logits, fake_logits: Logits) -> Tensor:
    """Logistic discriminator loss softplus(-real).mean() + softplus(fake).mean() (summed over scales)."""
    reals, fakes = _as_list(real_logits), _as_list(fake_logits)
    if len(reals) != len(fakes):
        raise ValueError(f"{len(reals)} real but {len(fakes)} fake logit tensors")
    return torch.stack([F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(reals, fakes)]).sum()


def r1_penalty(real_logits: Logits, real_inputs: Tensor) -> Tensor:
    """R1 penalty E ||grad_x D(x)||^2 on real inputs (StyleGAN2 [33] practice).

    The paper does not mention it, so :class:`Stage1LossConfig` leaves it off (``r1_gamma = 0``);
    with ``r1_gamma > 0`` it is applied lazily, as in StyleGAN2. ``real_inputs`` must require grad
    and be the tensor the logits were computed from.
    """
    total = torch.stack([l.sum() for l in _as_list(real_logits)]).sum()
    (grad,) = torch.autograd.grad(total, real_inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


# =========================================================================== combining terms
@dataclass
class ComponentOutputs:
    """A component discriminator's outputs in the generator step: logits on the fake RoIs and
    the multi-resolution features psi of the fake and real RoIs."""

    fake_logits: Tensor
    fake_feats: Sequence[Tensor]
    real_feats: Sequence[Tensor]


def generator_losses(fake: Tensor, real: Tensor, *, weights: AutoEncoderLossWeights = AutoEncoderLossWeights(),
                     fake_vgg: Sequence[Sequence[Tensor]] | None = None,
                     real_vgg: Sequence[Sequence[Tensor]] | None = None, mask: Tensor | None = None,
                     full_fake_logits: Logits | None = None, eye: ComponentOutputs | None = None,
                     lip: ComponentOutputs | None = None) -> dict[str, Tensor]:
    """Every term of Eq. 16 from network outputs, plus ``"total"`` (the weighted sum).

    Terms whose inputs are ``None`` (switched off) are reported as 0. Keys: the field names of
    :class:`AutoEncoderLossWeights` and ``"total"``.
    """
    zero = fake.new_zeros(())
    terms: dict[str, Tensor] = {name: zero for name in weights.as_dict()}
    terms["l1"] = F.l1_loss(fake, real)
    if fake_vgg is not None and real_vgg is not None:
        terms["lp"] = perceptual_loss_from_features(fake_vgg, real_vgg)
        if mask is not None:
            terms["comp_lp"] = component_perceptual_loss_from_features(fake_vgg, real_vgg, mask)
    if full_fake_logits is not None:
        terms["full_adv"] = generator_nonsaturating_loss(full_fake_logits)
    for prefix, out in (("eye", eye), ("lip", lip)):
        if out is not None:
            terms[f"{prefix}_adv"] = generator_nonsaturating_loss(out.fake_logits)
            terms[f"{prefix}_fsm"] = feature_style_loss(out.fake_feats, out.real_feats)
    terms["total"] = torch.stack([w * terms[name] for name, w in weights.as_dict().items()]).sum()
    return terms


def discriminator_losses(full: tuple[Logits, Logits] | None = None, eye: tuple[Logits, Logits] | None = None,
                         lip: tuple[Logits, Logits] | None = None) -> dict[str, Tensor]:
    """The logistic loss of each discriminator given (real logits, fake logits); ``None`` skips it.

    Keys ``"full"``, ``"eye"``, ``"lip"`` (only those given); the D step minimises their sum.
    """
    out = {}
    for name, pair in (("full", full), ("eye", eye), ("lip", lip)):
        if pair is not None:
            out[name] = discriminator_loss(*pair)
    return out


# =========================================================================== the module
@dataclass(frozen=True)
class Stage1LossConfig:
    """Configuration of :class:`Stage1Losses`.

    Attributes:
        image_size: training resolution (512 in the paper).
        weights: Eq. 16 coefficients (A.4).
        pyramid_levels: image-pyramid levels of L_lp and L_comp-lp (A.2: 3).
        vgg_layers: VGG-19 scales per level (A.2: N = 4).
        disc_scales: scales of the full-image discriminator (A.3: 2).
        disc_channel_base, disc_max_channels: its widths (StyleGAN2 multiplier 1, as LIA).
        component_channels: component-discriminator widths (GFPGAN: 64, 128, 256).
        eye_size, mouth_size: RoI sides; 0 means image_size / 8 and image_size / 4.
        boxes: fixed fractional component boxes used when no per-sample boxes are given.
        mirror_right_eye: mirror right-eye RoIs for the shared eye discriminator.
        r1_gamma: R1 weight gamma (loss gamma/2 * R1); 0 = off, as the paper (StyleGAN2: 10).
        r1_interval: lazy R1: the trainer asks for it every this many D steps, and the
            penalty is scaled by it (StyleGAN2's lazy regularisation).
    """

    image_size: int = 512
    weights: AutoEncoderLossWeights = field(default_factory=AutoEncoderLossWeights)
    pyramid_levels: int = 3
    vgg_layers: tuple[str, ...] = DEFAULT_VGG_LAYERS
    disc_scales: int = 2
    disc_channel_base: int = 16384
    disc_max_channels: int = 512
    component_channels: tuple[int, ...] = DEFAULT_COMPONENT_CHANNELS
    eye_size: int = 0
    mouth_size: int = 0
    boxes: ComponentBoxes = field(default_factory=ComponentBoxes)
    mirror_right_eye: bool = True
    r1_gamma: float = 0.0
    r1_interval: int = 16

    @property
    def eye_roi(self) -> int:
        return self.eye_size or self.image_size // 8

    @property
    def mouth_roi(self) -> int:
        return self.mouth_size or self.image_size // 4

    @classmethod
    def tiny(cls, **overrides: object) -> "Stage1LossConfig":
        """64-px images with narrow discriminators (RoIs 8 and 16): for tests and smoke runs."""
        base: dict[str, object] = dict(image_size=64, disc_channel_base=512, disc_max_channels=32,
                                       component_channels=(8, 16, 32))
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    @classmethod
    def for_image_size(cls, image_size: int, **overrides: object) -> "Stage1LossConfig":
        """The paper's widths from 256 px up; below (test and smoke configurations such as the
        64-px ``FloatConfig.tiny``) the narrow widths of :meth:`tiny`."""
        if image_size >= 256:
            return cls(image_size=image_size, **overrides)  # type: ignore[arg-type]
        return cls.tiny(image_size=image_size, **overrides)


@contextlib.contextmanager
def _no_param_grads(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients to ``module``'s parameters (the G step must not touch D)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Stage1Losses(nn.Module):
    """Owns the frozen VGG-19 and the three discriminators of stage 1 (A.3) and computes Eq. 16.

    ``discriminators`` (an ``nn.ModuleDict`` with ``full``, ``eye``, ``lip``) holds every
    trainable parameter: build the D optimiser from :meth:`discriminator_parameters` and
    checkpoint :meth:`discriminators_state_dict` (the VGG stays out of both).

    Args:
        vgg: a :class:`VGG19Features`, or a source for :func:`load_vgg19` (path, hub id,
            ``"random"``); ``None`` loads the default hub weights.
        image_size: training resolution; sets ``config.image_size`` (default: the config's, or
            512 without a config). Without a config, :meth:`Stage1LossConfig.for_image_size`.
        weights: Eq. 16 coefficients; sets ``config.weights`` (default: the config's, A.4).
        config: every other option, see :class:`Stage1LossConfig`.
    """

    def __init__(self, vgg: VGG19Features | str | Path | None = None, image_size: int | None = None,
                 weights: AutoEncoderLossWeights | None = None, config: Stage1LossConfig | None = None):
        super().__init__()
        if config is None:
            config = Stage1LossConfig.for_image_size(image_size or Stage1LossConfig.image_size)
        elif image_size is not None:
            config = replace(config, image_size=image_size)
        if weights is not None:
            config = replace(config, weights=weights)
        self.config = config
        self.vgg = vgg if isinstance(vgg, VGG19Features) else load_vgg19(vgg, config.vgg_layers)
        if self.vgg.layers != tuple(config.vgg_layers):
            raise ValueError(f"the VGG returns {self.vgg.layers} but the config asks for {config.vgg_layers}")
        self.vgg.freeze()
        self.discriminators = nn.ModuleDict({
            "full": MultiScaleDiscriminator(config.image_size, config.disc_scales,
                                            config.disc_channel_base, config.disc_max_channels),
            "eye": ComponentDiscriminator(config.eye_roi, config.component_channels),
            "lip": ComponentDiscriminator(config.mouth_roi, config.component_channels),
        })

    def discriminators_state_dict(self) -> dict[str, Tensor]:
        """The discriminators' weights for a training checkpoint (the fixed VGG is left out)."""
        return self.discriminators.state_dict()

    def load_discriminators_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`discriminators_state_dict` (strict)."""
        self.discriminators.load_state_dict(state)

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the D optimiser updates (the three discriminators, not the VGG)."""
        return self.discriminators.parameters()

    def train(self, mode: bool = True) -> "Stage1Losses":
        super().train(mode)
        self.vgg.eval()  # the loss network never leaves eval mode
        return self

    def component_boxes(self, batch: int, device: torch.device,
                        boxes: Mapping[str, BoxLike] | Tensor | None = None) -> dict[str, Tensor]:
        """(B, 4) pixel boxes per component: ``boxes`` if given (a mapping, or a (B, 3, 4) tensor
        of :func:`stack_component_boxes`), else the fixed fractions."""
        if isinstance(boxes, Tensor):
            boxes = unstack_component_boxes(boxes)
        src = boxes if boxes is not None else fixed_component_boxes(self.config.image_size, self.config.boxes)
        missing = [n for n in COMPONENT_NAMES if n not in src]
        if missing:
            raise ValueError(f"boxes lack {missing}; expected keys {COMPONENT_NAMES}")
        return {n: _box_tensor(src[n], batch, device) for n in COMPONENT_NAMES}

    def _check(self, fake: Tensor, real: Tensor) -> None:
        s = self.config.image_size
        if fake.shape != real.shape or fake.shape[1:] != (3, s, s):
            raise ValueError(f"expected fake and real of shape (B, 3, {s}, {s}), got "
                             f"{tuple(fake.shape)} and {tuple(real.shape)}")

    def generator_step(self, fake: Tensor, real: Tensor, boxes: Mapping[str, BoxLike] | Tensor | None = None,
                       mask: Tensor | None = None) -> dict[str, Tensor]:
        """Eq. 16 for reconstructions ``fake`` of drivings ``real`` (B, 3, S, S) in [-1, 1].

        Args:
            boxes: per-sample or shared pixel boxes for ``COMPONENT_NAMES`` (e.g. from
                :func:`boxes_from_landmarks`), or a batch's (B, 3, 4) ``boxes`` tensor (see
                :func:`stack_component_boxes`); default: the fixed :class:`ComponentBoxes`.
            mask: (B, 1, S, S) component mask for L_comp-lp (e.g. a face-parsing mouth mask);
                default: the union of the boxes.

        Returns:
            every term (``AutoEncoderLossWeights`` field names) and ``"total"``; backpropagate
            ``"total"``. No gradient reaches the VGG or the discriminators.
        """
        self._check(fake, real)
        cfg, w = self.config, self.config.weights
        bx = self.component_boxes(fake.shape[0], fake.device, boxes)
        fake_vgg = real_vgg = None
        if w.lp or w.comp_lp:
            fake_vgg = vgg_pyramid_features(self.vgg, fake, cfg.pyramid_levels)
            with torch.no_grad():
                real_vgg = vgg_pyramid_features(self.vgg, real, cfg.pyramid_levels)
            if w.comp_lp and mask is None:
                mask = component_mask(bx, fake.shape[0], cfg.image_size, fake.device)
        full_logits = eye = lip = None
        with _no_param_grads(self.discriminators):
            if w.full_adv:
                full_logits = self.discriminators["full"](fake)
            fake_eyes, fake_mouth = component_rois(fake, bx, cfg.eye_roi, cfg.mouth_roi, cfg.mirror_right_eye)
            with torch.no_grad():
                real_eyes, real_mouth = component_rois(real, bx, cfg.eye_roi, cfg.mouth_roi, cfg.mirror_right_eye)
            if w.eye_adv or w.eye_fsm:
                eye = self._component_outputs("eye", fake_eyes, real_eyes)
            if w.lip_adv or w.lip_fsm:
                lip = self._component_outputs("lip", fake_mouth, real_mouth)
        return generator_losses(fake, real, weights=w, fake_vgg=fake_vgg, real_vgg=real_vgg,
                                mask=mask if w.comp_lp else None, full_fake_logits=full_logits,
                                eye=eye, lip=lip)

    def _component_outputs(self, name: str, fake_rois: Tensor, real_rois: Tensor) -> ComponentOutputs:
        disc = self.discriminators[name]
        fake_logits, fake_feats = disc(fake_rois)
        with torch.no_grad():
            _, real_feats = disc(real_rois)
        return ComponentOutputs(fake_logits, fake_feats, real_feats)

    def discriminator_step(self, fake: Tensor, real: Tensor, boxes: Mapping[str, BoxLike] | Tensor | None = None,
                           r1: bool = False) -> dict[str, Tensor]:
        """Logistic losses of the three discriminators (``fake`` is detached here as well).

        Args:
            boxes: as in :meth:`generator_step` (use the same boxes for both steps).
            r1: add the lazy R1 term ``"r1"`` (if ``config.r1_gamma > 0``): the trainer passes
                True every ``config.r1_interval`` D steps.

        Returns:
            ``"full"``, ``"eye"``, ``"lip"`` (those switched on) [+ ``"r1"``]; minimise their sum.
        """
        self._check(fake, real)
        cfg, w = self.config, self.config.weights
        fake, real = fake.detach(), real.detach()
        use_r1 = r1 and cfg.r1_gamma > 0
        bx = self.component_boxes(fake.shape[0], fake.device, boxes)
        fake_eyes, fake_mouth = component_rois(fake, bx, cfg.eye_roi, cfg.mouth_roi, cfg.mirror_right_eye)
        real_eyes, real_mouth = component_rois(real, bx, cfg.eye_roi, cfg.mouth_roi, cfg.mirror_right_eye)
        pairs: dict[str, tuple[Tensor, Tensor] | None] = {"full": None, "eye": None, "lip": None}
        penalties = []
        for name, on, real_in, fake_in in (("full", w.full_adv, real, fake),
                                           ("eye", w.eye_adv or w.eye_fsm, real_eyes, fake_eyes),
                                           ("lip", w.lip_adv or w.lip_fsm, real_mouth, fake_mouth)):
            if not on:
                continue
            disc = self.discriminators[name]
            if use_r1:
                real_in = real_in.detach().requires_grad_(True)
            real_logits = _first(disc(real_in))
            pairs[name] = (real_logits, _first(disc(fake_in)))
            if use_r1:
                penalties.append(r1_penalty(real_logits, real_in))
        out = discriminator_losses(**pairs)
        if penalties:
            out["r1"] = 0.5 * cfg.r1_gamma * cfg.r1_interval * torch.stack(penalties).sum()
        return out


def _first(output: Tensor | list[Tensor] | tuple[Tensor, list[Tensor]]) -> Logits:
    """The logits of a discriminator's output: a component discriminator also returns features."""
    if isinstance(output, tuple):
        return output[0]
    return output
