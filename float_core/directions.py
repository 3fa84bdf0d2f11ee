"""Named motion directions: what each of the M orthonormal directions moves (paper Sec. 4.1, Eq. 1).

FLOAT's motion latent is w_{r->D} = sum_m lambda_m v_m over M = 20 learned orthonormal
directions. Training never names them, so which lambda opens the mouth or turns the head is
a property of the loaded weights. :func:`measure_directions` finds out by experiment, at run
time, from one portrait:

1. **Probe.** Decode the source's own latent w_{S->r} + w_{r->S} and, for every direction m,
   w_{S->r} + w_{r->S} +/- step * v_m (2M + 1 frames, batched): the central difference
   ``D_m = (I(+step) - I(-step)) / (2 step)`` is the image change per unit lambda_m.
2. **Global (head) part.** A whole-head motion moves every pixel coherently. Under brightness
   constancy, a small displacement field u(x) changes the image by ``-grad I(x) . u(x)``; we
   fit an affine field u(x) = A x + b (6 numbers: translation, rotation, scale, shear; head
   pose to first order) to ``D_m`` by least squares, with ``grad I`` from the unedited frame.
   The fitted change is the **head** part; being a least-squares projection, its energy and
   the residual's add up to ``||D_m||^2``.
3. **Local parts.** The residual's energy (sum of squares over colour channels) is split by
   region: the **mouth** box, the two **eyes** boxes, and everything else (**other**: the
   face outside those boxes, hair, neck, background).

``shares`` are these four energies divided by ``||D_m||^2`` (they sum to 1). The analysis runs
on the decoded frames area-averaged to at most :data:`ANALYSIS_SIZE` pixels (smoother
gradients, less memory); ``magnitude`` is the RMS change of the full-resolution frame per unit
lambda, in image units (the frame spans [-1, 1]; multiply by 127.5 for 8-bit levels).

**Boxes.** 68-point landmarks of the aligned crop when given
(:func:`float_core.train.losses.boxes_from_landmarks`), otherwise fixed fractions (x0, y0, x1,
y1) of the aligned crop (:class:`float_core.train.losses.ComponentBoxes`, the boxes training
uses): left eye (0.28, 0.30, 0.48, 0.50), right eye (0.52, 0.30, 0.72, 0.50), mouth (0.32,
0.55, 0.68, 0.79). They fit a frontal face in the reference crop; a strongly turned head
moves its components out of them.

**Grouping rule** (:func:`group_of`), in order:

1. a direction whose magnitude is at most :data:`INERT_MAGNITUDE` (numerically inert) is "other";
2. "head" when the global part holds at least :data:`HEAD_SHARE` (half) of the change;
3. otherwise "mouth" or "eyes", whichever region's share of the *local* change per unit of
   its area (its enrichment: 1 = uniform density) is larger, if at least :data:`ENRICHMENT`
   (three times the uniform density);
4. otherwise the larger of "head" and "other".

Presets (:func:`preset_offsets`) turn the grouping into per-frame lambda offsets for
``FloatPipeline.render``: "lips only", "calmer head", "more expressive".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import PRESET_NAMES, canonical_preset
from .progress import ProgressLike, as_progress

__all__ = [
    "ANALYSIS_SIZE",
    "DEFAULT_STEP",
    "DirectionInfo",
    "ENRICHMENT",
    "GROUPS",
    "HEAD_SHARE",
    "INERT_MAGNITUDE",
    "PRESETS",
    "REGIONS",
    "attribute_change",
    "component_boxes",
    "group_of",
    "label_directions",
    "measure_directions",
    "preset_offsets",
    "region_areas",
]

#: Direction groups, in the order the app shows them.
GROUPS: tuple[str, ...] = ("mouth", "eyes", "head", "other")
#: Regions of ``DirectionInfo.shares`` (see the module docstring).
REGIONS: tuple[str, ...] = ("mouth", "eyes", "head", "other")
#: Probe step in lambda units: small against the lambda range of generated motion, large
#: against float32 noise of the decoded frames.
DEFAULT_STEP = 0.1
#: Largest side of the frames the attribution runs on (area-averaged from the decoder's size).
ANALYSIS_SIZE = 128
#: "head" when the global (affine) part holds at least this share of the change.
HEAD_SHARE = 0.5
#: "mouth"/"eyes" when that region's local-change density is at least this many times uniform.
ENRICHMENT = 3.0
#: Below this magnitude (image units per unit lambda) a direction counts as inert.
INERT_MAGNITUDE = 1e-6

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DirectionInfo:
    """What one motion direction v_m does to the portrait (see the module docstring).

    Attributes:
        index: m, 0-based (the app's slider "λ{index + 1}").
        group: "mouth", "eyes", "head" or "other" (:func:`group_of`).
        shares: region -> fraction of the direction's image change (keys :data:`REGIONS`, sum 1).
        label: readable name, the group numbered in index order, e.g. "Mouth 1", "Head 2".
        magnitude: RMS image change per unit lambda (frame in [-1, 1]; x127.5 for 8-bit levels).
    """

    index: int
    group: str
    shares: dict[str, float]
    label: str
    magnitude: float

    @property
    def summary(self) -> str:
        """One line for a tooltip, e.g. "λ3: mouth 71%, head 12%, eyes 9%, other 8%; 0.042 per unit λ"."""
        parts = ", ".join(f"{r} {self.shares[r]:.0%}" for r in sorted(self.shares, key=self.shares.get, reverse=True))
        return f"λ{self.index + 1}: {parts}; {self.magnitude:.3g} per unit λ"


# --------------------------------------------------------------------------- regions
def component_boxes(image_size: int, landmarks: np.ndarray | Tensor | None = None) -> dict[str, Box]:
    """Pixel boxes (x0, y0, x1, y1) of "left_eye", "right_eye" and "mouth" in the aligned crop.

    From 68-point landmarks (68, 2) in crop pixels when given, otherwise the fixed fractions
    of :class:`float_core.train.losses.ComponentBoxes` (the boxes stage-1 training uses).
    """
    from .train.losses import boxes_from_landmarks, fixed_component_boxes

    boxes = (fixed_component_boxes(image_size) if landmarks is None
             else boxes_from_landmarks(torch.as_tensor(np.asarray(landmarks), dtype=torch.float32), image_size))
    return {name: tuple(float(v) for v in box.tolist()) for name, box in boxes.items()}


def _region_masks(boxes: Mapping[str, Box], box_size: int, size: int, device: torch.device) -> dict[str, Tensor]:
    """Boolean (size, size) masks "mouth", "eyes" (both eye boxes, minus the mouth) and "other".

    A pixel i (of ``size``) belongs to a box when its centre (i + 0.5) * box_size / size lies inside.
    """
    centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (box_size / size)

    def inside(box: Box) -> Tensor:
        x0, y0, x1, y1 = box
        in_x = (centres >= x0) & (centres < x1)
        in_y = (centres >= y0) & (centres < y1)
        return in_y[:, None] & in_x[None, :]

    mouth = inside(boxes["mouth"])
    eyes = (inside(boxes["left_eye"]) | inside(boxes["right_eye"])) & ~mouth
    if not mouth.any() or not eyes.any():
        raise ValueError(f"component boxes {dict(boxes)} do not cover any pixel of a {box_size}-px crop")
    return {"mouth": mouth, "eyes": eyes, "other": ~(mouth | eyes)}


# --------------------------------------------------------------------------- attribution
def _affine_design(base: Tensor) -> Tensor:
    """(C*H*W, 6) float64 Jacobian of the image w.r.t. an affine displacement A x + b.

    Brightness constancy: moving the content by u(x) changes I by -grad I . u; the sign is
    irrelevant for a least-squares fit. Coordinates are normalised to [-1, 1].
    """
    c, h, w = base.shape
    gy, gx = torch.gradient(base.double(), dim=(1, 2))  # per pixel of the analysis grid
    ys = torch.linspace(-1, 1, h, dtype=torch.float64, device=base.device)[:, None].expand(h, w)
    xs = torch.linspace(-1, 1, w, dtype=torch.float64, device=base.device)[None, :].expand(h, w)
    cols = [gx * xs, gx * ys, gx, gy * xs, gy * ys, gy]
    return torch.stack([col.reshape(-1) for col in cols], dim=1)


def attribute_change(delta: Tensor, base: Tensor, boxes: Mapping[str, Box], box_size: int) -> Tensor:
    """Split image changes into :data:`REGIONS` shares (the method of the module docstring).

    Args:
        delta: (M, C, H, W) image change per unit lambda of each direction.
        base: (C, H, W) the unedited frame (for the image gradient of the head fit).
        boxes: "left_eye", "right_eye", "mouth" pixel boxes (x0, y0, x1, y1) in a
            ``box_size`` crop (e.g. :func:`component_boxes`); the frames may be of another size.

    Returns:
        (M, 4) float64 shares in :data:`REGIONS` order, each row summing to 1 (a direction
        that changes nothing gets "other" = 1), on ``delta``'s device.
    """
    if delta.ndim != 4 or base.shape != delta.shape[1:]:
        raise ValueError(f"delta must be (M, C, H, W) and base (C, H, W) of the same frame size, got "
                         f"{tuple(delta.shape)} and {tuple(base.shape)}")
    if delta.shape[-1] != delta.shape[-2]:
        raise ValueError(f"frames must be square, got {tuple(delta.shape[-2:])}")
    m, size = delta.shape[0], delta.shape[-1]
    masks = _region_masks(boxes, box_size, size, delta.device)
    d = delta.double().reshape(m, -1)  # (M, N)
    jac = _affine_design(base)  # (N, 6)
    normal = jac.T @ jac
    coef = d @ jac @ torch.linalg.pinv(normal, hermitian=True, rtol=1e-9)  # (M, 6) least squares
    fit = coef @ jac.T
    residual = (d - fit).reshape(delta.shape).square().sum(dim=1)  # (M, H, W) local change energy
    total = d.square().sum(dim=1)
    energy = {"head": fit.square().sum(dim=1),
              **{name: residual[:, mask].sum(dim=1) for name, mask in masks.items()}}
    # Normalise by the sum of the parts (equal to ||D||^2 up to rounding: a projection).
    parts = torch.stack([energy[r] for r in REGIONS], dim=1)
    norm = parts.sum(dim=1, keepdim=True)
    inert = ~(total > 0)
    shares = torch.where(inert[:, None], torch.zeros_like(parts), parts / norm.clamp_min(1e-300))
    shares[inert, REGIONS.index("other")] = 1.0
    return shares


def region_areas(boxes: Mapping[str, Box], box_size: int, size: int = ANALYSIS_SIZE) -> dict[str, float]:
    """Fraction of the crop each of "mouth", "eyes", "other" covers (for the enrichment rule)."""
    masks = _region_masks(boxes, box_size, size, torch.device("cpu"))
    return {name: float(mask.float().mean()) for name, mask in masks.items()}


def group_of(shares: Mapping[str, float], areas: Mapping[str, float], magnitude: float) -> str:
    """The group of a direction by the rule of the module docstring (pure)."""
    if not magnitude > INERT_MAGNITUDE:
        return "other"
    if shares["head"] >= HEAD_SHARE:
        return "head"
    local = shares["mouth"] + shares["eyes"] + shares["other"]
    if local > 0:
        enrichment = {r: shares[r] / local / areas[r] for r in ("mouth", "eyes")}
        best = max(enrichment, key=enrichment.get)
        if enrichment[best] >= ENRICHMENT:
            return best
    return "head" if shares["head"] >= shares["other"] else "other"


def label_directions(groups: Sequence[str]) -> list[str]:
    """Readable labels: each group numbered in index order ("Mouth 1", "Mouth 2", "Head 1", ...)."""
    counts: dict[str, int] = {}
    labels = []
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
        labels.append(f"{g.capitalize()} {counts[g]}")
    return labels


# --------------------------------------------------------------------------- measurement
@torch.no_grad()
def measure_directions(
    decode: Callable[[Tensor], Tensor],
    source_motion: Tensor,
    basis: Tensor,
    *,
    landmarks: np.ndarray | Tensor | None = None,
    step: float = DEFAULT_STEP,
    batch_size: int = 8,
    progress: ProgressLike = None,
) -> list[DirectionInfo]:
    """Probe every direction from the source and describe it (pure; cache per portrait).

    Args:
        decode: motion latents (K, d) -> frames (K, 3, S, S) (e.g. ``FloatPipeline.decode_frames``
            bound to one source: it adds the identity latent w_{S->r}).
        source_motion: w_{r->S} (d,), the portrait's own motion (the probe's centre).
        basis: the orthonormal motion basis V (d, M).
        landmarks: optional 68-point landmarks (68, 2) of the aligned crop, in crop pixels.
        step: probe step in lambda units (central differences +/- ``step``).
        batch_size: frames decoded per call (pairs are kept together, so at least 2).
        progress: reported as ``("directions", frames_done, 2M + 1)``.

    Returns:
        M :class:`DirectionInfo` in index order.
    """
    if isinstance(step, bool) or not (isinstance(step, numbers.Real) and math.isfinite(step) and step > 0):
        raise ValueError(f"step: must be a positive number of lambda units, got {step!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be a whole number >= 1, got {batch_size!r}")
    if basis.ndim != 2 or source_motion.shape != basis.shape[:1]:
        raise ValueError(f"source_motion must be (d,) and basis (d, M); got {tuple(source_motion.shape)} "
                         f"and {tuple(basis.shape)}")
    report = as_progress(progress)
    num = basis.shape[1]
    total = 2 * num + 1
    basis = basis.to(source_motion)
    base_full = decode(source_motion[None])
    size = base_full.shape[-1]
    analysis = min(size, ANALYSIS_SIZE)

    def shrink(x: Tensor) -> Tensor:
        return x if analysis == size else F.interpolate(x, size=(analysis, analysis), mode="area")

    base = shrink(base_full.float())[0]
    report("directions", 1, total)
    pairs = max(1, batch_size // 2)
    deltas, magnitudes = [], []
    for start in range(0, num, pairs):
        dirs = basis[:, start:start + pairs].T  # (P, d)
        probes = torch.cat([source_motion + step * dirs, source_motion - step * dirs])
        frames = decode(probes).float()
        p = dirs.shape[0]
        diff = (frames[:p] - frames[p:]) / (2 * step)  # central difference, per unit lambda
        magnitudes.append(diff.square().mean(dim=(1, 2, 3)).sqrt())
        deltas.append(shrink(diff))
        report("directions", 1 + 2 * (start + p), total)
    boxes = component_boxes(size, landmarks)
    shares = attribute_change(torch.cat(deltas), base, boxes, size).cpu()
    mags = torch.cat(magnitudes).cpu()
    areas = region_areas(boxes, size, analysis)
    rows = [{r: float(v) for r, v in zip(REGIONS, row.tolist())} for row in shares]
    groups = [group_of(row, areas, float(mag)) for row, mag in zip(rows, mags.tolist())]
    return [DirectionInfo(index=m, group=g, shares=row, label=label, magnitude=float(mag))
            for m, (g, row, label, mag) in enumerate(zip(groups, rows, label_directions(groups), mags.tolist()))]


# --------------------------------------------------------------------------- presets
#: Preset name -> (groups it scales, default factor f). Each preset scales the motion of its
#: groups around the portrait's own coefficients: lambda' = lambda_S + f (lambda - lambda_S).
_PRESETS: Mapping[str, tuple[frozenset[str], float]] = MappingProxyType({
    "lips only": (frozenset({"head", "eyes"}), 0.0),       # hold head and eyes at the source
    "calmer head": (frozenset({"head"}), 0.5),             # halve head motion
    "more expressive": (frozenset({"mouth", "eyes"}), 1.5),  # amplify mouth and eye motion
})
#: Preset names, for menus (:data:`float_core.config.PRESET_NAMES`, where they are validated).
PRESETS: tuple[str, ...] = PRESET_NAMES
assert tuple(_PRESETS) == PRESETS, "every preset name has its groups and factor"


def preset_offsets(
    name: str,
    lambdas: np.ndarray | Tensor,
    source_lambda: np.ndarray | Tensor,
    directions: Sequence[DirectionInfo],
    strength: float | None = None,
) -> np.ndarray:
    """Per-frame lambda offsets (T, M) that apply a preset to generated motion.

    For the directions m of the preset's groups the offset is
    ``(f - 1) * (lambdas[t, m] - source_lambda[m])``, so the edited coefficients are
    ``source_lambda + f * (lambdas - source_lambda)``; other directions get 0. Presets:

    - "lips only": head and eye directions, f = 0: held at the source's values (no head
      motion, no blinks); mouth and "other" directions unchanged.
    - "calmer head": head directions, f = 0.5.
    - "more expressive": mouth and eye directions, f = 1.5.

    Args:
        name: one of :data:`PRESETS` (any case; :func:`~float_core.config.canonical_preset`).
        lambdas: generated coefficients (T, M) (``FloatPipeline.motion_lambda`` of the motion).
        source_lambda: the portrait's coefficients lambda(S) (M,).
        directions: :meth:`FloatPipeline.describe_directions` of the same portrait (M entries).
        strength: the factor f (None: the preset's default above), finite and >= 0.

    Returns:
        float32 offsets (T, M) for ``render(..., edits=...)``; add them to other edits.
    """
    key = canonical_preset(name)
    if key is None:
        raise ValueError(f"preset: expected one of {', '.join(repr(p) for p in PRESETS)}, got {name!r}")
    groups, default = _PRESETS[key]
    factor = default if strength is None else strength
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not math.isfinite(factor) or factor < 0:
        raise ValueError(f"strength: must be a finite number >= 0 (the scale of the motion), got {strength!r}")
    lam = _host_array("lambdas", lambdas)
    src = _host_array("source_lambda", source_lambda)
    if lam.ndim != 2 or src.shape != lam.shape[1:]:
        raise ValueError(f"lambdas must be (frames, M) and source_lambda (M,), got {lam.shape} and {src.shape}")
    if len(directions) != lam.shape[1]:
        raise ValueError(f"directions: expected {lam.shape[1]} entries (one per motion direction), "
                         f"got {len(directions)}")
    selected = np.array([d.group in groups for d in directions])
    offsets = np.zeros_like(lam)
    offsets[:, selected] = (factor - 1.0) * (lam[:, selected] - src[selected])
    return offsets


def _host_array(name: str, value: np.ndarray | Tensor) -> np.ndarray:
    """A float32 NumPy copy (device tensors moved explicitly), finite."""
    arr = value.detach().to("cpu", torch.float32).numpy() if torch.is_tensor(value) else np.asarray(value, np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: must be finite numbers")
    return arr.astype(np.float32, copy=True)
