"""Reading a prepared training set: the on-disk layout and the two stages' datasets.

Layout (written by :mod:`float_core.train.prepare`)::

    ROOT/index.json                    format, version, fps, sample_rate, image_size, clips, skipped
    ROOT/clips/<id>/clip.json          the clip's own index entry (the clip folder describes itself)
    ROOT/clips/<id>/frames.bin         T concatenated JPEG frames (image_size x image_size)
    ROOT/clips/<id>/frames_offsets.npy int64 (T + 1,) byte offsets of the frames in frames.bin
    ROOT/clips/<id>/audio.wav          16 kHz mono float32, exactly T * 640 samples
    ROOT/clips/<id>/audio_features.npy optional float16 (T, F): stacked wav2vec2 layer outputs
    ROOT/clips/<id>/emotion.npy        optional float32 (7,): speech-emotion probabilities
    ROOT/clips/<id>/motion.npy         optional float32 (T, d): motion latents w_{r->D} (after stage 1)
    ROOT/clips/<id>/landmarks.npy      optional float32 (T, 68, 2): 68-point iBUG landmarks (x, y)

Landmarks are (x, y) in pixels of the stored crop (``image_size`` of the index, whatever the
model's resolution), as the detector gives them. Stage 1 scales them to its own image size
(x * model_size / image_size) and derives the eye and mouth boxes of its component losses from
them (:class:`Stage1Dataset`); the boxes treat them as continuous coordinates, pixel i spanning
[i, i + 1), so for a detector that puts pixel centres on integers they are half a pixel off,
negligible against the boxes' 1.2-1.5x margins. Frames where the detector found no face hold the
clip's median landmarks; a clip where it found none has no file.

One file of JPEGs plus an offset table gives random access to any frame with one seek and one
read, without millions of small files, and streams well from network storage.

Both datasets are map-style and *index-deterministic*: item ``i`` depends only on
``(seed, i)`` (through ``numpy.random.default_rng([seed, i])``), never on worker ids, epochs or
earlier items. A training run that resumes at step ``k`` with batch size ``B`` therefore sees
exactly the batches it would have seen, by asking for indices ``k*B ...`` (see
:class:`float_core.train.loop.StepSampler`). Their length is virtual (:data:`VIRTUAL_LENGTH`); never use a shuffling
sampler on them (``torch.randperm`` of that length cannot be allocated), shuffling is already
done by the per-index random draws.

Files are opened per access (the JPEG offsets and ``.npy`` memory maps are cached per process
and dropped when pickled), so the datasets work with ``DataLoader(num_workers > 0)``.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DATASET_FORMAT",
    "DATASET_VERSION",
    "INDEX_FILE",
    "NUM_LANDMARKS",
    "PRECOMPUTED",
    "VIRTUAL_LENGTH",
    "ClipInfo",
    "ClipStore",
    "DatasetError",
    "Stage1Dataset",
    "Stage2Dataset",
    "frames_to_tensor",
    "read_index",
    "write_json_atomic",
]

DATASET_FORMAT = "float-studio-dataset"
DATASET_VERSION = 1
INDEX_FILE = "index.json"
CLIP_FILE = "clip.json"
FRAMES_FILE = "frames.bin"
OFFSETS_FILE = "frames_offsets.npy"
AUDIO_FILE = "audio.wav"

#: Optional per-clip arrays: name -> (file, the command that makes it).
PRECOMPUTED: dict[str, tuple[str, str]] = {
    "audio_features": ("audio_features.npy",
                       "python -m float_core.train prepare --out {root} --audio-features --weights CHECKPOINT"),
    "emotion": ("emotion.npy",
                "python -m float_core.train prepare --out {root} --emotion --weights CHECKPOINT"),
    "motion": ("motion.npy",
               "python -m float_core.train prepare --out {root} --motion --weights STAGE1_CHECKPOINT"),
    "landmarks": ("landmarks.npy",
                  "python -m float_core.train prepare --out {root} --landmarks  (pip install face-alignment)"),
}

#: Points per landmark set (the iBUG 68-point layout: eyes 36-41 and 42-47, mouth 48-67).
NUM_LANDMARKS = 68

#: ``len()`` of the index-deterministic datasets: effectively infinite.
VIRTUAL_LENGTH = 2**62


class DatasetError(ValueError):
    """A prepared data set is missing, malformed or lacks a precomputed item."""


# ----------------------------------------------------------------------------- index files
def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_index(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``ROOT/index.json``; raise :class:`DatasetError` saying what is wrong."""
    root = Path(root)
    path = root / INDEX_FILE
    hint = f"run: python -m float_core.train prepare --videos VIDEO_FOLDER --out {root}"
    if not path.is_file():
        raise DatasetError(f"{root} is not a prepared dataset: {path} does not exist; {hint}")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; {hint}") from exc
    if not isinstance(index, dict) or index.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path} is not a prepared dataset (its 'format' is not {DATASET_FORMAT!r}); {hint}")
    if index.get("version") != DATASET_VERSION:
        raise DatasetError(f"{path} has dataset version {index.get('version')!r}; this code reads version "
                           f"{DATASET_VERSION}: prepare the videos again into a new folder")
    for key in ("fps", "sample_rate", "image_size"):
        if not isinstance(index.get(key), int) or index[key] <= 0:
            raise DatasetError(f"{path}: {key!r} must be a positive integer, got {index.get(key)!r}")
    clips = index.get("clips")
    if not isinstance(clips, list):
        raise DatasetError(f"{path}: 'clips' must be a list")
    for i, clip in enumerate(clips):
        if (not isinstance(clip, dict) or not isinstance(clip.get("id"), str) or not isinstance(clip.get("dir"), str)
                or not isinstance(clip.get("num_frames"), int) or clip["num_frames"] < 1):
            raise DatasetError(f"{path}: clips[{i}] needs 'id' (str), 'dir' (str) and 'num_frames' (int >= 1), "
                               f"got {clip!r}")
    return index


@dataclass(frozen=True)
class ClipInfo:
    """One prepared clip: ``num_frames`` frames T at 25 fps, stored in ``dir``."""

    id: str
    num_frames: int
    dir: Path
    source: str = ""


def frames_to_tensor(frames: np.ndarray, image_size: int) -> Tensor:
    """uint8 frames (n, H, W, 3) -> float32 (n, 3, image_size, image_size) in [-1, 1].

    Downscaling uses an anti-aliased (triangle-filter) bilinear resize, so a 512 px prepared set
    can train a 64 or 256 px model without aliasing. Stage 1 training and the motion
    precomputation both use this function, so the auto-encoder sees identical inputs in both.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0)


# ----------------------------------------------------------------------------- store
ClipRef = ClipInfo | str | int


class ClipStore:
    """Random access to a prepared dataset (see the module docstring for the layout).

    Args:
        root: the folder given as ``--out`` to ``prepare``.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.index = read_index(self.root)
        self.fps: int = self.index["fps"]
        self.sample_rate: int = self.index["sample_rate"]
        self.image_size: int = self.index["image_size"]
        self.clips: list[ClipInfo] = [
            ClipInfo(id=c["id"], num_frames=c["num_frames"], dir=self.root / c["dir"], source=c.get("source", ""))
            for c in self.index["clips"]
        ]
        self._by_id = {c.id: c for c in self.clips}
        self._offsets: dict[str, np.ndarray] = {}  # per-process caches, dropped when pickled
        self._arrays: dict[tuple[str, str], np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def __repr__(self) -> str:
        return f"ClipStore({str(self.root)!r}, {len(self)} clips, {self.total_frames} frames)"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_offsets"], state["_arrays"] = {}, {}  # no memory maps / open files across processes
        return state

    @property
    def samples_per_frame(self) -> int:
        return self.sample_rate // self.fps

    @property
    def total_frames(self) -> int:
        return sum(c.num_frames for c in self.clips)

    def clip(self, ref: ClipRef) -> ClipInfo:
        """A clip by :class:`ClipInfo`, id or position."""
        if isinstance(ref, ClipInfo):
            return ref
        if isinstance(ref, (int, np.integer)):
            return self.clips[int(ref)]
        try:
            return self._by_id[ref]
        except KeyError:
            raise KeyError(f"no clip {ref!r} in {self.root / INDEX_FILE}") from None

    # ------------------------------------------------------------------ frames and audio
    def _frame_offsets(self, clip: ClipInfo) -> np.ndarray:
        offsets = self._offsets.get(clip.id)
        if offsets is None:
            offsets = np.load(clip.dir / OFFSETS_FILE)
            if offsets.shape != (clip.num_frames + 1,):
                raise DatasetError(f"{clip.dir / OFFSETS_FILE} has shape {offsets.shape}, expected "
                                   f"({clip.num_frames + 1},) for {clip.num_frames} frames")
            self._offsets[clip.id] = offsets
        return offsets

    def frames(self, ref: ClipRef, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode frames ``indices`` of a clip: uint8 (n, H, W, 3) RGB."""
        from PIL import Image

        clip = self.clip(ref)
        offsets = self._frame_offsets(clip)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= clip.num_frames):
            raise IndexError(f"frame indices must be in 0..{clip.num_frames - 1} for clip {clip.id!r}, "
                             f"got {idx.min()}..{idx.max()}")
        out = []
        with open(clip.dir / FRAMES_FILE, "rb") as f:
            for i in idx:
                f.seek(int(offsets[i]))
                data = f.read(int(offsets[i + 1] - offsets[i]))
                with Image.open(io.BytesIO(data)) as im:
                    out.append(np.asarray(im.convert("RGB")))
        if not out:
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        return np.stack(out)

    def audio(self, ref: ClipRef) -> np.ndarray:
        """The clip's speech: float32 (T * 640,) at 16 kHz."""
        import soundfile as sf

        clip = self.clip(ref)
        audio, rate = sf.read(clip.dir / AUDIO_FILE, dtype="float32", always_2d=False)
        if rate != self.sample_rate:
            raise DatasetError(f"{clip.dir / AUDIO_FILE} is {rate} Hz, the index says {self.sample_rate}")
        return audio

    # ------------------------------------------------------------------ precomputed arrays
    def _array(self, ref: ClipRef, name: str) -> np.ndarray | None:
        clip = self.clip(ref)
        key = (clip.id, name)
        if key not in self._arrays:
            path = clip.dir / PRECOMPUTED[name][0]
            self._arrays[key] = np.load(path, mmap_mode="r") if path.is_file() else None
        return self._arrays[key]

    def audio_features(self, ref: ClipRef) -> np.ndarray | None:
        """float16 (T, F) stacked wav2vec2 layer outputs (a read-only memory map), or None."""
        return self._array(ref, "audio_features")

    def emotion(self, ref: ClipRef) -> np.ndarray | None:
        """float32 (7,) speech-emotion probabilities, or None."""
        return self._array(ref, "emotion")

    def motion(self, ref: ClipRef) -> np.ndarray | None:
        """float32 (T, d) motion latents w_{r->D} (a read-only memory map), or None."""
        return self._array(ref, "motion")

    def landmarks(self, ref: ClipRef) -> np.ndarray | None:
        """float32 (T, 68, 2) landmarks (x, y) in stored-crop pixels (a read-only memory map), or None."""
        return self._array(ref, "landmarks")

    def missing(self, name: str) -> list[str]:
        """Ids of clips that lack the precomputed item ``name``."""
        if name not in PRECOMPUTED:
            raise ValueError(f"unknown precomputed item {name!r}; expected one of {', '.join(PRECOMPUTED)}")
        return [c.id for c in self.clips if not (c.dir / PRECOMPUTED[name][0]).is_file()]

    def require(self, *names: str) -> None:
        """Raise :class:`DatasetError` naming clips that lack any of ``names`` and how to make them."""
        problems = []
        for name in names:
            lacking = self.missing(name)
            if lacking:
                shown = ", ".join(lacking[:5]) + (f" and {len(lacking) - 5} more" if len(lacking) > 5 else "")
                command = PRECOMPUTED[name][1].format(root=self.root)
                problems.append(f"{len(lacking)} of {len(self)} clips lack {PRECOMPUTED[name][0]} ({shown}); "
                                f"make it with: {command}")
        if problems:
            raise DatasetError(f"{self.root} is not ready: " + "; ".join(problems))


# ----------------------------------------------------------------------------- datasets
def _clip_weights(lengths: Sequence[int], weighting: str) -> np.ndarray:
    if weighting not in ("clips", "frames"):
        raise ValueError(f"weighting must be 'clips' or 'frames', got {weighting!r}")
    w = np.ones(len(lengths)) if weighting == "clips" else np.asarray(lengths, dtype=np.float64)
    return np.cumsum(w / w.sum())


def _pick(cumulative: np.ndarray, rng: np.random.Generator) -> int:
    return int(min(np.searchsorted(cumulative, rng.random(), side="right"), cumulative.size - 1))


class Stage1Dataset(Dataset):
    """(source, driving) frame pairs of one clip, for the motion auto-encoder (paper Sec. 4.1, A.1).

    Item ``i`` draws, with ``default_rng([seed, i])``: a clip (each clip equally likely with
    ``weighting="clips"``, the default, so long videos do not dominate the identities seen, as
    LIA samples one video per item; ``"frames"`` weights clips by length), then two different
    frames of it (source and driving). Returns ``dict(source, driving)``, float32
    (3, image_size, image_size) in [-1, 1].

    Facial-component boxes. When every clip has ``landmarks.npy`` (``prepare --landmarks``),
    items also hold ``boxes``: float32 (3, 4), the driving frame's left-eye, right-eye and mouth
    boxes (x0, y0, x1, y1) in pixels of ``image_size`` (rows in
    :data:`float_core.train.losses.COMPONENT_NAMES` order), made by
    :func:`~float_core.train.losses.boxes_from_landmarks` from its landmarks scaled by
    ``image_size / store.image_size``; a batch's (B, 3, 4) ``boxes`` go to the stage-1 losses
    as they are. Without landmarks (or with them for only some clips: then with a warning, as
    mixing the two kinds of box within a batch is not possible) items have no ``boxes`` and
    the losses use fixed regions of the aligned crop.

    Args:
        landmarks: None (default): use landmarks when every clip has them; False: never;
            True: require them (:class:`DatasetError` naming the clips that lack them).
    """

    def __init__(self, store: ClipStore, image_size: int, seed: int = 0, *, weighting: str = "clips",
                 landmarks: bool | None = None):
        if len(store) == 0:
            raise DatasetError(f"{store.root} has no clips")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.store, self.image_size, self.seed = store, int(image_size), int(seed)
        self._cumulative = _clip_weights([c.num_frames for c in store.clips], weighting)
        self.use_landmarks = self._check_landmarks(landmarks)

    def _check_landmarks(self, wanted: bool | None) -> bool:
        if wanted is False:
            return False
        if wanted:
            self.store.require("landmarks")
        lacking = self.store.missing("landmarks")
        if lacking:
            if len(lacking) < len(self.store):
                warnings.warn(f"{len(lacking)} of {len(self.store)} clips lack {PRECOMPUTED['landmarks'][0]} "
                              f"({', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}): stage 1 uses the "
                              "fixed component regions of the aligned crop for every clip; run "
                              + PRECOMPUTED["landmarks"][1].format(root=self.store.root), stacklevel=3)
            return False
        for clip in self.store.clips:
            lm = self.store.landmarks(clip)
            assert lm is not None  # missing() checked the files exist
            if lm.shape != (clip.num_frames, NUM_LANDMARKS, 2):
                raise DatasetError(f"{clip.dir / PRECOMPUTED['landmarks'][0]} has shape {lm.shape}, expected "
                                   f"({clip.num_frames}, {NUM_LANDMARKS}, 2); precompute it again")
        return True

    def driving_boxes(self, clip: ClipRef, frame: int) -> Tensor:
        """float32 (3, 4) component boxes of a frame's landmarks, in pixels of ``image_size``."""
        from .losses import boxes_from_landmarks, stack_component_boxes

        lm = self.store.landmarks(clip)
        if lm is None:
            raise DatasetError(f"clip {self.store.clip(clip).id!r} has no {PRECOMPUTED['landmarks'][0]}")
        points = np.asarray(lm[int(frame)], dtype=np.float32) * (self.image_size / self.store.image_size)
        return stack_component_boxes(boxes_from_landmarks(points, self.image_size))

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        clip = self.store.clips[_pick(self._cumulative, rng)]
        if clip.num_frames >= 2:
            source, driving = rng.choice(clip.num_frames, size=2, replace=False)
        else:
            source = driving = 0
        images = frames_to_tensor(self.store.frames(clip, [source, driving]), self.image_size)
        item = {"source": images[0], "driving": images[1]}
        if self.use_landmarks:
            item["boxes"] = self.driving_boxes(clip, int(driving))
        return item


class Stage2Dataset(Dataset):
    """Windows of motion latents with their audio features, for the FMT (paper Sec. 4.2, A.3).

    Needs ``audio_features``, ``emotion`` and ``motion`` precomputed. Clips shorter than
    L' + L frames are left out (with a warning). Item ``i`` draws, with
    ``default_rng([seed, i])``: a clip (``weighting`` as in :class:`Stage1Dataset`), a window
    start s uniform in [0, T - (L' + L)] and a source frame r uniform in [0, T). Returns
    float32 tensors::

        motion        (L' + L, d)  motion[s : s + L' + L]; the first L' are the previous frames
        audio         (L' + L, F)  audio_features[s : s + L' + L]
        emotion       (7,)         the clip's speech-emotion probabilities
        source_motion (d,)         motion[r], the reference frame's motion w_{r->S}
    """

    def __init__(self, store: ClipStore, num_frames: int, num_prev_frames: int, seed: int = 0, *,
                 weighting: str = "clips"):
        if num_frames < 1 or num_prev_frames < 0:
            raise ValueError(f"need num_frames >= 1 and num_prev_frames >= 0, got {num_frames}, {num_prev_frames}")
        store.require("audio_features", "emotion", "motion")
        self.store, self.seed = store, int(seed)
        self.num_frames, self.num_prev_frames = int(num_frames), int(num_prev_frames)
        length = self.window
        short = [c.id for c in store.clips if c.num_frames < length]
        self.clips = [c for c in store.clips if c.num_frames >= length]
        if short:
            warnings.warn(f"{len(short)} clip(s) shorter than L'+L = {length} frames are not used for stage 2: "
                          + ", ".join(short[:5]) + (" ..." if len(short) > 5 else ""), stacklevel=2)
        if not self.clips:
            raise DatasetError(f"no clip in {store.root} has at least L'+L = {length} frames "
                               f"({self.num_prev_frames}+{self.num_frames}); prepare longer videos")
        for clip in self.clips:
            for name, arr in (("audio_features", store.audio_features(clip)), ("motion", store.motion(clip))):
                assert arr is not None  # store.require checked the files exist
                if arr.ndim != 2 or arr.shape[0] != clip.num_frames:
                    raise DatasetError(f"{clip.dir / PRECOMPUTED[name][0]} has shape {arr.shape}, expected "
                                       f"({clip.num_frames}, dim); precompute it again")
        self._cumulative = _clip_weights([c.num_frames for c in self.clips], weighting)

    @property
    def window(self) -> int:
        """L' + L, the frames of one item."""
        return self.num_prev_frames + self.num_frames

    def __len__(self) -> int:
        return VIRTUAL_LENGTH

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        clip = self.clips[_pick(self._cumulative, rng)]
        start = int(rng.integers(0, clip.num_frames - self.window + 1))
        ref = int(rng.integers(0, clip.num_frames))
        motion, audio = self.store.motion(clip), self.store.audio_features(clip)
        emotion = self.store.emotion(clip)
        assert motion is not None and audio is not None and emotion is not None
        window = slice(start, start + self.window)
        return {
            "motion": torch.from_numpy(np.array(motion[window], dtype=np.float32)),
            "audio": torch.from_numpy(np.array(audio[window], dtype=np.float32)),
            "emotion": torch.from_numpy(np.array(emotion, dtype=np.float32)),
            "source_motion": torch.from_numpy(np.array(motion[ref], dtype=np.float32)),
        }
