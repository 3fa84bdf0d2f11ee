"""Where the FLOAT weights come from, and how they are checked, loaded, downloaded and converted.

One place answers every weights question (where the released weights are published, and the
Hugging Face folder layouts):

* :func:`resolve_sources` finds the files: a folder in the authors' layout, a single
  ``.pth``/``.safetensors`` file, ``$FLOAT_CHECKPOINT_DIR`` or ``./checkpoints``; the two
  wav2vec2 models from local folders or Hugging Face ids.
* :func:`load_state_dict` merges them into one state dict in ``float.pth`` naming
  (``audio_encoder.wav2vec2.*``, ``emotion_encoder.wav2vec2_for_emotion.*``), with the
  weight-norm tensors under the names the installed torch uses, and without buffers.
* :func:`validate_state_dict` compares names and shapes with :func:`expected_shapes` (the
  manifest of the released checkpoint, or the model itself for other configurations) and
  says exactly what is wrong *before* anything is loaded.
* :func:`load_model` builds :class:`~float_core.models.float_model.FloatModel` and loads it.
* :func:`download_weights` and :func:`convert_to_safetensors` back the ``download`` and
  ``convert`` sub-commands (:func:`add_subparser`).

torch, safetensors and huggingface_hub are imported inside the functions that need them so
that ``python -m float_core --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from .config import CONFIG_FILE_NAME, FloatConfig

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from .models.float_model import FloatModel

__all__ = [
    "WeightsError",
    "WeightSources",
    "resolve_sources",
    "load_state_dict",
    "expected_shapes",
    "validate_state_dict",
    "load_model",
    "download_weights",
    "convert_to_safetensors",
    "add_subparser",
    "authors_layout",
]

#: Environment variable naming the default checkpoint folder (else ``./checkpoints``).
CHECKPOINT_DIR_ENV = "FLOAT_CHECKPOINT_DIR"
#: Environment variable naming the Hugging Face repository that ``download`` fetches.
WEIGHTS_REPO_ENV = "FLOAT_WEIGHTS_REPO"
#: Public mirror of the authors' ``checkpoints/`` folder (float.pth + the two wav2vec2 folders).
DEFAULT_WEIGHTS_REPO = "yuvraj108c/float"
#: The FLOAT checkpoint inside a folder in the authors' layout.
FLOAT_CHECKPOINT_NAME = "float.pth"
#: File suffixes accepted for a single checkpoint file.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

#: Longest list of key problems printed in one error message.
_MAX_LISTED = 20
#: Weight-norm tensor names: the hub files' legacy names and torch's parametrization names.
_WEIGHT_NORM_ALIASES = (("weight_g", "parametrizations.weight.original0"),
                        ("weight_v", "parametrizations.weight.original1"))
#: Hugging Face model ids look like ``owner/name``.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class WeightsError(ValueError):
    """The weights are missing, incomplete or do not fit the model; the message says what to do."""

    @classmethod
    def listing(cls, summary: str, problems: Sequence[str], advice: str) -> "WeightsError":
        """An error whose message is ``summary``, one line per problem (at most 20), then ``advice``."""
        lines = [summary, *(f"  {p}" for p in problems[:_MAX_LISTED])]
        if len(problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
        lines.append(advice)
        return cls("\n".join(lines))


@dataclass(frozen=True)
class _HubModel:
    """One of the two public wav2vec2 models that ``float.pth`` may leave out."""

    label: str  # for messages
    folder: str  # folder name in the authors' layout
    hub_id: str  # public Hugging Face id
    option: str  # CLI option that overrides it
    files: tuple[str, ...]  # files of the folder in the authors' layout
    target_prefix: str  # prefix of its keys in float.pth naming
    keep: tuple[str, ...]  # key prefixes used from the folder's weights (lm_head etc. are dropped)


_AUDIO = _HubModel(
    label="audio model", folder="wav2vec2-base-960h", hub_id="facebook/wav2vec2-base-960h",
    option="--audio-model", files=("config.json", "model.safetensors", "preprocessor_config.json"),
    target_prefix="audio_encoder.", keep=("wav2vec2.",),
)
_EMOTION = _HubModel(
    label="emotion model", folder="wav2vec-english-speech-emotion-recognition",
    hub_id="r-f/wav2vec-english-speech-emotion-recognition", option="--emotion-model",
    files=("config.json", "preprocessor_config.json", "pytorch_model.bin"),
    target_prefix="emotion_encoder.wav2vec2_for_emotion.", keep=("wav2vec2.", "classifier."),
)
_HUB_MODELS = (_AUDIO, _EMOTION)
#: Weight files of a Hugging Face model folder, in order of preference.
_HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


# --------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class WeightSources:
    """Where each part of the weights comes from.

    Attributes:
        checkpoint: the FLOAT checkpoint file (``float.pth`` or a single ``.safetensors``/``.pth``
            file that may also hold the wav2vec2 weights).
        audio_model: folder of the wav2vec2-base-960h model (``Wav2Vec2ForCTC`` files), used for
            the ``audio_encoder.wav2vec2.*`` keys the checkpoint lacks; None if not available.
        emotion_model: folder of the speech-emotion model, used for the
            ``emotion_encoder.wav2vec2_for_emotion.*`` keys the checkpoint lacks; None if not available.
    """

    checkpoint: Path
    audio_model: Path | None = None
    emotion_model: Path | None = None


def authors_layout(root: str | os.PathLike[str] = "checkpoints") -> list[Path]:
    """Every file of the authors' ``checkpoints/`` layout under ``root``, float.pth first."""
    root = Path(root)
    return [root / FLOAT_CHECKPOINT_NAME] + [root / m.folder / f for m in _HUB_MODELS for f in m.files]


def _layout_advice(root: Path, download: bool = True) -> str:
    """What to put where, and how to get it (``download``: suggest the ``download`` command)."""
    files = "\n".join(f"  {p}" for p in authors_layout(root))
    if download:
        how = (f"run `python -m float_core download --dir {root}` to fetch them from the Hugging Face "
               f"repository {DEFAULT_WEIGHTS_REPO}, or pass a single .pth/.safetensors file that holds "
               f"every key (`python -m float_core convert` writes one).")
    else:
        how = (f"float.pth is linked from the FLOAT authors' README; the two folders are the Hugging Face "
               f"models {_AUDIO.hub_id} and {_EMOTION.hub_id}.")
    return f"Put the released weights in the authors' layout:\n{files}\n{how}"


def resolve_sources(checkpoint: str | os.PathLike[str] | None = None,
                    audio_model: str | os.PathLike[str] | None = None,
                    emotion_model: str | os.PathLike[str] | None = None) -> WeightSources:
    """Find the weight files.

    Args:
        checkpoint: a folder in the authors' layout (``float.pth``, ``wav2vec2-base-960h/``,
            ``wav2vec-english-speech-emotion-recognition/``), a folder holding one ``.safetensors``
            file, a single ``.pth``/``.pt``/``.bin``/``.safetensors`` file, or None for
            ``$FLOAT_CHECKPOINT_DIR``, else ``./checkpoints``.
        audio_model, emotion_model: a local folder or a Hugging Face model id. None means the
            folder of that name next to the checkpoint file, if present (else the checkpoint
            must hold those weights itself; :func:`load_state_dict` checks that).

    Raises:
        WeightsError: a file or folder is missing (the message lists the files to place and
            where), or a Hugging Face id cannot be fetched (offline, unknown id).
    """
    if checkpoint is None:
        checkpoint = os.environ.get(CHECKPOINT_DIR_ENV) or "checkpoints"
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        root = path
        file = _checkpoint_in_folder(path)
    elif path.is_file():
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise WeightsError(f"checkpoint {path}: unsupported file type {path.suffix!r}; "
                               f"accepted: {', '.join(CHECKPOINT_SUFFIXES)}")
        root, file = path.parent, path
    else:
        raise WeightsError(f"no FLOAT checkpoint at {path} (not a file or folder).\n" + _layout_advice(path))
    return WeightSources(
        checkpoint=file,
        audio_model=_resolve_hub_model(audio_model, _AUDIO, root),
        emotion_model=_resolve_hub_model(emotion_model, _EMOTION, root),
    )


def _checkpoint_in_folder(folder: Path) -> Path:
    """``float.pth`` of the authors' layout, else the folder's only ``.safetensors`` file."""
    if (folder / FLOAT_CHECKPOINT_NAME).is_file():
        return folder / FLOAT_CHECKPOINT_NAME
    single = sorted(folder.glob("*.safetensors"))
    if len(single) == 1:
        return single[0]
    found = f" (found {len(single)} .safetensors files: {', '.join(p.name for p in single)})" if single else ""
    raise WeightsError(f"no {FLOAT_CHECKPOINT_NAME} in {folder}{found}.\n" + _layout_advice(folder))


def _resolve_hub_model(value: str | os.PathLike[str] | None, model: _HubModel, root: Path) -> Path | None:
    """The local folder of one wav2vec2 model: given folder, downloaded hub id, or the layout folder."""
    if value is None:
        folder = root / model.folder
        if not folder.is_dir():
            return None  # fine if the checkpoint holds these weights; load_state_dict checks
        _hub_weights_file(folder, model)
        return folder
    folder = Path(value).expanduser()
    if folder.is_dir():
        _hub_weights_file(folder, model)
        return folder
    if not _HUB_ID.match(str(value)):
        raise WeightsError(f"{model.option} {value}: neither a folder nor a Hugging Face model id "
                           f"(such as {model.hub_id}).")
    return _snapshot(str(value), model)


def _snapshot(repo_id: str, model: _HubModel) -> Path:
    """Download (or find in the cache) a Hugging Face model's config and weights."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", *_HUB_WEIGHT_FILES]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # every hub failure (offline, unknown id, network) means the same to the user
        raise WeightsError(
            f"cannot fetch the {model.label} {repo_id!r} from Hugging Face "
            f"({type(exc).__name__}: {first_line(exc)}).\n"
            f"Put its files ({', '.join(model.files)}) in a folder and pass it with {model.option}, "
            f"or place them in checkpoints/{model.folder}/ (`python -m float_core download` fetches "
            f"everything).") from exc
    _hub_weights_file(folder, model)
    return folder


def _hub_weights_file(folder: Path, model: _HubModel) -> Path:
    """The weights file of a Hugging Face model folder (safetensors preferred)."""
    for name in _HUB_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"the {model.label} folder {folder} has no weights file "
                       f"({' or '.join(_HUB_WEIGHT_FILES)}).\n"
                       f"Put the files of {model.hub_id} there: {', '.join(model.files)}.")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else "no details"


# --------------------------------------------------------------------------- reading files
def read_tensors(path: Path) -> dict[str, "torch.Tensor"]:
    """All tensors of a ``.safetensors`` or ``torch.save`` file, on the CPU.

    torch files are opened with ``weights_only=True`` (no code execution) and memory-mapped
    when they use the zip format, so a 2.4 GB checkpoint is not read twice into memory.
    """
    import pickle

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix.lower() == ".safetensors":
            data: Any = load_file(path, device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except FileNotFoundError as exc:
        raise WeightsError(f"{path} does not exist.") from exc
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():  # complete, but holds more than tensors
            raise WeightsError(f"{path} holds objects other than tensors, which are not loaded for "
                               f"safety (torch.load weights_only=True); save only the state dict.") from exc
        raise WeightsError(_incomplete(path, exc)) from exc
    except (RuntimeError, OSError, EOFError, SafetensorError) as exc:
        raise WeightsError(_incomplete(path, exc)) from exc
    data = _unwrap_state_dict(data)
    if data is None:
        raise WeightsError(f"{path} does not hold a state dict (a mapping from key names to tensors).")
    return data


def _incomplete(path: Path, exc: BaseException) -> str:
    return (f"{path} is incomplete or corrupt and cannot be read ({type(exc).__name__}: {first_line(exc)}).\n"
            f"Delete it and download it again (`python -m float_core download`).")


def _unwrap_state_dict(data: Any) -> dict[str, "torch.Tensor"] | None:
    """The state dict in ``data``: itself, or under a ``state_dict``/``model`` entry (training saves)."""
    import torch

    def is_state_dict(obj: Any) -> bool:
        return isinstance(obj, Mapping) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())

    if is_state_dict(data):
        return dict(data)
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if is_state_dict(data.get(key)):
                return dict(data[key])
    return None


def _hub_model_state_dict(folder: Path, model: _HubModel) -> dict[str, "torch.Tensor"]:
    """A wav2vec2 folder's weights renamed to float.pth naming; other heads (``lm_head``) dropped."""
    raw = read_tensors(_hub_weights_file(folder, model))
    return {model.target_prefix + k: v for k, v in raw.items() if k.startswith(model.keep)}


def _rename_weight_norm(state_dict: dict[str, "torch.Tensor"], known: Iterable[str]) -> dict[str, "torch.Tensor"]:
    """Rename ``weight_g``/``weight_v`` <-> ``parametrizations.weight.original0/1`` to the names in ``known``.

    Hub files use the legacy names, state dicts saved by newer torch the parametrization names;
    the tensors are identical (g, v), only the names differ.
    """
    known = set(known)
    renamed = {}
    for key, value in state_dict.items():
        if key not in known:
            for old, new in _WEIGHT_NORM_ALIASES:
                for a, b in ((old, new), (new, old)):
                    if key.endswith("." + a) and key[: -len(a)] + b in known:
                        key = key[: -len(a)] + b
        renamed[key] = value
    return renamed


# --------------------------------------------------------------------------- expected keys
def _manifest() -> dict[str, Any]:
    """The manifest of the released checkpoint (every key, shape, buffer flag)."""
    text = resources.files("float_core").joinpath("data/float_manifest.json").read_text(encoding="utf-8")
    return json.loads(text)


def _expected(config: FloatConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(parameter shapes, persistent buffer shapes) of ``FloatModel(config)``."""
    if config == FloatConfig.official():
        params, buffers = {}, {}
        for key, shape, is_buffer, _policy in _manifest()["entries"]:
            (buffers if is_buffer else params)[key] = tuple(shape)
        return params, buffers
    import torch

    from .models.float_model import FloatModel

    with torch.device("meta"):  # shapes only: no memory, no random initialisation cost
        model = FloatModel(config)
    param_names = {name for name, _ in model.named_parameters()}
    params, buffers = {}, {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        (params if key in param_names else buffers)[key] = tuple(tensor.shape)
    return params, buffers


def expected_shapes(config: FloatConfig, *, include_buffers: bool = False) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every parameter of ``FloatModel(config)`` (float.pth naming).

    For ``FloatConfig.official()`` this is the manifest of the released checkpoint; for any
    other configuration the model is built on the meta device (no memory, no initialisation).

    Args:
        config: the model configuration.
        include_buffers: also list the persistent buffers (FIR kernels, ``fmt.alignment_mask``),
            which are never loaded from files (the constructors rebuild them).
    """
    params, buffers = _expected(config)
    return {**params, **buffers} if include_buffers else params


# --------------------------------------------------------------------------- validation and loading
def validate_state_dict(state_dict: Mapping[str, "torch.Tensor"], config: FloatConfig) -> None:
    """Check names and shapes of every parameter against ``FloatModel(config)``.

    Buffers present in ``state_dict`` are ignored (they are never loaded).

    Raises:
        WeightsError: naming each missing, unexpected and mis-shaped key (expected vs found).
    """
    _validate(state_dict, *_expected(config))


def _validate(state_dict: Mapping[str, "torch.Tensor"], params: Mapping[str, tuple[int, ...]],
              buffers: Mapping[str, tuple[int, ...]]) -> None:
    """:func:`validate_state_dict` with the expected shapes already known."""
    given = {k: v for k, v in state_dict.items() if k not in buffers}
    problems = [f"missing: {k} (expected shape {_fmt(s)})" for k, s in params.items() if k not in given]
    problems += [f"unexpected: {k} (shape {_fmt(tuple(v.shape))})" for k, v in given.items() if k not in params]
    problems += [f"wrong shape: {k}: expected {_fmt(params[k])}, found {_fmt(tuple(v.shape))}"
                 for k, v in given.items() if k in params and tuple(v.shape) != params[k]]
    problems += [f"wrong dtype: {k}: {v.dtype} (expected a floating-point tensor)"
                 for k, v in given.items() if k in params and not v.is_floating_point()]
    if problems:
        raise WeightsError.listing(
            f"the weights do not fit the FLOAT model ({len(problems)} problem(s) among "
            f"{len(given)} keys; {len(params)} parameters expected):",
            problems,
            "Check that the checkpoint is the released float.pth (or a file written by "
            "`python -m float_core convert`) and that the wav2vec2 folders hold "
            f"{_AUDIO.hub_id} and {_EMOTION.hub_id}.")


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def load_state_dict(sources: WeightSources, config: FloatConfig) -> dict[str, "torch.Tensor"]:
    """Every parameter in float.pth naming, merged from the checkpoint and the wav2vec2 folders.

    Keys present in the checkpoint win over the folders (as in the reference loader, which
    copies float.pth's tensors over the pretrained wav2vec2 models); a folder is read only when
    the checkpoint lacks some of its keys. Weight-norm names are normalised to those of the
    installed torch, buffers and unused heads (``lm_head``) are dropped. The result is not
    validated (see :func:`validate_state_dict`).

    Raises:
        WeightsError: a file is unreadable (truncated, corrupt), or the checkpoint lacks a
            wav2vec2 model's weights and no folder for it was found.
    """
    return _load_state_dict(sources, *_expected(config))


def _load_state_dict(sources: WeightSources, params: Mapping[str, tuple[int, ...]],
                     buffers: Mapping[str, tuple[int, ...]]) -> dict[str, "torch.Tensor"]:
    """:func:`load_state_dict` with the expected shapes already known."""
    state_dict = _rename_weight_norm(read_tensors(sources.checkpoint), params)
    for model, folder in ((_AUDIO, sources.audio_model), (_EMOTION, sources.emotion_model)):
        prefixes = tuple(model.target_prefix + p for p in model.keep)
        missing = [k for k in params if k.startswith(prefixes) and k not in state_dict]
        if not missing:
            continue
        if folder is None:
            raise WeightsError(
                f"{sources.checkpoint} lacks the {model.label} weights ({len(missing)} keys such as "
                f"{missing[0]}) and no {model.label} folder was given.\n"
                f"Put {', '.join(model.files)} of {model.hub_id} in "
                f"{sources.checkpoint.parent / model.folder}/, or pass {model.option} with a folder "
                f"or the id {model.hub_id} (`python -m float_core download` fetches everything).")
        for key, value in _rename_weight_norm(_hub_model_state_dict(folder, model), params).items():
            state_dict.setdefault(key, value)
    return {k: v for k, v in state_dict.items() if k not in buffers}


def pretrained_encoder_weights(config: FloatConfig, audio_model: str | os.PathLike[str] | None = None,
                               emotion_model: str | os.PathLike[str] | None = None) -> dict[str, "torch.Tensor"]:
    """The two wav2vec2 models' weights in float.pth naming, from local folders or Hugging Face ids.

    Used to start training without the released ``float.pth``: the audio and emotion encoders are
    the public pretrained models (paper Sec. 4.2), the rest starts from random weights. Only the
    models that are given are read; the result is validated against ``FloatModel(config)``.
    """
    params, _ = _expected(config)
    state_dict: dict[str, "torch.Tensor"] = {}
    for model, value in ((_AUDIO, audio_model), (_EMOTION, emotion_model)):
        if value is None or str(value) == "":
            continue
        folder = _resolve_hub_model(value, model, Path("."))
        assert folder is not None  # a given value always resolves (or raises)
        state_dict.update(_rename_weight_norm(_hub_model_state_dict(folder, model), params))
    problems = [f"unexpected: {k}" for k in state_dict if k not in params]
    problems += [f"wrong shape: {k}: expected {_fmt(params[k])}, found {_fmt(tuple(v.shape))}"
                 for k, v in state_dict.items() if k in params and tuple(v.shape) != params[k]]
    if problems:
        raise WeightsError.listing("the wav2vec2 weights do not fit the model configuration:", problems,
                                   f"Use {_AUDIO.hub_id} and {_EMOTION.hub_id} (or models of the same size).")
    return state_dict


def load_model(config: FloatConfig, sources: WeightSources | None = None,
               state_dict: Mapping[str, "torch.Tensor"] | None = None,
               device: "str | torch.device" = "cpu", dtype: "torch.dtype | str" = "float32") -> "FloatModel":
    """Build ``FloatModel(config)`` and load validated weights into it, in eval mode.

    Args:
        config: the model configuration (``FloatConfig.official()`` for the released weights).
        sources: where the weights are (:func:`resolve_sources`); None with no ``state_dict``
            means ``resolve_sources()`` (``$FLOAT_CHECKPOINT_DIR`` or ``./checkpoints``).
        state_dict: weights already in memory (float.pth naming), instead of ``sources``.
        device: where the model goes.
        dtype: "float32", "float16" or "bfloat16" (or the torch dtype); floating tensors are cast.

    Raises:
        ValueError: both ``sources`` and ``state_dict`` given, or an unknown ``dtype``.
        WeightsError: the weights are missing or do not fit (raised before building the model).
    """
    from .precision import parse_dtype

    torch_dtype = parse_dtype(dtype)
    if sources is not None and state_dict is not None:
        raise ValueError("load_model: pass either sources or state_dict, not both")
    from .models.float_model import FloatModel

    params, buffers = _expected(config)
    user_tensors = state_dict is not None  # copied into the model, never aliased
    if state_dict is None:
        state_dict = _load_state_dict(sources if sources is not None else resolve_sources(), params, buffers)
    else:
        state_dict = {k: v for k, v in _rename_weight_norm(dict(state_dict), params).items() if k not in buffers}
    _validate(state_dict, params, buffers)

    with _no_random_init():  # every parameter is overwritten below (validated above)
        model = FloatModel(config)
    # strict=False only because buffers are rebuilt by the constructors, never loaded; every
    # parameter is required (checked above and again here). Tensors read from files here are
    # assigned rather than copied: no second 2.4 GB copy, and memory-mapped pages stay shared.
    result = model.load_state_dict(state_dict, strict=False, assign=not user_tensors)
    disagreements = [*result.unexpected_keys, *(k for k in result.missing_keys if k not in buffers)]
    if disagreements:
        raise WeightsError.listing("FloatModel and the validated weights disagree (a bug):", disagreements,
                                   "Please report it.")
    return model.to(device=device, dtype=torch_dtype).eval()


@contextmanager
def _no_random_init() -> Iterator[None]:
    """Skip the random initialisation of torch and transformers layers while building a model.

    Building the official model spends ~10 s drawing random numbers that the checkpoint then
    overwrites. This is transformers' own context for that (as used by ``from_pretrained``):
    it swaps ``torch.nn.init`` functions for no-ops process-wide for the duration, so build
    models for training elsewhere, not concurrently in another thread.
    """
    try:
        from transformers.initialization import no_init_weights  # transformers >= 5
    except ImportError:  # pragma: no cover - transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield


# --------------------------------------------------------------------------- download and convert
def hub_offline() -> bool:
    """Whether the Hugging Face Hub offline mode is on (env var read now, or at hub import time)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def download_weights(repo_id: str | None = None, local_dir: str | os.PathLike[str] = "checkpoints",
                     token: str | None = None) -> Path:
    """Download the released weights in the authors' layout (with progress bars).

    Args:
        repo_id: Hugging Face repository; default ``$FLOAT_WEIGHTS_REPO``, else
            ``yuvraj108c/float`` (a public mirror of the authors' ``checkpoints/`` folder).
        local_dir: destination folder.
        token: Hugging Face token for private or gated mirrors (default: the hub's login).

    Returns:
        ``local_dir``; pass it to :func:`resolve_sources`.

    Raises:
        WeightsError: offline (``HF_HUB_OFFLINE=1``) or the hub cannot be reached; raised
            within seconds, naming the files to place by hand and where.
    """
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    repo_id = repo_id or os.environ.get(WEIGHTS_REPO_ENV) or DEFAULT_WEIGHTS_REPO
    local_dir = Path(local_dir)

    def failure(reason: str) -> WeightsError:
        return WeightsError(f"cannot download the FLOAT weights from Hugging Face ({repo_id}): {reason}.\n"
                            + _layout_advice(local_dir, download=False))

    if hub_offline():
        raise failure("offline mode is on (HF_HUB_OFFLINE=1)")
    try:
        snapshot_download(repo_id, local_dir=local_dir, token=token, tqdm_class=tqdm,
                          allow_patterns=["*.pth", "*.safetensors", "*.bin", "*.json"])
    except Exception as exc:  # connection, authentication, unknown repo: one message for all
        raise failure(f"{type(exc).__name__}: {first_line(exc)}") from exc
    try:  # the hub returns an existing local_dir unchanged when unreachable: check it is complete
        resolve_sources(local_dir)
    except WeightsError as exc:
        raise failure(f"the download is incomplete ({first_line(exc)})") from exc
    return local_dir


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(temporary_name)`` next to ``path``, then rename: a crash never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def save_weights(state_dict: Mapping[str, "torch.Tensor"], config: FloatConfig,
                 path: str | os.PathLike[str]) -> Path:
    """Write every parameter (float.pth naming) to ``path`` and the model size beside it.

    ``path`` ends in ``.safetensors`` (safetensors) or ``.pth`` (``torch.save``, as the released
    ``float.pth``). The tensors are validated against ``config`` first, copied to the CPU and
    written under a temporary name, then renamed. A non-official ``config`` is written to
    :data:`~float_core.config.CONFIG_FILE_NAME` in the same folder (a stale one is removed for
    the official size), which is what ``FloatPipeline.from_pretrained`` reads back. The keys are
    the released checkpoint's: every parameter plus the persistent buffers (FIR kernels, the
    attention mask), which loading ignores and the constructors rebuild.

    Raises:
        ValueError: an unsupported suffix. WeightsError: the tensors do not fit ``config``.
    """
    import torch

    path = Path(path)
    if path.suffix not in (".safetensors", ".pth"):
        raise ValueError(f"weights file must end in .safetensors or .pth, got {path.name!r}")
    validate_state_dict(state_dict, config)
    keys = expected_shapes(config, include_buffers=True)
    tensors, seen = {}, set()
    for k, v in state_dict.items():
        if k in keys:
            v = v.detach().to("cpu").contiguous()
            if v.data_ptr() in seen:  # safetensors refuses tensors sharing memory
                v = v.clone()
            seen.add(v.data_ptr())
            tensors[k] = v
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    else:
        _atomic_write(path, lambda tmp: torch.save(tensors, tmp))
    sidecar = path.parent / CONFIG_FILE_NAME
    if config != FloatConfig.official():
        _atomic_write(sidecar, lambda tmp: config.save(tmp))
    elif sidecar.exists():
        sidecar.unlink()
    return path


def convert_to_safetensors(sources: WeightSources, config: FloatConfig,
                           out_path: str | os.PathLike[str]) -> Path:
    """Merge the checkpoint and the wav2vec2 folders into one validated ``.safetensors`` file
    (:func:`save_weights`: atomic, with the config sidecar for a non-official size).

    Raises:
        ValueError: ``out_path`` does not end in ``.safetensors``.
        WeightsError: the sources are missing or invalid (checked before writing).
    """
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"out_path must end in .safetensors, got {out_path.name!r}")
    return save_weights(load_state_dict(sources, config), config, out_path)


# --------------------------------------------------------------------------- command line
def _cli(run: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    """Wrap a sub-command: 0 on success, 1 with the error message (no traceback) on WeightsError."""

    def command(args: argparse.Namespace) -> int:
        try:
            run(args)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    return command


def _run_download(args: argparse.Namespace) -> None:
    path = download_weights(args.repo, args.dir, args.token)
    print(f"weights ready in {path}")


def _run_convert(args: argparse.Namespace) -> None:
    sources = resolve_sources(args.checkpoint, args.audio_model, args.emotion_model)
    # The checkpoint's own size (a trained model's float_config.json), unless told otherwise.
    config = FloatConfig.preset(args.config) if args.config else FloatConfig.for_checkpoint(sources.checkpoint)
    path = convert_to_safetensors(sources, config, args.out)
    print(f"wrote {path}")


def add_subparser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register the ``download`` and ``convert`` sub-commands (see :mod:`float_core.cli`)."""
    download = subparsers.add_parser(
        "download", help="download the released weights in the authors' layout",
        description="Download float.pth and the two wav2vec2 models from the Hugging Face Hub. "
                    "Weights licence: CC BY-NC-ND 4.0 (non-commercial).")
    download.add_argument("--repo", default=None,
                          help=f"Hugging Face repository (default: ${WEIGHTS_REPO_ENV} or {DEFAULT_WEIGHTS_REPO})")
    download.add_argument("-o", "--out", "--dir", dest="dir", default="checkpoints", type=Path,
                          help="destination folder (default: checkpoints)")
    download.add_argument("--token", default=None, help="Hugging Face token (default: the hub's login, $HF_TOKEN)")
    download.set_defaults(func=_cli(_run_download))

    convert = subparsers.add_parser(
        "convert", help="merge the weights into one .safetensors file",
        description="Merge float.pth and the two wav2vec2 models into one validated .safetensors "
                    "file in float.pth naming (loadable with --checkpoint FILE, no folders needed).")
    convert.add_argument("--checkpoint", default=None,
                         help=f"folder in the authors' layout or a checkpoint file "
                              f"(default: ${CHECKPOINT_DIR_ENV} or ./checkpoints)")
    convert.add_argument("--audio-model", default=None, help="wav2vec2-base-960h folder or Hugging Face id")
    convert.add_argument("--emotion-model", default=None, help="speech-emotion model folder or Hugging Face id")
    convert.add_argument("-o", "--out", "--output", dest="out", required=True, type=Path,
                         help="output .safetensors file (a non-official size also writes float_config.json beside it)")
    convert.add_argument("--config", choices=("official", "tiny"), default=None,
                         help="model size (default: the checkpoint's own: its float_config.json, else official)")
    convert.set_defaults(func=_cli(_run_convert))
