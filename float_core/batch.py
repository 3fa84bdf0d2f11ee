"""Many videos at once: job files, resumable results, and a local or Ray runner.

A **job file** lists one video per job, in one of three formats with one set of field names
(:data:`JOB_FIELDS`): a CSV with a header row, a JSON list of objects, or JSON Lines (one
object per line). Each job has an ``id`` (unique; the video is ``OUT/<id>.mp4``) and a ``mode``
(:data:`MODES`), which decides the fields it needs and takes (:data:`MODE_FIELDS`), with the
names of the :class:`~float_core.pipeline.FloatPipeline` method it runs:

* ``generate`` (the default): an ``image`` and either an ``audio`` file or a ``text`` spoken by
  text-to-speech (:func:`float_core.tts.synthesize` with the job's ``voice`` spec, e.g.
  "espeak:en-us+f3"); optionally a ``drive`` video whose face gives the ``drive_groups``
  (lips from the speech, head from the video);
* ``drive``: an ``image`` moved by the face of a ``video`` (reenactment; nothing is sampled);
* ``dub``: a ``video`` whose lips follow new speech (``audio`` or ``text``).

The optional settings (:data:`SETTING_FIELDS`) have the names and validation of
:class:`~float_core.config.SamplingConfig` and those methods; a job's settings override the
command line's, which apply to the jobs whose mode takes them. :func:`load_jobs` validates every
line before any work starts: a malformed line (bad JSON, unknown field, a field its mode does
not take, bad value, missing file, a voice the text-to-speech engine cannot use, repeated id)
becomes an :class:`InvalidLine` with its line number, and the other lines still run.

**Results.** Every job ends with one line appended to ``OUT/results.jsonl`` (:class:`ResultsLog`):
``id``, ``status`` ("ok", "failed", "skipped"), ``output``, ``seconds``, ``error``,
``settings_hash``, plus ``line``, ``attempts``, ``frames``, ``cpu_seconds`` and ``finished``.
Videos are written to a temporary file and moved into place when complete
(``float_core.media.video``), so a crash, Ctrl-C or preemption loses at most the jobs that
were running.

**Resume.** The settings hash (:func:`settings_hash`) covers what decides a job's video: the
contents of its input files (image, speech, video; or its text and voice), its mode and the
settings its mode takes, and the model flags. A job whose video exists and whose last "ok"
line in ``results.jsonl`` has the same hash is skipped.

**Runners** (:func:`run_batch`): locally, one process loads the pipeline once and runs the jobs
in order (each job is :func:`run_job`, i.e. the ``FloatPipeline`` method of its mode, so
outputs equal ``generate``'s, ``drive``'s or ``dub``'s for the same settings and seed). With
Ray (``ray=True`` or an address), a pool of actors (:class:`BatchWorker`), each holding one
pipeline, takes the jobs one at a time as they come free (back-pressure: at most one job per
actor in flight); the driver writes the results as they return. An actor that dies (crash,
out-of-memory kill, node preemption) is replaced and its job retried up to ``retries`` times.
Ray is imported only by the Ray runner: ``import float_core`` never imports it (install it with
the ``scale`` extra).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import math
import numbers
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import DEFAULT_DRIVE_GROUPS, DEFAULT_DUB_GROUPS, FPS, SAMPLING_FIELDS, SamplingConfig, canonical_preset
from .files import PARTIAL_SUFFIX
from .progress import ProgressLike, as_progress
from .tts import TTSSettings, check_voice, synthesize

if TYPE_CHECKING:
    import numpy as np

    from .pipeline import FloatPipeline

__all__ = [
    "JOB_FIELDS", "MODES", "MODE_FIELDS", "RESULTS_FILE", "SETTING_FIELDS", "STATUSES", "BatchError", "BatchSummary",
    "BatchWorker", "InvalidLine", "Job", "JobFile", "JobResult", "JobSettings", "ModelSpec", "ResultsLog",
    "file_digest", "load_jobs", "make_job", "parse_settings", "read_job_rows", "run_batch", "run_job",
    "settings_hash",
]

#: Per-job settings: the SamplingConfig fields, the portrait and motion options of ``generate``,
#: and the video options of ``generate(drive=...)``, ``drive`` and ``dub`` (FloatPipeline's names).
SETTING_FIELDS: tuple[str, ...] = (*SAMPLING_FIELDS, "crop", "paste_back", "face", "crop_scale", "preset",
                                   "drive_groups", "relative", "video_face", "groups_from_video", "reference_frame")
#: Every field a job may have.
JOB_FIELDS: tuple[str, ...] = ("id", "mode", "image", "audio", "text", "voice", "video", "drive", *SETTING_FIELDS)
#: The modes a job may name (``mode``; default "generate"), each the FloatPipeline method it runs:
#: portrait + speech (optionally with the head from a video), portrait + video, video + speech.
MODES: tuple[str, ...] = ("generate", "drive", "dub")
#: The fields each mode takes besides ``id`` and ``mode``: the arguments of its FloatPipeline
#: method (``face`` is the portrait's, except in a dub, whose only face is the video's).
MODE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "generate": ("image", "audio", "text", "voice", "drive", "drive_groups", *SAMPLING_FIELDS, "crop", "paste_back",
                 "face", "crop_scale", "preset"),
    "drive": ("image", "video", "relative", "crop", "paste_back", "face", "video_face", "crop_scale"),
    "dub": ("video", "audio", "text", "voice", "groups_from_video", "reference_frame", *SAMPLING_FIELDS, "face",
            "crop_scale"),
}
#: Why a mode does not take a field, for the error message.
_NOT_TAKEN = {
    "generate": "its video is the drive field (the head from the video, the lips from the speech); video is for "
                "mode drive or dub",
    "drive": "its motion and sound all come from its video: nothing is sampled, no speech, no preset; new speech "
             "on a video is mode dub",
    "dub": "its identity and picture come from its video: no image, crop, paste_back or preset",
}
#: The results log inside the output folder.
RESULTS_FILE = "results.jsonl"
#: A job's ``status`` in the results log.
STATUSES: tuple[str, ...] = ("ok", "failed", "skipped")
#: Test hook: ``FLOAT_TEST_CRASH_JOB=ID:MARKER`` makes the process running job ID exit at once
#: (as an out-of-memory kill would) unless the file MARKER exists, which it creates first: the
#: job crashes exactly once, and its retry runs.
CRASH_ENV = "FLOAT_TEST_CRASH_JOB"
#: Exit status of a process that :data:`CRASH_ENV` ends.
CRASH_EXIT = 70

#: Characters a job id may not hold: it names a file on every filesystem.
_BAD_ID = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')
_MAX_ID = 150


class BatchError(ValueError):
    """The batch as a whole cannot run (unreadable job file, no worker could load the model)."""


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class JobSettings:
    """Everything besides the inputs that decides a job's video (validated)."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    crop: bool = True
    paste_back: bool = False
    face: int = 0  #: which detected face, 0 = the largest (the job file and flags count from 1)
    crop_scale: float | None = None  #: None: the reference's 1.6
    preset: str | None = None  #: one of float_core.config.PRESET_NAMES
    drive_groups: tuple[str, ...] = DEFAULT_DRIVE_GROUPS  #: generate with a drive video: groups from the video
    relative: bool = True  #: drive: the video's change since its first frame (False: its pose itself)
    video_face: int = 0  #: drive: which face of the video, 0 = the largest (counted from 1 in the job file)
    groups_from_video: tuple[str, ...] = DEFAULT_DUB_GROUPS  #: dub: groups kept from each video frame
    reference_frame: int | None = None  #: dub: the identity frame (None: the first frontal, sharp face)

    def to_dict(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """JSON-able, with the job file's names (faces counted from 1): the settings ``names``
        (default: all of :data:`SETTING_FIELDS`)."""
        data = {**self.sampling.to_dict(), "crop": self.crop, "paste_back": self.paste_back, "face": self.face + 1,
                "crop_scale": self.crop_scale, "preset": self.preset, "drive_groups": list(self.drive_groups),
                "relative": self.relative, "video_face": self.video_face + 1,
                "groups_from_video": list(self.groups_from_video), "reference_frame": self.reference_frame}
        return data if names is None else {name: data[name] for name in names}


def _given(value: Any) -> bool:
    """Whether a field was given: None and blank strings (an empty CSV cell) are not."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def _as_number(name: str, value: Any, kind: type) -> Any:
    """A CSV string as ``kind`` (float or int); JSON numbers pass through for the caller's checks."""
    if not isinstance(value, str):
        return value
    try:
        return kind(value.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}: expected {what}, got {value!r}") from None


_NUMBER_KINDS = {"a_cfg": float, "e_cfg": float, "nfe": int, "seed": int, "face": int, "crop_scale": float,
                 "video_face": int, "reference_frame": int}


def _whole(name: str, value: Any, lowest: int, rule: str) -> int:
    """``value`` as a whole number >= ``lowest``, or a ValueError stating ``rule``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
        raise ValueError(f"{name}: {rule}; got {value!r}")
    return int(value)


def _groups(name: str, value: Any) -> tuple[str, ...]:
    """Direction groups as ``float_core.video_in.parse_groups`` reads them ("head,eyes" or a list)."""
    from .video_in import parse_groups

    if not isinstance(value, (str, list, tuple)):
        raise ValueError(f"{name}: expected group names such as \"head,eyes\" or [\"head\", \"eyes\"], got {value!r}")
    try:
        return parse_groups(value)
    except ValueError as exc:  # its message names "groups"; say which field
        raise ValueError(f"{name}: {str(exc).removeprefix('groups: ')}") from None


def parse_settings(values: Mapping[str, Any], base: JobSettings | None = None) -> JobSettings:
    """Validated :class:`JobSettings` of the fields of :data:`SETTING_FIELDS` in ``values``.

    Fields that are absent, None or blank keep ``base``'s value (default: the defaults).
    Values may be typed (JSON, Python) or strings (CSV cells, "true"/"false" for booleans).
    ``face`` and ``video_face`` count from 1 (the largest face); ``drive_groups`` and
    ``groups_from_video`` are direction groups ("head,eyes" or a list); ``reference_frame`` is a
    0-based frame index at :data:`~float_core.config.FPS`. Raises ValueError naming the field.
    """
    base = base or JobSettings()
    unknown = sorted(set(values) - set(SETTING_FIELDS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTING_FIELDS)}")
    given = {k: v for k, v in values.items() if _given(v)}
    typed = {k: _as_number(k, v, _NUMBER_KINDS[k]) if k in _NUMBER_KINDS else v for k, v in given.items()}
    sampling = base.sampling.with_overrides(**{k: typed.get(k) for k in SAMPLING_FIELDS})
    crop = _as_bool("crop", typed["crop"]) if "crop" in typed else base.crop
    paste_back = _as_bool("paste_back", typed["paste_back"]) if "paste_back" in typed else base.paste_back
    faces = {name: _whole(name, typed[name], 1, "1 is the largest face, 2 the next, ...") - 1
             for name in ("face", "video_face") if name in typed}
    groups = {name: _groups(name, typed[name]) for name in ("drive_groups", "groups_from_video") if name in typed}
    crop_scale = base.crop_scale
    if "crop_scale" in typed:
        from .media.face import check_crop_scale

        value = typed["crop_scale"]
        crop_scale = float(check_crop_scale(math.nan if isinstance(value, bool) else value))
    preset = canonical_preset(typed["preset"]) if "preset" in typed else base.preset
    if paste_back and not crop:
        raise ValueError("paste_back: needs crop (the crop box says where the face goes); drop one of them")
    relative = _as_bool("relative", typed["relative"]) if "relative" in typed else base.relative
    reference_frame = base.reference_frame
    if "reference_frame" in typed:
        reference_frame = _whole("reference_frame", typed["reference_frame"], 0,
                                 f"a frame of the video at {FPS} fps, 0 = the first (leave it out for the first "
                                 "frontal, sharp face)")
    return dataclasses.replace(base, sampling=sampling, crop=crop, paste_back=paste_back, crop_scale=crop_scale,
                               preset=preset, relative=relative, reference_frame=reference_frame, **faces, **groups)


# ---------------------------------------------------------------------------- job file
@dataclass(frozen=True)
class Job:
    """One validated job: absolute input paths, settings, and (once planned) its settings hash."""

    id: str
    line: int  #: where it is in the job file (1 = the first line)
    image: str | None = None  #: the portrait (generate, drive)
    audio: str | None = None
    text: str | None = None
    voice: str | None = None  #: a text job's voice spec, resolved ("espeak:en-us" when none was given)
    mode: str = "generate"
    video: str | None = None  #: the input video: a drive or dub job's ``video``, a generate job's ``drive``
    settings: JobSettings = field(default_factory=JobSettings)
    settings_hash: str = ""

    def output(self, out_dir: str | os.PathLike[str]) -> Path:
        """The job's video: ``out_dir/<id>.mp4``."""
        return Path(out_dir) / f"{self.id}.mp4"

    def setting_names(self) -> tuple[str, ...]:
        """The settings that decide this job's video: those its mode takes (a generate job's
        ``drive_groups`` only with a drive video)."""
        return tuple(name for name in SETTING_FIELDS if name in MODE_FIELDS[self.mode]
                     and (name != "drive_groups" or self.video is not None))


@dataclass(frozen=True)
class InvalidLine:
    """A line of the job file that cannot run: its number, its id if it has a usable one, and why."""

    line: int
    id: str | None
    error: str


@dataclass
class JobFile:
    """What :func:`load_jobs` read: the valid jobs and the malformed lines, in file order."""

    path: Path
    jobs: list[Job]
    invalid: list[InvalidLine]

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.invalid)


def _job_format(path: Path, text: str) -> str:
    """"csv", "json" (a list) or "jsonl", by extension, else by the first character."""
    suffix = path.suffix.lower()
    first = text.lstrip()[:1]
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json" if first == "[" else "jsonl"
    return {"[": "json", "{": "jsonl"}.get(first, "csv")


def read_job_rows(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any] | str]]:
    """The rows of a job file as ``(line, fields)``, or ``(line, message)`` for a line that is
    not a job object (bad JSON Lines syntax, a non-object, more CSV cells than columns).

    Raises:
        BatchError: the file cannot be read, a CSV header is unusable, or a JSON list is not
            valid JSON (its position is named); then no line can be trusted.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read the job file {path}: {exc}") from None
    kind = _job_format(path, text)
    rows = {"csv": _csv_rows, "json": _json_list_rows, "jsonl": _json_lines_rows}[kind](text, path)
    if not rows:
        raise BatchError(f"{path} holds no jobs (a CSV with a header row, a JSON list or JSON Lines)")
    return rows


def _csv_rows(text: str, path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, Any] | str]] = []
    end = 0
    for cells in reader:
        start, end = end + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            _check_header(header, path, start)
            continue
        if len(cells) > len(header):
            rows.append((start, f"{len(cells)} cells for the header's {len(header)} columns "
                                f"(quote a value that holds a comma)"))
            continue
        rows.append((start, {name: cell.strip() for name, cell in zip(header, cells)}))
    return rows


def _check_header(header: list[str], path: Path, line: int) -> None:
    where = f"{path} line {line} (header)"
    if "" in header or len(set(header)) != len(header):
        raise BatchError(f"{where}: every column needs a distinct name, got {header}")
    for name in header:
        message = _field_name_error(name)
        if message:
            raise BatchError(f"{where}: {message}")
    if "id" not in header:
        raise BatchError(f"{where}: an 'id' column is needed (it names each job's video)")


def _field_name_error(name: str) -> str | None:
    if name == "output":
        return ("'output' is not a job field: a job's video is OUT/<id>.mp4 (OUT is -o/--out); "
                "name each job with 'id'")
    if name not in JOB_FIELDS:
        return f"unknown field {name!r}; known: {', '.join(JOB_FIELDS)}"
    return None


def _json_lines_rows(text: str, path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    rows: list[tuple[int, dict[str, Any] | str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            rows.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        rows.append((number, value if isinstance(value, dict) else
                     f"expected a JSON object {{\"id\": ..., ...}}, got {type(value).__name__}"))
    return rows


def _json_list_rows(text: str, path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    """The elements of a JSON list with the line each starts on."""
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")
    rows: list[tuple[int, dict[str, Any] | str]] = []
    pos = space.match(text).end()  # type: ignore[union-attr]
    try:
        if text[pos:pos + 1] != "[":
            raise json.JSONDecodeError("expected a list '['", text, pos)
        pos = space.match(text, pos + 1).end()  # type: ignore[union-attr]
        if text[pos:pos + 1] == "]":
            return rows
        while True:
            value, end = decoder.raw_decode(text, pos)
            line = text.count("\n", 0, pos) + 1
            rows.append((line, value if isinstance(value, dict) else
                         f"expected a JSON object {{\"id\": ..., ...}}, got {type(value).__name__}"))
            pos = space.match(text, end).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] == "]":
                break
            if text[pos:pos + 1] != ",":
                raise json.JSONDecodeError("expected ',' or ']' after a job", text, pos)
            pos = space.match(text, pos + 1).end()  # type: ignore[union-attr]
    except json.JSONDecodeError as exc:
        raise BatchError(f"{path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); "
                         f"JSON Lines (one job per line) lets the other lines run past a bad one") from None
    if space.match(text, pos + 1).end() != len(text):  # type: ignore[union-attr]
        raise BatchError(f"{path}: text after the closing ']' of the job list")
    return rows


def _check_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"id: expected a name (text), got {value!r}")
    text = str(value)
    if not text.strip():
        raise ValueError("id: is empty; every job needs an id (it names the video)")
    if (_BAD_ID.search(text) or text != text.strip() or text.startswith((".", "-")) or text.endswith(".")
            or len(text) > _MAX_ID):
        raise ValueError(f"id: {text!r} cannot name a file: use letters, digits, '_', '-' and '.', up to "
                         f"{_MAX_ID} characters, not starting with '.' or '-'")
    return text


def _input_file(name: str, value: Any) -> str:
    """An input path made absolute (relative to the current folder), which must be a file."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a file path, got {value!r}")
    path = os.path.abspath(os.path.expanduser(value.strip()))
    if not os.path.isfile(path):
        raise ValueError(f"{name}: no such file: {path}")
    return path


def _voice_spec(value: Any) -> str:
    """A text job's voice as the spec it resolves to (``None``: the default voice, which
    ``$FLOAT_ESPEAK_VOICE`` chooses), checked to work here before any job runs."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"voice: expected a voice spec such as 'espeak:en-us+f3', got {value!r}")
    return str(check_voice(value))


#: What each mode needs its image or video for (in the message about a missing one).
_NEEDS = {("generate", "image"): "a portrait", ("drive", "image"): "a portrait to move",
          ("drive", "video"): "the video whose face moves the portrait", ("dub", "video"): "the video to dub"}


def make_job(row: Mapping[str, Any], line: int, defaults: JobSettings | None = None) -> Job:
    """A validated :class:`Job` from one row of a job file (fields as in :data:`JOB_FIELDS`).

    The job's ``mode`` decides which fields it needs and takes (:data:`MODE_FIELDS`): generate
    needs an image and speech (``audio`` or ``text``), drive an image and a video, dub a video
    and speech. Input paths are made absolute (relative to the current folder) and must exist.
    A text job's voice is resolved to its spec (no voice: :func:`float_core.tts.default_voice`'s)
    and checked with :func:`float_core.tts.check_voice`. ``defaults`` (the command line's)
    fill in the settings the row leaves out. Raises ValueError naming the field.
    """
    for name in row:
        message = _field_name_error(name)
        if message:
            raise ValueError(message)
    given = {k: v for k, v in row.items() if _given(v)}
    if "id" not in given:
        raise ValueError("id: missing; every job needs an id (it names the video)")
    job_id = _check_id(given["id"])
    mode = str(given.get("mode", "generate")).strip().lower()
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {given['mode']!r}")
    taken = MODE_FIELDS[mode]
    for name in given:
        if name not in ("id", "mode", *taken):
            raise ValueError(f"{name}: not a field of {mode} jobs: {_NOT_TAKEN[mode]} (a {mode} job takes "
                             f"{', '.join(taken)})")
    for name in ("image", "video"):
        if (mode, name) in _NEEDS and name not in given:
            raise ValueError(f"{name}: missing; a {mode} job needs {_NEEDS[mode, name]}")
    if "audio" in taken and ("audio" in given) == ("text" in given):
        raise ValueError("give either audio (a speech file) or text (spoken by text-to-speech), not "
                         + ("both" if "audio" in given else "neither"))
    if "voice" in given and "text" not in given:
        raise ValueError("voice: only for text jobs (the text-to-speech voice)")
    if "text" in given and not isinstance(given["text"], str):
        raise ValueError(f"text: expected the words to speak, got {given['text']!r}")
    if "drive_groups" in given and "drive" not in given:
        raise ValueError("drive_groups: needs drive (the video the groups come from)")
    settings = parse_settings({k: v for k, v in given.items() if k in SETTING_FIELDS}, defaults)
    video_field = "drive" if mode == "generate" else "video"
    return Job(id=job_id, line=line, image=_input_file("image", given["image"]) if "image" in given else None,
               audio=_input_file("audio", given["audio"]) if "audio" in given else None,
               text=given["text"].strip() if "text" in given else None,
               voice=_voice_spec(given.get("voice")) if "text" in given else None, mode=mode,
               video=_input_file(video_field, given[video_field]) if video_field in given else None,
               settings=settings)


def load_jobs(path: str | os.PathLike[str], defaults: JobSettings | None = None) -> JobFile:
    """Read and validate every line of a job file before any work starts.

    ``defaults`` are the command line's settings; each job's own fields override them. A line
    that fails validation becomes an :class:`InvalidLine` (with the job's id when the line has
    a usable one); a repeated id (also one differing only in letter case, as the videos would
    collide on some filesystems) invalidates the later line.

    Raises:
        BatchError: the file as a whole is unusable (see :func:`read_job_rows`).
    """
    path = Path(path)
    jobs: list[Job] = []
    invalid: list[InvalidLine] = []
    seen: dict[str, int] = {}
    for line, row in read_job_rows(path):
        if isinstance(row, str):
            invalid.append(InvalidLine(line, None, row))
            continue
        try:
            job = make_job(row, line, defaults)
        except (ValueError, TypeError) as exc:
            invalid.append(InvalidLine(line, _usable_id(row), str(exc)))
            continue
        first = seen.setdefault(job.id.casefold(), line)
        if first != line:
            invalid.append(InvalidLine(line, None, f"id: {job.id!r} is already used on line {first} "
                                                   f"(ids name the videos; they must differ in more than case)"))
            continue
        jobs.append(job)
    return JobFile(path, jobs, invalid)


def _usable_id(row: Mapping[str, Any]) -> str | None:
    try:
        return _check_id(row.get("id"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------- model and hash
@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds its pipeline: ``from_pretrained``'s arguments, or a ``factory``.

    ``threads`` sets torch's thread count in the worker (None: torch's default). ``factory``
    (a picklable callable returning a :class:`~float_core.pipeline.FloatPipeline`) replaces
    ``from_pretrained``, e.g. for benchmarks with random weights; its qualified name stands for
    the model in the settings hash.
    """

    checkpoint: str | None = None
    audio_model: str | None = None
    emotion_model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    factory: Callable[[], "FloatPipeline"] | None = None

    def load(self) -> "FloatPipeline":
        """Build the pipeline (sets the thread count first)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        if self.factory is not None:
            return self.factory()
        from .pipeline import FloatPipeline

        return FloatPipeline.from_pretrained(self.checkpoint, self.audio_model, self.emotion_model,
                                             device=self.device, dtype=self.dtype)

    def key(self) -> dict[str, Any]:
        """What identifies the model's numbers for the settings hash: the weights named as given
        (folders and files made absolute, environment defaults filled in) and the requested
        precision. The device and the thread count are left out: they change speed, and the
        last bits at most."""
        if self.factory is not None:
            name = getattr(self.factory, "__qualname__", None) or type(self.factory).__qualname__
            return {"factory": f"{getattr(self.factory, '__module__', '')}.{name}",
                    "dtype": self._dtype_request()}
        checkpoint = (self.checkpoint or os.environ.get("FLOAT_TEST_MODEL") or
                      os.environ.get("FLOAT_CHECKPOINT_DIR") or "checkpoints")
        return {"checkpoint": _absolute_if_path(checkpoint), "audio_model": _absolute_if_path(self.audio_model),
                "emotion_model": _absolute_if_path(self.emotion_model), "dtype": self._dtype_request()}

    def _dtype_request(self) -> str:
        from .precision import DTYPE_ENV

        if str(self.dtype).lower() != "auto":
            return str(self.dtype)
        return os.environ.get(DTYPE_ENV, "").strip() or "auto"


def _absolute_if_path(name: str | None) -> str | None:
    return os.path.abspath(name) if name and os.path.exists(name) else name


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_hash(job: Job, model: Mapping[str, Any], digests: dict[str, str] | None = None) -> str:
    """16 hex digits of SHA-256 over what decides the job's video: the contents of its input
    files (image, audio, video; not their paths: moving the media keeps the hash), a text job's
    text and voice spec (for a ``url:`` voice also the server and model, ``FLOAT_TTS_URL`` and
    ``FLOAT_TTS_MODEL``), mode, the settings its mode takes (:meth:`Job.setting_names`; a
    setting of the command line that the mode ignores does not count) and the model
    (:meth:`ModelSpec.key`).
    ``digests`` caches file digests by path (a portrait shared by many jobs is read once).

    Raises:
        OSError: an input file cannot be read.
    """
    digests = {} if digests is None else digests
    inputs: dict[str, Any] = {}
    for name in ("image", "audio", "video"):
        path = getattr(job, name)
        if path is not None:
            if path not in digests:
                digests[path] = file_digest(path)
            inputs[name] = digests[path]
    if job.text is not None:
        inputs.update(text=job.text, voice=job.voice)
        if str(job.voice).startswith("url:"):  # the same voice name on another server is another voice
            tts = TTSSettings.from_env()
            inputs["tts_server"] = [tts.url, tts.model]
    payload = {"mode": job.mode, "inputs": inputs, "settings": job.settings.to_dict(job.setting_names()),
               "model": dict(model)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- results
@dataclass
class JobResult:
    """How one job ended; one line of ``results.jsonl`` (:meth:`to_json`)."""

    id: str | None
    status: str  #: one of STATUSES
    output: str | None = None  #: the video's path ("ok" and "skipped")
    seconds: float = 0.0  #: wall time of the last attempt
    cpu_seconds: float = 0.0  #: CPU time of the worker process during it (all its threads)
    error: str | None = None
    settings_hash: str | None = None
    line: int | None = None
    attempts: int = 0  #: 0 for skipped and invalid lines
    frames: int | None = None
    retryable: bool = False  #: failed by running out of memory: worth another try in a fresh worker

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in ("id", "status", "output", "seconds", "error", "settings_hash",
                                               "line", "attempts", "frames", "cpu_seconds")}
        data["seconds"], data["cpu_seconds"] = round(self.seconds, 3), round(self.cpu_seconds, 3)
        data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return data


class ResultsLog:
    """``results.jsonl``: one JSON object per line, appended (and flushed to disk) as each job
    ends. Reading tolerates a torn last line (a crash mid-write) and lines it cannot parse."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first."""
        if not self.path.is_file():
            return []
        out = []
        for raw in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def finished_hashes(self) -> dict[str, str]:
        """id -> settings hash of that id's last "ok" record (the video on disk came from it)."""
        return {r["id"]: r.get("settings_hash") for r in self.records()
                if r.get("status") == "ok" and isinstance(r.get("id"), str)}

    def append(self, result: JobResult) -> None:
        line = json.dumps(result.to_json(), ensure_ascii=False)
        with open(self.path, "a+b") as f:  # appends; reads where it seeks
            if f.seek(0, os.SEEK_END) > 0:  # after a torn last line, start a fresh one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------------------- one job
def _crash_if_asked(job_id: str) -> None:
    """The :data:`CRASH_ENV` test hook."""
    spec = os.environ.get(CRASH_ENV, "")
    target, _, marker = spec.partition(":")
    if spec and target == job_id and marker and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(CRASH_EXIT)


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    return isinstance(exc, torch.OutOfMemoryError)


class _Stage:
    """What a job is doing, for its error message: the stage and the file it reads, if any."""

    def __init__(self) -> None:
        self.name, self.path = "start", None

    def __call__(self, name: str, path: str | None = None) -> None:
        self.name, self.path = name, path

    def error(self, exc: BaseException) -> str:
        detail = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
        return f"{self.name} {self.path}: {detail}" if self.path else f"{self.name}: {detail}"


def _speech(pipe: "FloatPipeline", job: Job, at: _Stage, max_seconds: float | None) -> "np.ndarray":
    """The job's speech as 16 kHz mono samples: its audio file decoded as ``prepare_audio``
    decodes it, or its text spoken by its voice (whose errors name the voice)."""
    if job.text is not None:
        at("text-to-speech")
        return synthesize(job.text, job.voice)
    from .media.audio import load_audio

    at("audio", job.audio)
    return load_audio(str(job.audio), target_rate=pipe.config.sample_rate, max_seconds=max_seconds)


def _generate_job(pipe: "FloatPipeline", job: Job, out: Path, at: _Stage, batch_size: int,
                  max_seconds: float | None) -> Any:
    """``generate``: the portrait and the speech, and the head (``drive_groups``) from the
    drive video if the job has one."""
    from .inputs import Prepared

    s = job.settings
    at("image", job.image)
    source = pipe.prepare_image(str(job.image), crop=s.crop, face=s.face, crop_scale=s.crop_scale)
    wave = _speech(pipe, job, at, max_seconds)
    at("speech")
    speech = pipe.prepare_audio(wave, max_seconds=max_seconds)
    drive = None
    if job.video is not None:  # analysed here so that its errors name it; generate would do the same
        at("drive", job.video)
        drive = pipe.analyse_video(job.video, crop=s.crop, crop_scale=s.crop_scale)
    at("generation")
    return pipe.generate(job.image, job.audio, out, s.sampling, prepared=Prepared(source, speech), crop=s.crop,
                         paste_back=s.paste_back, preset=s.preset, batch_size=batch_size, progress=False,
                         drive=drive, drive_groups=s.drive_groups)


def _drive_job(pipe: "FloatPipeline", job: Job, out: Path, at: _Stage, batch_size: int,
               max_seconds: float | None) -> Any:
    """``drive``: the portrait moved by the video's face, with the video's length and sound."""
    s = job.settings
    at("image", job.image)
    source = pipe.prepare_image(str(job.image), crop=s.crop, face=s.face, crop_scale=s.crop_scale)
    at("video", job.video)  # analysed as drive analyses it
    video = pipe.analyse_video(str(job.video), crop=s.crop, face=s.video_face, crop_scale=s.crop_scale)
    at("drive")
    return pipe.drive(source, video, out, relative=s.relative, crop=s.crop, paste_back=s.paste_back,
                      batch_size=batch_size, progress=False)


def _dub_job(pipe: "FloatPipeline", job: Job, out: Path, at: _Stage, batch_size: int,
             max_seconds: float | None) -> Any:
    """``dub``: the video with its lips following the speech."""
    s = job.settings
    wave = _speech(pipe, job, at, max_seconds)
    at("video", job.video)  # analysed as dub analyses it
    video = pipe.analyse_video(str(job.video), face=s.face, crop_scale=s.crop_scale,
                               reference_frame="auto" if s.reference_frame is None else s.reference_frame)
    at("dub")
    return pipe.dub(video, wave, out, s.sampling, groups_from_video=s.groups_from_video,
                    reference_frame=s.reference_frame, batch_size=batch_size, max_seconds=max_seconds, progress=False)


#: The runner of each mode: the FloatPipeline method of that name, its inputs read first.
_MODE_RUNNERS: dict[str, Callable[..., Any]] = {"generate": _generate_job, "drive": _drive_job, "dub": _dub_job}


def run_job(pipe: "FloatPipeline", job: Job, out_dir: str | os.PathLike[str], *, batch_size: int = 8,
            max_seconds: float | None = None, attempt: int = 1) -> JobResult:
    """Run one job on a loaded pipeline into ``out_dir/<id>.mp4``: the ``FloatPipeline``
    method of its mode (``generate``, ``drive`` or ``dub``). The inputs are read first, one by
    one (the portrait, the speech: a text job's is :func:`float_core.tts.synthesize` of its
    text and voice, the video), so that an error names the file it comes from; the method
    then gets them read, which computes what it computes from the files.

    Never raises for the job's own failures: a bad input or setting gives a "failed" result
    whose error names the file (or the text-to-speech voice); running out of memory gives a
    failed result marked ``retryable``. ``max_seconds`` limits the speech (a drive job's
    length is its video's).
    """
    _crash_if_asked(job.id)
    start, cpu = time.perf_counter(), time.process_time()
    out = job.output(out_dir)
    result = JobResult(id=job.id, status="failed", settings_hash=job.settings_hash, line=job.line, attempts=attempt)
    at = _Stage()
    try:
        generated = _MODE_RUNNERS[job.mode](pipe, job, out, at, batch_size, max_seconds)
    except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the batch
        result.error = at.error(exc)
        result.retryable = _out_of_memory(exc)
    else:
        result.status, result.output, result.frames = "ok", str(out), generated.num_frames
    result.seconds, result.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return result


# ---------------------------------------------------------------------------- runners
@dataclass
class BatchSummary:
    """Counts and timings of a batch run (every result is also in ``results.jsonl``)."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    results: list[JobResult] = field(default_factory=list)
    seconds: float = 0.0  #: the whole run
    startup_seconds: float | None = None  #: loading the model (local) or ray.init + pool (Ray)
    first_result_seconds: float | None = None  #: start of the runner (ray.init) to the first job that ran
    workers: list[str] = field(default_factory=list)  #: what each worker that started runs on
    replaced: int = 0  #: Ray workers that died (or ran out of memory) and were replaced

    @property
    def exit_code(self) -> int:
        """0 when every job is ok or skipped, 1 when any failed."""
        return 1 if self.failed else 0

    def add(self, result: JobResult) -> None:
        self.results.append(result)
        setattr(self, result.status, getattr(self, result.status) + 1)


class _Recorder:
    """Writes each result to the log and tells the caller, in the order they end."""

    def __init__(self, log: ResultsLog, summary: BatchSummary, on_result: Callable[[JobResult], None] | None,
                 progress: ProgressLike):
        self.log, self.summary, self.on_result = log, summary, on_result
        self.report = as_progress(progress)
        self.started = time.perf_counter()

    def __call__(self, result: JobResult) -> None:
        self.log.append(result)
        self.summary.add(result)
        if result.attempts and self.summary.first_result_seconds is None:
            self.summary.first_result_seconds = time.perf_counter() - self.started
        if self.on_result is not None:
            self.on_result(result)
        self.report("jobs", len(self.summary.results), self.summary.total)


def run_batch(
    jobs: JobFile | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model: ModelSpec | None = None,
    *,
    defaults: JobSettings | None = None,
    ray: bool | str = False,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: int | None = None,
    retries: int = 2,
    batch_size: int = 8,
    max_seconds: float | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    progress: ProgressLike = None,
) -> BatchSummary:
    """Run a job file into ``out_dir``: ``<id>.mp4`` per job and ``results.jsonl``.

    Args:
        jobs: a :class:`JobFile` from :func:`load_jobs`, or a job file's path (loaded here with
            ``defaults``).
        model: how to build the pipeline (default: ``from_pretrained()``'s defaults).
        ray: False: one process, jobs in order. True: Ray (a local Ray is started unless
            ``RAY_ADDRESS`` names a cluster, or Ray is already initialised); a string: the
            address of a Ray cluster ("auto", "ray://host:10001", ...).
        workers, gpus_per_worker, cpus_per_worker: the Ray actor pool (see :func:`_pool_shape`
            for the defaults); local mode runs one worker.
        retries: how many more times a job whose worker died (or ran out of memory) is tried.
        batch_size, max_seconds: as in ``generate``.
        on_result: called with every :class:`JobResult` as it is recorded (invalid lines and
            skipped jobs first, then the jobs as they end).
        progress: reports ``("jobs", done, total)`` (:mod:`float_core.progress`).

    Returns:
        A :class:`BatchSummary`; its ``exit_code`` is 1 when any job (or invalid line) failed.

    Raises:
        BatchError: the job file is unusable, or no worker could load the model.
    """
    start = time.perf_counter()
    model = model or ModelSpec()
    for name, value, lowest in (("retries", retries, 0), ("batch_size", batch_size, 1), ("workers", workers, 1),
                                ("gpus_per_worker", gpus_per_worker, 0), ("cpus_per_worker", cpus_per_worker, 1)):
        if value is not None and not value >= lowest:
            raise ValueError(f"{name}: must be >= {lowest}, got {value}")
    job_file = jobs if isinstance(jobs, JobFile) else load_jobs(jobs, defaults)
    out = Path(out_dir).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out / RESULTS_FILE)
    summary = BatchSummary(total=job_file.total)
    record = _Recorder(log, summary, on_result, progress)
    for bad in job_file.invalid:
        record(JobResult(id=bad.id, status="failed", error=f"line {bad.line}: {bad.error}", line=bad.line))
    _remove_stale_partials(out, job_file.jobs)
    todo = _plan(job_file.jobs, out, model, log, record)
    if todo:
        options = dict(batch_size=batch_size, max_seconds=max_seconds, retries=retries)
        if ray is False:
            _run_local(todo, out, model, record, **options)
        else:
            _run_ray(todo, out, model, record, address=None if ray is True else str(ray), workers=workers,
                     gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, **options)
    summary.seconds = time.perf_counter() - start
    return summary


def _plan(jobs: Sequence[Job], out: Path, model: ModelSpec, log: ResultsLog,
          record: Callable[[JobResult], None]) -> list[Job]:
    """Hash every job; record the ones whose video is already there with the same hash as
    skipped (and the ones whose inputs cannot be read as failed); return the rest."""
    key = model.key()
    finished = log.finished_hashes()
    digests: dict[str, str] = {}
    todo = []
    for job in jobs:
        try:
            job = dataclasses.replace(job, settings_hash=settings_hash(job, key, digests))
        except OSError as exc:
            record(JobResult(id=job.id, status="failed", error=f"cannot read an input: {exc}", line=job.line))
            continue
        video = job.output(out)
        if video.is_file() and finished.get(job.id) == job.settings_hash:
            record(JobResult(id=job.id, status="skipped", output=str(video), settings_hash=job.settings_hash,
                             line=job.line))
        else:
            todo.append(job)
    return todo


def _remove_stale_partials(out: Path, jobs: Iterable[Job]) -> None:
    """Delete the temporary files a killed run left for these jobs (``.<id>.XXXX`` + PARTIAL_SUFFIX,
    written by ``float_core.media.video``): no other run writes into ``out`` meanwhile, and the
    videos they were to become are made again (or already exist)."""
    ids = {job.id for job in jobs}
    for path in out.glob(f".*{PARTIAL_SUFFIX}"):
        stem = path.name[1:].rsplit(".", 3)[0]  # ".<id>.<random>.partial.mp4"
        if stem in ids:
            path.unlink(missing_ok=True)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_local(jobs: Sequence[Job], out: Path, model: ModelSpec, record: _Recorder, *,
               batch_size: int, max_seconds: float | None, retries: int) -> None:
    """One process, the pipeline loaded once, jobs in order; a job that ran out of memory is
    tried again after the memory is released. The model's ``threads`` apply while the jobs
    run; the caller's torch thread count is restored afterwards."""
    import torch

    summary = record.summary
    threads = torch.get_num_threads()
    t0 = record.started = time.perf_counter()
    try:
        try:
            pipe = model.load()
        except Exception as exc:  # noqa: BLE001 - WeightsError, bad device/dtype: no traceback
            raise BatchError(f"cannot load the model: {exc}") from exc
        summary.startup_seconds = time.perf_counter() - t0
        summary.workers = [pipe.describe()]
        for job in jobs:
            for attempt in range(1, retries + 2):
                result = run_job(pipe, job, out, batch_size=batch_size, max_seconds=max_seconds, attempt=attempt)
                if not (result.retryable and attempt <= retries):
                    break
                _free_memory()
            record(result)
    finally:
        torch.set_num_threads(threads)


class BatchWorker:
    """One pipeline in a worker process (a Ray actor): :meth:`run` runs one job at a time.

    The driver's ``FLOAT_*`` environment variables are set first (``env``), so every worker
    runs with the driver's settings (e.g. ``FLOAT_DTYPE``) wherever it is. A model that fails to
    load is reported by :meth:`ready` instead of killing the actor.
    """

    def __init__(self, model: ModelSpec, env: Mapping[str, str], batch_size: int = 8,
                 max_seconds: float | None = None):
        os.environ.update(env)
        self.batch_size, self.max_seconds = batch_size, max_seconds
        self.pipe: FloatPipeline | None = None
        self.error: str | None = None
        try:
            self.pipe = model.load()
        except Exception as exc:  # noqa: BLE001 - reported by ready()
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self) -> tuple[bool, str]:
        """(True, where it runs) or (False, why the model did not load)."""
        if self.pipe is None:
            return False, str(self.error)
        import socket

        return True, f"{socket.gethostname()} pid {os.getpid()}: {self.pipe.describe()}"

    def run(self, job: Job, out_dir: str, attempt: int) -> JobResult:
        assert self.pipe is not None, "run() before ready() reported success"
        return run_job(self.pipe, job, out_dir, batch_size=self.batch_size, max_seconds=self.max_seconds,
                       attempt=attempt)


def _pool_shape(ray_api: Any, workers: int | None, gpus: float | None, cpus: int | None) -> tuple[int, float, int]:
    """(actors, GPUs per actor, CPUs per actor) for this cluster.

    GPUs per actor: ``gpus``, else 1 when the cluster has GPUs, else 0. Actors: ``workers``, else
    one per GPU share (GPU clusters) or one per node (CPU-only clusters). CPUs (torch threads)
    per actor: ``cpus``, else 1 for GPU actors, else the smallest node's CPUs shared by the
    actors per node. Raises BatchError when no node could host one actor.
    """
    nodes = [n.get("Resources", {}) for n in ray_api.nodes() if n.get("Alive")]
    total_gpus = sum(n.get("GPU", 0) for n in nodes)
    g = float(gpus) if gpus is not None else (1.0 if total_gpus >= 1 else 0.0)
    cpu_nodes = [n.get("CPU", 0) for n in nodes if n.get("CPU", 0) >= 1] or [1]
    if g > 0:
        n = workers or max(1, int(total_gpus // g))
        c = cpus or 1
        if not any(node.get("GPU", 0) >= g and node.get("CPU", 0) >= c for node in nodes):
            raise BatchError(f"no node of the Ray cluster has {g:g} GPU(s) and {c} CPU(s) for a worker "
                             f"(cluster: {total_gpus:g} GPUs); lower --gpus-per-worker or use 0 for CPU workers")
    else:
        n = workers or len(cpu_nodes)
        per_node = math.ceil(n / len(cpu_nodes))
        c = cpus or max(1, int(min(cpu_nodes) // per_node))
        if c > max(cpu_nodes):
            raise BatchError(f"no node of the Ray cluster has {c} CPUs for a worker (largest: "
                             f"{max(cpu_nodes):g}); lower --cpus-per-worker")
    return n, g, c


def _run_ray(jobs: Sequence[Job], out: Path, model: ModelSpec, record: _Recorder, *,
             address: str | None, workers: int | None, gpus_per_worker: float | None,
             cpus_per_worker: int | None, batch_size: int, max_seconds: float | None, retries: int) -> None:
    """The Ray runner: an actor pool fed one job per free actor; dead actors replaced."""
    try:
        import ray as ray_api
    except ImportError:
        raise BatchError("Ray is not installed: pip install 'float-studio[scale]' (or pip install ray)") from None
    from ray.exceptions import RayError

    t0 = record.started = time.perf_counter()  # the first result counts from ray.init
    started_here = not ray_api.is_initialized()
    if started_here:
        if address or os.environ.get("RAY_ADDRESS"):
            ray_api.init(address=address)
        else:  # a local Ray on this machine
            ray_api.init(include_dashboard=False)
    try:
        n, g, c = _pool_shape(ray_api, workers, gpus_per_worker, cpus_per_worker)
        spec = model if g > 0 else dataclasses.replace(model, threads=model.threads or c)
        env = {k: v for k, v in os.environ.items() if k.startswith("FLOAT_")}
        actor_class = ray_api.remote(BatchWorker).options(num_cpus=c, num_gpus=g, max_restarts=0)
        pool = _ActorPool(ray_api, RayError, lambda: actor_class.remote(spec, env, batch_size, max_seconds))
        pool.run(jobs, str(out), retries, n, record, t0)
    finally:
        if started_here:
            ray_api.shutdown()


class _ActorPool:
    """Jobs streamed to free actors (one in flight per actor); results recorded as they return."""

    def __init__(self, ray_api: Any, ray_error: type[BaseException], new_actor: Callable[[], Any]):
        self.ray, self.RayError, self.new_actor = ray_api, ray_error, new_actor
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor
        self.running: dict[Any, tuple[Any, Job, int]] = {}  # run() ref -> (actor, job, attempt)
        self.idle: deque[Any] = deque()
        self.alive: set[Any] = set()

    def _start(self) -> None:
        actor = self.new_actor()
        self.alive.add(actor)
        self.starting[actor.ready.remote()] = actor

    def _drop(self, actor: Any) -> None:
        self.alive.discard(actor)
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def run(self, jobs: Sequence[Job], out: str, retries: int, size: int, record: _Recorder, t0: float) -> None:
        summary = record.summary
        pending: deque[tuple[Job, int]] = deque((job, 1) for job in jobs)
        last_error = ""
        try:
            for _ in range(min(size, len(jobs))):
                self._start()
            while pending or self.running:
                while self.idle and pending:
                    actor = self.idle.popleft()
                    job, attempt = pending.popleft()
                    self.running[actor.run.remote(job, out, attempt)] = (actor, job, attempt)
                if not self.running and not self.starting:  # every worker failed to start
                    if not summary.workers:
                        raise BatchError(f"no Ray worker could load the model: {last_error}")
                    for job, attempt in pending:
                        record(JobResult(id=job.id, status="failed", settings_hash=job.settings_hash, line=job.line,
                                         attempts=attempt - 1, error=f"no worker could start: {last_error}"))
                    return
                (ref,), _ = self.ray.wait(list(self.starting) + list(self.running), num_returns=1)
                if ref in self.starting:
                    actor = self.starting.pop(ref)
                    try:
                        ok, info = self.ray.get(ref)
                    except self.RayError as exc:
                        ok, info = False, _short(exc)
                    if ok:
                        if summary.startup_seconds is None:
                            summary.startup_seconds = time.perf_counter() - t0
                        summary.workers.append(info)
                        self.idle.append(actor)
                    else:  # the pool shrinks; the other workers go on
                        last_error = info
                        self._drop(actor)
                    continue
                actor, job, attempt = self.running.pop(ref)
                try:
                    result: JobResult = self.ray.get(ref)
                except self.RayError as exc:  # the actor died: crash, OOM kill, lost node
                    result = JobResult(id=job.id, status="failed", settings_hash=job.settings_hash, line=job.line,
                                       attempts=attempt, error=f"the worker died ({_short(exc)})", retryable=True)
                if not result.retryable:
                    record(result)
                    self.idle.append(actor)
                    continue
                self._drop(actor)  # dead, or its memory is suspect after an out-of-memory error
                summary.replaced += 1
                if attempt <= retries:
                    pending.appendleft((job, attempt + 1))
                else:
                    result.error = f"{result.error}; tried {attempt} times"
                    record(result)
                if len(self.alive) < size and (pending or self.running):
                    self._start()  # a fresh worker in its place
        finally:
            for actor in list(self.alive):
                self._drop(actor)


def _short(exc: BaseException) -> str:
    """The first line of a Ray error (they carry whole tracebacks)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
