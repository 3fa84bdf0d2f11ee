"""VGG-19 feature extractor for the perceptual losses of stage 1 (paper A.2, A.3, Eq. 15-16).

FLOAT's motion auto-encoder is trained with a VGG-19 [66] multi-scale perceptual loss
L_lp [95] and its masked variant L_comp-lp (Eq. 15), "N = 4 scales of VGG-19 feature
pyramids for each image pyramid level". The paper does not name the four layers; we use the
standard multi-scale choice relu1_2, relu2_2, relu3_4 and relu4_4 (the last ReLU of each of
the first four blocks, at strides 1, 2, 4 and 8), configurable through ``layers``.

The trunk reproduces torchvision's ``vgg19().features`` (configuration "E") module by module,
so its ImageNet weights (``vgg19-dcbb9e9d.pth``, or the same tensors as safetensors in
``timm/vgg19.tv_in1k``) load unchanged, without importing torchvision (not installable here).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..weights import WeightsError, first_line, hub_offline, read_tensors

__all__ = [
    "DEFAULT_VGG_LAYERS",
    "DEFAULT_VGG_SOURCE",
    "VGG19_CONFIG",
    "VGG19_LAYER_INDEX",
    "VGG19Features",
    "load_vgg19",
]

#: torchvision's VGG configuration "E" (VGG-19): conv output channels, "M" = 2x2 max-pool.
VGG19_CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                       512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: The four perceptual-loss scales (strides 1, 2, 4, 8): the last ReLU of blocks 1-4.
DEFAULT_VGG_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")
#: Default weights: torchvision's ImageNet VGG-19 stored as safetensors on the Hugging Face hub
#: (timm keeps ``features.N.*`` names and renames the classifier to ``pre_logits``/``head``).
DEFAULT_VGG_SOURCE = "timm/vgg19.tv_in1k"
#: Weights file inside :data:`DEFAULT_VGG_SOURCE` (and any other hub id given).
HUB_WEIGHTS_FILE = "model.safetensors"
#: ImageNet normalisation the torchvision weights were trained with (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_index() -> dict[str, int]:
    """Names of the ``features`` modules: conv{b}_{i}, relu{b}_{i}, pool{b} -> index."""
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for v in VGG19_CONFIG:
        if v == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv = block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
            conv += 1
    return names


#: ``relu3_4`` -> 17 etc.: index of each named layer in torchvision's ``vgg19().features``.
VGG19_LAYER_INDEX: dict[str, int] = _layer_index()


class VGG19Features(nn.Module):
    """VGG-19 convolutional trunk returning features at several layers.

    ``features`` is an ``nn.Sequential`` laid out exactly like torchvision's (convs at indices
    0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34), so ``features.N.weight`` keys
    match the ImageNet checkpoint. Only the layers up to the deepest requested one are run.

    Args:
        layers: names from :data:`VGG19_LAYER_INDEX` whose outputs ``forward`` returns, in order.
    """

    def __init__(self, layers: Sequence[str] = DEFAULT_VGG_LAYERS):
        super().__init__()
        unknown = [name for name in layers if name not in VGG19_LAYER_INDEX]
        if unknown or not layers:
            raise ValueError(f"unknown VGG-19 layers {unknown or list(layers)}; "
                             f"choose from {sorted(VGG19_LAYER_INDEX)}")
        self.layers = tuple(layers)
        self._indices = tuple(VGG19_LAYER_INDEX[name] for name in self.layers)
        modules: list[nn.Module] = []
        in_ch = 3
        for v in VGG19_CONFIG:
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU()]
                in_ch = int(v)
        self.features = nn.Sequential(*modules)
        # Buffers, not persistent: the checkpoint has no such keys.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's init (Kaiming-normal fan-out, zero bias): keeps random features O(1)."""
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def freeze(self) -> "VGG19Features":
        """Eval mode and no parameter gradients: the loss network is fixed. Returns ``self``."""
        self.requires_grad_(False)
        return self.eval()

    def forward(self, x: Tensor) -> list[Tensor]:
        """Images (B, 3, H, W) in [-1, 1] -> the features of :attr:`layers`, in that order."""
        h = ((x + 1) * 0.5 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {idx: pos for pos, idx in enumerate(self._indices)}
        out: list[Tensor | None] = [None] * len(self._indices)
        for idx in range(max(self._indices) + 1):
            h = self.features[idx](h)
            if idx in wanted:
                out[wanted[idx]] = h
        return out  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"layers={self.layers}"


# --------------------------------------------------------------------------- loading
def _advice() -> str:
    return (f"The perceptual losses need ImageNet VGG-19 weights: on a machine online, run "
            f"`hf download {DEFAULT_VGG_SOURCE} {HUB_WEIGHTS_FILE} --local-dir checkpoints/vgg19` "
            f"(older huggingface_hub: `huggingface-cli download ...`), or fetch torchvision's "
            f"vgg19-dcbb9e9d.pth, and pass the file with --vgg PATH "
            f"(e.g. --vgg checkpoints/vgg19/{HUB_WEIGHTS_FILE}).")


def _hub_file(repo_id: str) -> Path:
    """``model.safetensors`` of a hub repository, from the cache or downloaded; fails fast offline."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, HUB_WEIGHTS_FILE))
    except Exception as exc:  # offline, unknown id, network: the same advice for all
        offline = " (offline mode is on: HF_HUB_OFFLINE=1)" if hub_offline() else ""
        raise WeightsError(f"cannot get {HUB_WEIGHTS_FILE} of {repo_id!r} from Hugging Face{offline}: "
                           f"{type(exc).__name__}: {first_line(exc)}.\n{_advice()}") from exc


def _feature_state_dict(tensors: Mapping[str, Tensor], model: VGG19Features, origin: str) -> dict[str, Tensor]:
    """The ``features.*`` tensors of a checkpoint, checked against ``model``.

    Classifier keys (torchvision ``classifier.*``, timm ``pre_logits.*``/``head.*``) are ignored;
    a leading ``module.`` (DataParallel saves) is stripped.
    """
    feats = {}
    for key, value in tensors.items():
        key = key.removeprefix("module.")
        if key.startswith("features."):
            feats[key] = value
    expected = model.state_dict()
    for key, ref in expected.items():
        if key not in feats:
            raise WeightsError(f"{origin} is not a VGG-19 checkpoint: key {key!r} is missing "
                               f"(found {len(feats)} features.* keys).\n{_advice()}")
        if tuple(feats[key].shape) != tuple(ref.shape):
            raise WeightsError(f"{origin} does not fit VGG-19: {key!r} has shape {tuple(feats[key].shape)}, "
                               f"expected {tuple(ref.shape)}.\n{_advice()}")
    extra = [key for key in feats if key not in expected]
    if extra:  # e.g. vgg19_bn's BatchNorm tensors: a different network
        raise WeightsError(f"{origin} is not a plain VGG-19 checkpoint: unexpected key {extra[0]!r} "
                           f"(a batch-norm VGG?).\n{_advice()}")
    return {key: feats[key].to(ref.dtype) for key, ref in expected.items()}


def load_vgg19(source: str | Path | None = DEFAULT_VGG_SOURCE,
               layers: Sequence[str] = DEFAULT_VGG_LAYERS) -> VGG19Features:
    """A frozen :class:`VGG19Features` with ImageNet weights.

    Args:
        source: a local ``.pth``/``.pt``/``.safetensors`` file (torchvision's layout: ``features.*``
            plus ignored ``classifier.*`` keys); a Hugging Face model id whose ``model.safetensors``
            holds those tensors (default :data:`DEFAULT_VGG_SOURCE`; ``None`` means the default); or
            ``"random"``: torchvision's random init, for tests only.
        layers: feature layers returned by ``forward``.

    Raises:
        WeightsError: missing file, hub unreachable or offline (fails at once, saying which file
            to fetch and how), or a checkpoint whose keys/shapes do not fit (naming the first key).
    """
    model = VGG19Features(layers)
    if source is None:
        source = DEFAULT_VGG_SOURCE
    text = str(source)
    if text == "random":
        warnings.warn("VGG-19 with random weights: the perceptual losses (L_lp, L_comp-lp) are "
                      "meaningless; use this only for tests.", stacklevel=2)
        return model.freeze()
    path = Path(source).expanduser()
    if path.is_file():
        origin = str(path)
    elif isinstance(source, Path) or path.suffix.lower() in {".pth", ".pt", ".bin", ".safetensors"} \
            or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise WeightsError(f"VGG-19 weights file {text!r} does not exist.\n{_advice()}")
    else:
        path = _hub_file(text)
        origin = f"{text}/{HUB_WEIGHTS_FILE}"
    state = _feature_state_dict(read_tensors(path), model, origin)
    model.load_state_dict(state)
    return model.freeze()
