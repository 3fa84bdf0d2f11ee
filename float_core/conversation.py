"""Several characters in one video: each portrait speaks its own lines and listens while the
others talk (TalkingMachines' speaking and silence modes, on FLOAT).

A conversation has N characters, each a portrait with its own speech track, all as long as the
longest track (shorter ones are padded with silence). Each character is animated alone, by the
engine's one sampling path with silence mode on, exactly as
``FloatPipeline.generate(portrait, track, idle=True, seed=character_seed(seed, i))``:

* **Silence mode** (:func:`float_core.vad.silence_mode`): frames where the character's own track
  is silent, by voice activity, get the null audio condition (w_a = 0, the condition FLOAT's
  classifier-free training drops, paper Sec. 4.2, Eq. 13). The face then blinks, moves its head
  a little and keeps its mouth at rest while it listens: it never mouths another character's
  voice, because no other voice is in its condition.
* **Seeds** (:func:`character_seed`): one seed for the conversation, and per character a seed
  derived from it and the character's index only. A character's frames are therefore a function
  of its portrait, its (padded) track and the settings: changing another character's track
  changes nothing in its tile.

Speech comes as N tracks (paths or 16 kHz arrays, ``None`` for a character who only listens),
as one multi-channel file (channel i is character i), or as a :class:`Script`: "Name: line"
per line, spoken by each character's voice (:mod:`float_core.tts`) and placed one line after
the other with a small gap, each line on its speaker's track and silence on the others'.

The video composes the characters' tiles (:class:`Layout`): ``"row"`` (side by side),
``"grid"``, or ``"speaker"`` (the current speaker large, the others small; the speaker changes
only when someone else starts a turn of at least ``min_turn`` frames, so a cough does not cut:
:func:`speaker_timeline`), with optional name captions that light up while their character
speaks. The sound is the mix of the tracks (:func:`mix_tracks`). Memory stays bounded: the
motion (T x d per character) is sampled first, then every character is decoded one batch at a
time and each batch of composed frames is encoded before the next is decoded.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np
from torch import Tensor

from .config import DEFAULT_GAP, LAYOUTS, SAMPLE_RATE, SAMPLES_PER_FRAME, SamplingConfig
from .inputs import ImageInput, Prepared, SourceImage, validate_waveform
from .progress import ProgressLike, as_progress

if TYPE_CHECKING:
    from .pipeline import FloatPipeline

__all__ = [
    "BLANK_LINE_PAUSE",
    "DEFAULT_GAP",
    "DEFAULT_VOICES",
    "LAYOUTS",
    "MIN_TURN_SECONDS",
    "Character",
    "Conversation",
    "ConversationResult",
    "Layout",
    "Pause",
    "PlacedScript",
    "Script",
    "ScriptError",
    "ScriptLine",
    "Segment",
    "character_seed",
    "check_names",
    "conversation_frames",
    "converse",
    "load_tracks",
    "mix_tracks",
    "sample_conversation",
    "speaker_timeline",
    "speech_runs",
]

#: Seconds of silence a blank script line adds.
BLANK_LINE_PAUSE = 0.5
#: "speaker" layout: a new speaker takes the large tile only with a speech run this long.
MIN_TURN_SECONDS = 0.5
#: Voices of script characters that are given none, by character index (cycled): distinct
#: espeak-ng voices, so that two characters do not sound alike.
DEFAULT_VOICES: tuple[str, ...] = ("espeak:en-us+f3", "espeak:en-gb+m3", "espeak:en-us+m1", "espeak:en-gb+f2")
_MAX_NAME = 40
_PAUSE = re.compile(r"^\[\s*pause\b\s*(.*?)\s*\]$", re.IGNORECASE)
_CAPTION_BG = (24, 24, 27)
_CAPTION_SPEAKING_BG = (79, 70, 229)  #: the caption of a character who is speaking

#: One character's speech: a file path, 16 kHz mono samples, or None (silent: only listens).
TrackInput = Union[str, "os.PathLike[str]", np.ndarray, Tensor, None]


class ScriptError(ValueError):
    """A script that cannot be performed: no speaker on a line, an unknown name, no lines, ..."""


# ---------------------------------------------------------------------------- script
@dataclass(frozen=True)
class ScriptLine:
    """One spoken line: ``speaker`` as written, the ``text``, and its 1-based ``line`` number."""

    speaker: str
    text: str
    line: int


@dataclass(frozen=True)
class Pause:
    """Silence of ``seconds`` (a blank line, or ``[pause 1.5]``), at 1-based ``line``."""

    seconds: float
    line: int


@dataclass(frozen=True)
class Segment:
    """Where a script line landed: on ``character``'s track, samples ``[start, end)`` at 16 kHz."""

    character: int
    name: str
    text: str
    start: int
    end: int
    line: int

    @property
    def start_seconds(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_seconds(self) -> float:
        return self.end / SAMPLE_RATE


@dataclass(frozen=True, eq=False)
class PlacedScript:
    """A script spoken and laid out: one track per character, all the same length."""

    names: tuple[str, ...]
    voices: tuple[str, ...]  #: the voice spec of each character
    tracks: np.ndarray  #: float32 (N, samples) at 16 kHz
    segments: tuple[Segment, ...]  #: the lines in order


@dataclass(frozen=True)
class Script:
    """A dialogue: spoken lines and pauses, in order. Build it with :meth:`parse`."""

    items: tuple[ScriptLine | Pause, ...]

    @classmethod
    def parse(cls, text: str) -> "Script":
        """Read a script: one ``Name: what they say`` per line.

        A blank line is a pause of :data:`BLANK_LINE_PAUSE` seconds, ``[pause 1.5]`` (a line of
        its own) a pause of 1.5 s, and a line starting with ``#`` a comment. Blank lines before
        the first and after the last line are ignored. Only the first colon separates the name,
        so the text may contain colons.

        Raises:
            ScriptError: a line without a speaker (no ``Name:``), a speaker with nothing to say,
                a malformed pause, or no spoken line at all; the message names the line.
        """
        if not isinstance(text, str):
            raise ScriptError(f"script: expected text, got {type(text).__name__}")
        items: list[ScriptLine | Pause] = []
        for number, raw in enumerate(text.strip().splitlines(), 1):
            line = raw.strip()
            if not line:
                items.append(Pause(BLANK_LINE_PAUSE, number))
                continue
            if line.startswith("#"):
                continue
            pause = _PAUSE.match(line)
            if pause:
                items.append(Pause(_pause_seconds(pause.group(1), number), number))
                continue
            name, sep, said = line.partition(":")
            name, said = name.strip(), said.strip()
            if not sep or not name or len(name) > _MAX_NAME:
                raise ScriptError(f"script line {number}: no speaker in {line[:60]!r}; write one "
                                  f"'Name: what they say' per line (or [pause 1.5])")
            if not said:
                raise ScriptError(f"script line {number}: {name} has nothing to say; write the words after "
                                  f"'{name}:' or remove the line")
            items.append(ScriptLine(name, said, number))
        if not any(isinstance(item, ScriptLine) for item in items):
            raise ScriptError("script: no spoken lines; write one 'Name: what they say' per line")
        return cls(tuple(items))

    @property
    def lines(self) -> tuple[ScriptLine, ...]:
        """The spoken lines, in order."""
        return tuple(item for item in self.items if isinstance(item, ScriptLine))

    @property
    def speakers(self) -> tuple[str, ...]:
        """The speakers' names in order of their first line (as first written; case-insensitive)."""
        seen: dict[str, str] = {}
        for line in self.lines:
            seen.setdefault(line.speaker.casefold(), line.speaker)
        return tuple(seen.values())

    def cast(self, names: Sequence[str] | None = None, voices: Mapping[str, str | None] | None = None,
             ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The characters and their voices, checked before anything is spoken.

        Args:
            names: the characters in portrait order (None: the speakers in order of appearance).
                Names match the script's speakers without regard to case.
            voices: a voice spec (:mod:`float_core.tts`) per character name, e.g.
                ``{"Ana": "espeak:en-us+f3", "Ben": "url:alloy"}``; a character without one gets
                ``DEFAULT_VOICES[i % 4]`` (i its index).

        Returns:
            (names, voice specs), one each per character.

        Raises:
            ScriptError: a speaker who is not a character, a voice for no character.
            float_core.tts.TTSError: a voice of a speaking character that cannot be used here.
        """
        from .tts import check_voice

        names = check_names(self.speakers if names is None else names)
        index = {name.casefold(): i for i, name in enumerate(names)}
        for line in self.lines:
            if line.speaker.casefold() not in index:
                raise ScriptError(f"script line {line.line}: unknown speaker {line.speaker!r}; the characters "
                                  f"are {', '.join(names)}")
        specs = [DEFAULT_VOICES[i % len(DEFAULT_VOICES)] for i in range(len(names))]
        for key, spec in (voices or {}).items():
            if str(key).strip().casefold() not in index:
                raise ScriptError(f"voices: no character named {key!r}; the characters are {', '.join(names)}")
            if spec is not None and str(spec).strip():
                specs[index[str(key).strip().casefold()]] = str(spec).strip()
        speaking = {index[line.speaker.casefold()] for line in self.lines}
        for i in sorted(speaking):
            check_voice(specs[i])
        return names, tuple(specs)

    def place(self, names: Sequence[str] | None = None, voices: Mapping[str, str | None] | None = None, *,
              gap: float = DEFAULT_GAP, synthesize: Callable[[str, str], np.ndarray] | None = None,
              progress: ProgressLike = None) -> PlacedScript:
        """Speak every line with its character's voice and lay the lines out on N tracks.

        The first line starts after the pauses before it; each further line starts ``gap``
        seconds after the previous one ended, plus the pauses between them. A line goes on its
        speaker's track; every other track is silent there. All tracks end with the last line
        (or the last pause after it).

        Args:
            names, voices: as :meth:`cast` (checked before anything is spoken).
            gap: seconds between consecutive lines (>= 0).
            synthesize: ``synthesize(text, voice spec) -> 16 kHz mono float32``
                (default :func:`float_core.tts.synthesize`).
            progress: reported as ``("voices", lines_done, lines)``.
        """
        from .tts import synthesize as tts_synthesize

        if not isinstance(gap, (int, float)) or not math.isfinite(gap) or gap < 0:
            raise ScriptError(f"gap: must be a number of seconds >= 0, got {gap!r}")
        names, specs = self.cast(names, voices)
        speak = synthesize or tts_synthesize
        index = {name.casefold(): i for i, name in enumerate(names)}
        report = as_progress(progress)
        spoken: dict[tuple[str, str], np.ndarray] = {}  # the same words in the same voice: spoken once
        placed: list[tuple[int, np.ndarray, ScriptLine] | int] = []  # lines, or pause samples
        lines = self.lines
        for item in self.items:
            if isinstance(item, Pause):
                placed.append(int(round(item.seconds * SAMPLE_RATE)))
                continue
            who = index[item.speaker.casefold()]
            key = (item.text, specs[who])
            if key not in spoken:
                wave = np.asarray(speak(item.text, specs[who]), np.float32)
                if wave.ndim != 1 or wave.size == 0:
                    raise ScriptError(f"script line {item.line}: the voice {specs[who]} made no speech of "
                                      f"{item.text[:60]!r}")
                spoken[key] = validate_waveform(wave)
            placed.append((who, spoken[key], item))
            report("voices", sum(isinstance(p, tuple) for p in placed), len(lines))
        cursor, segments, spans = 0, [], []
        gap_samples = int(round(gap * SAMPLE_RATE))
        for entry in placed:
            if isinstance(entry, int):
                cursor += entry
                continue
            who, wave, line = entry
            cursor += gap_samples if segments else 0
            segments.append(Segment(who, names[who], line.text, cursor, cursor + wave.size, line.line))
            spans.append(wave)
            cursor += wave.size
        tracks = np.zeros((len(names), cursor), np.float32)
        for segment, wave in zip(segments, spans):
            tracks[segment.character, segment.start:segment.end] = wave
        return PlacedScript(names, specs, tracks, tuple(segments))


def _pause_seconds(value: str, number: int) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 <= seconds <= 600:
        raise ScriptError(f"script line {number}: [pause {value}] needs seconds between 0 and 600, e.g. [pause 1.5]")
    return seconds


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """Character names: non-empty, at most 40 characters, no colon or line break, distinct
    without regard to case. Raises ScriptError saying which name is wrong."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    out = tuple(str(n).strip() for n in names)
    seen: set[str] = set()
    for i, name in enumerate(out, 1):
        if not name or len(name) > _MAX_NAME or ":" in name or "\n" in name:
            raise ScriptError(f"names: character {i}'s name {name!r} must be 1-{_MAX_NAME} characters without "
                              f"':' or line breaks")
        if name.casefold() in seen:
            raise ScriptError(f"names: {name!r} is given twice; every character needs its own name")
        seen.add(name.casefold())
    return out


# ---------------------------------------------------------------------------- tracks
def load_tracks(speech: Sequence[TrackInput] | str | os.PathLike[str], count: int, *,
                max_seconds: float | None = None) -> np.ndarray:
    """One 16 kHz track per character, all as long as the longest: float32 (count, samples).

    Args:
        speech: ``count`` tracks (each a path, a float32 16 kHz mono array, or ``None`` for a
            character who only listens), or one multi-channel file whose channel i is
            character i (a single character takes any file, mixed down).
        max_seconds: refuse a conversation longer than this (None: no limit).

    Raises:
        ValueError: a different number of tracks (or channels) than characters, no samples at
            all, an unreadable file or array, or too long.
    """
    from .media.audio import load_audio, load_audio_channels

    hint = "give one track per portrait, one file with one channel per portrait, or a Script"
    if isinstance(speech, (str, os.PathLike)):
        channels = (load_audio(speech, target_rate=SAMPLE_RATE, max_seconds=max_seconds)[None] if count == 1
                    else load_audio_channels(speech, target_rate=SAMPLE_RATE, max_seconds=max_seconds))
        if channels.shape[0] != count:
            raise ValueError(f"speech: {Path(speech).name} has {channels.shape[0]} channel(s) but there are {count} "
                             f"portraits; {hint}")
        return channels
    if isinstance(speech, np.ndarray) or not isinstance(speech, Sequence):
        raise ValueError(f"speech: expected a list of {count} tracks, a multi-channel file or a Script, got "
                         f"{type(speech).__name__}; {hint}")
    if len(speech) != count:
        raise ValueError(f"speech: {count} portraits but {len(speech)} speech tracks; {hint}")
    waves: list[np.ndarray | None] = []
    for i, track in enumerate(speech, 1):
        try:
            if track is None:
                waves.append(None)
            elif isinstance(track, (str, os.PathLike)):
                waves.append(load_audio(track, target_rate=SAMPLE_RATE, max_seconds=max_seconds))
            else:
                waves.append(validate_waveform(track))
        except ValueError as exc:
            raise ValueError(f"speech track {i}: {exc}") from None
    length = max((w.size for w in waves if w is not None), default=0)
    if length == 0:
        raise ValueError("speech: every track is None; give at least one track with samples (silence is fine)")
    tracks = np.zeros((count, length), np.float32)
    for i, wave in enumerate(waves):
        if wave is not None:
            tracks[i, :wave.size] = wave
    if max_seconds is not None and length > max_seconds * SAMPLE_RATE:
        raise ValueError(f"speech: the conversation is {length / SAMPLE_RATE:.1f} s long; the limit is "
                         f"{max_seconds:g} s")
    return tracks


def mix_tracks(tracks: np.ndarray) -> np.ndarray:
    """The conversation's sound: the sum of the tracks (N, S), float32 (S,).

    A sum that would clip (peak above 1) is scaled down as a whole to a peak of 1; otherwise
    it is the plain sum (a script's lines do not overlap, so its mix is every line in place).
    """
    tracks = np.asarray(tracks, np.float32)
    if tracks.ndim != 2 or tracks.shape[1] == 0:
        raise ValueError(f"tracks: expected (characters, samples), got shape {tracks.shape}")
    mix = tracks.sum(axis=0, dtype=np.float64)
    peak = float(np.abs(mix).max())
    return (mix / peak if peak > 1.0 else mix).astype(np.float32)


def character_seed(seed: int, index: int) -> int:
    """Character ``index``'s sampling seed, derived from the conversation's ``seed``.

    A function of the two numbers only (numpy's ``SeedSequence`` with the index as its spawn
    key, which decorrelates the streams), so a character keeps its seed whatever the other
    characters are; in [0, 2**31).
    """
    state = np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(1, np.uint32)[0]
    return int(state) & 0x7FFFFFFF


# ---------------------------------------------------------------------------- sampling
@dataclass(frozen=True, eq=False)
class Character:
    """One character of a sampled conversation."""

    name: str
    source: SourceImage
    speaking: np.ndarray  #: bool (T,): voice activity of its own track (False: silence mode)
    seed: int  #: its sampling seed (:func:`character_seed`)
    motion: Tensor  #: (T, d) motion latents
    emotion: Tensor  #: the emotion it was sampled with, (7,) or (W, 7)


@dataclass(frozen=True, eq=False)
class Conversation:
    """Every character's motion plus the mixed sound: what :func:`conversation_frames` renders."""

    characters: tuple[Character, ...]
    audio: np.ndarray  #: float32 (S,) 16 kHz: the mix of the tracks
    num_frames: int
    seed: int  #: the conversation's seed (each character's is derived from it)
    sampling: SamplingConfig  #: the settings, with ``seed``
    segments: tuple[Segment, ...] = ()  #: a script's lines as placed
    voices: tuple[str, ...] = ()  #: a script's voice per character

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.characters)

    @property
    def speaking(self) -> np.ndarray:
        """bool (N, T): row i is character i's speaking flags."""
        return np.stack([c.speaking for c in self.characters])


def sample_conversation(
    pipe: "FloatPipeline", portraits: Sequence[ImageInput | SourceImage],
    speech: "Script | Sequence[TrackInput] | str | os.PathLike[str]", *,
    names: Sequence[str] | str | None = None, voices: Mapping[str, str | None] | None = None,
    sampling: SamplingConfig | None = None, crop: bool = True, gap: float = DEFAULT_GAP,
    max_seconds: float | None = None, progress: ProgressLike = None, timings: dict[str, float] | None = None,
    **overrides: Any,
) -> Conversation:
    """Analyse every portrait and track and sample every character's motion (no rendering).

    See :func:`converse` for the arguments. Every input is checked before the model runs:
    the counts, the names, the script's speakers and voices, then the portraits (faces), then
    the speech.
    """
    cfg = (sampling or SamplingConfig()).with_overrides(**overrides)
    seed = secrets.randbelow(2**31) if cfg.seed is None else cfg.seed
    cfg = cfg.replace(seed=seed)
    report = as_progress(progress)
    timings = {} if timings is None else timings
    if isinstance(portraits, (str, os.PathLike, np.ndarray)) or not isinstance(portraits, Sequence):
        raise ValueError("portraits: expected a list of images (paths or RGB arrays), one per character")
    count = len(portraits)
    if count == 0:
        raise ValueError("portraits: give at least one portrait")
    script = speech if isinstance(speech, Script) else None
    specs: tuple[str, ...] = ()
    if script is not None:
        if names is None and len(script.speakers) != count:
            raise ScriptError(f"the script has {len(script.speakers)} speaker(s) ({', '.join(script.speakers)}) but "
                              f"{count} portrait(s) were given; pass names in portrait order")
        names, specs = script.cast(names, voices)
    else:
        if voices:
            raise ValueError("voices: only a Script is spoken by voices; the tracks are already speech")
        names = check_names(names) if names is not None else tuple(f"Character {i + 1}" for i in range(count))
    if len(names) != count:
        raise ValueError(f"names: {len(names)} name(s) for {count} portrait(s); give one name per portrait")

    tracks: np.ndarray | None = None
    if script is None:  # recordings are read and checked before any model work; a script is spoken below
        tracks = load_tracks(speech, count, max_seconds=max_seconds)
    t0 = time.perf_counter()
    sources = []
    for i, portrait in enumerate(portraits):
        if isinstance(portrait, SourceImage):
            sources.append(portrait)
        else:
            try:
                sources.append(pipe.prepare_image(portrait, crop=crop))
            except ValueError as exc:
                raise ValueError(f"portrait {i + 1} ({names[i]}): {exc}") from None
        report("portraits", i + 1, count)
    timings["portraits"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    segments: tuple[Segment, ...] = ()
    if script is not None:
        placed = script.place(names, dict(zip(names, specs)), gap=gap, progress=report)
        tracks, segments = placed.tracks, placed.segments
        if max_seconds is not None and tracks.shape[1] > max_seconds * SAMPLE_RATE:
            raise ValueError(f"script: the conversation is {tracks.shape[1] / SAMPLE_RATE:.1f} s long; the limit "
                             f"is {max_seconds:g} s")
        timings["voices"] = time.perf_counter() - t0
    assert tracks is not None
    audio = mix_tracks(tracks)

    characters = []
    sampled = [0.0, 0.0]  # seconds analysing speech, sampling
    for i in range(count):
        t0 = time.perf_counter()
        prepared, speaking = _analyse(pipe, sources[i], tracks[i], cfg)
        report("speech", i + 1, count)
        t1 = time.perf_counter()
        seed_i = character_seed(seed, i)

        def scaled(stage: str, done: int, total: int, i: int = i) -> None:
            report(stage, i * total + done, count * total)

        emotion = pipe.resolve_emotion(prepared, cfg.emotion)
        motion = pipe.sample_motion(prepared, cfg.replace(seed=seed_i), progress=scaled)
        characters.append(Character(names[i], sources[i], speaking, seed_i, motion, emotion))
        sampled[0] += t1 - t0
        sampled[1] += time.perf_counter() - t1
    timings["speech"], timings["sampling"] = sampled
    return Conversation(tuple(characters), audio, int(characters[0].motion.shape[0]), seed, cfg, segments, specs)


def _analyse(pipe: "FloatPipeline", source: SourceImage, track: np.ndarray,
             cfg: SamplingConfig) -> tuple[Prepared, np.ndarray]:
    """One character's conditions, as ``generate(idle=True)`` makes them: the track's analysis,
    its emotion timeline for dynamic emotion, then silence mode."""
    from .vad import silence_mode

    speech = pipe.prepare_audio(track)
    if cfg.dynamic_emotion:
        speech = pipe.with_emotion_timeline(speech)
    speech, speaking = silence_mode(speech)
    return Prepared(source, speech), speaking


# ---------------------------------------------------------------------------- layouts
def speech_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """The runs of True in speaking flags (T,): ``[(first, end), ...]`` frame ranges, in order."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(flags, bool).astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def speaker_timeline(speaking: np.ndarray, min_turn: int) -> np.ndarray:
    """Who has the large tile in each frame of the "speaker" layout: int (T,).

    A *turn* is a run of at least ``min_turn`` speaking frames. The first character to take a
    turn has the tile from frame 0 and keeps it, through its own pauses too, until a frame
    where it is not in a turn and someone else is: that one gets the tile from that frame on
    (the first frame of its turn, unless the turn began while the holder was still talking).
    Shorter runs (a cough, an "mm") never cut. That is the hysteresis: taking the tile needs a
    real turn, keeping it needs nothing. Among several candidates the one whose turn began
    first wins (then the lower index). Without any turn, character 0 has it throughout.
    """
    flags = np.asarray(speaking, bool)
    if flags.ndim != 2:
        raise ValueError(f"speaking: expected (characters, frames), got shape {flags.shape}")
    count, total = flags.shape
    start = np.full((count, total), -1)  # start frame of the turn covering each frame, -1: none
    for i in range(count):
        for a, b in speech_runs(flags[i]):
            if b - a >= max(1, int(min_turn)):
                start[i, a:b] = a
    firsts = [(int(start[i][start[i] >= 0][0]), i) for i in range(count) if (start[i] >= 0).any()]
    current = min(firsts)[1] if firsts else 0
    out = np.empty(total, np.int64)
    for t in range(total):
        if start[current, t] < 0:
            candidates = [(int(start[i, t]), i) for i in range(count) if start[i, t] >= 0]
            if candidates:
                current = min(candidates)[1]
        out[t] = current
    return out


def _check_layout(kind: str, tile: Any) -> int:
    """The tile side, after checking the layout's name and the side (even, >= 16 pixels)."""
    if kind not in LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(LAYOUTS)}, got {kind!r}")
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 16 or tile % 2:
        raise ValueError(f"tile size: must be an even number of pixels >= 16, got {tile!r}")
    return int(tile)


def _even(x: float) -> int:
    return max(2, int(x) - int(x) % 2)


@dataclass(frozen=True, eq=False)
class Layout:
    """Where each character's tile goes in each frame, and the name captions.

    Build it with :meth:`make`. ``tile`` is a character's tile side ("row", "grid") or the
    large tile's ("speaker"); the others are ``thumb`` wide. Captions are a band under each
    tile with the name, highlighted while the character speaks.
    """

    kind: str
    names: tuple[str, ...]
    speaking: np.ndarray  #: bool (N, T)
    tile: int
    captions: bool
    speaker: np.ndarray | None  #: int (T,): the large tile's character ("speaker" only)
    width: int
    height: int
    thumb: int = 0
    _bands: dict = field(default_factory=dict, repr=False)

    @classmethod
    def make(cls, kind: str, names: Sequence[str], speaking: np.ndarray, tile: int, *, captions: bool = True,
             min_turn: int | None = None) -> "Layout":
        """A layout for N characters with speaking flags (N, T).

        Args:
            kind: "row", "grid" or "speaker".
            tile: tile side in pixels (even, >= 16).
            min_turn: "speaker": frames of speech that take the large tile (default
                :data:`MIN_TURN_SECONDS` at 25 fps).
        """
        tile = _check_layout(kind, tile)
        speaking = np.asarray(speaking, bool)
        count = len(names)
        if speaking.ndim != 2 or speaking.shape[0] != count:
            raise ValueError(f"speaking: expected ({count}, frames) flags, got shape {speaking.shape}")
        band = _band_height(tile) if captions else 0
        speaker, thumb = None, 0
        if kind == "row":
            width, height = count * tile, tile + band
        elif kind == "grid":
            cols = math.ceil(math.sqrt(count))
            rows = math.ceil(count / cols)
            width, height = cols * tile, rows * (tile + band)
        else:
            turn = int(round(MIN_TURN_SECONDS * SAMPLE_RATE / SAMPLES_PER_FRAME)) if min_turn is None else min_turn
            speaker = speaker_timeline(speaking, turn)
            thumb = _even(tile // max(count - 1, 2)) if count > 1 else 0
            width = tile
            height = tile + band + (thumb + (_band_height(thumb) if captions else 0) if count > 1 else 0)
        return cls(kind, tuple(names), speaking, tile, captions, speaker, width, height, thumb)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the video."""
        return self.width, self.height

    def boxes(self, frame: int) -> list[tuple[int, int, int]]:
        """``(x, y, side)`` of each character's tile in ``frame`` (its caption lies below it)."""
        count = len(self.names)
        if self.kind == "row":
            return [(i * self.tile, 0, self.tile) for i in range(count)]
        if self.kind == "grid":
            cols = math.ceil(math.sqrt(count))
            cell = self.tile + (_band_height(self.tile) if self.captions else 0)
            return [((i % cols) * self.tile, (i // cols) * cell, self.tile) for i in range(count)]
        assert self.speaker is not None
        main = int(self.speaker[frame])
        y = self.tile + (_band_height(self.tile) if self.captions else 0)
        x0 = (self.width - (count - 1) * self.thumb) // 2
        others = [i for i in range(count) if i != main]
        boxes = [(0, 0, self.tile)] * count
        for j, i in enumerate(others):
            boxes[i] = (x0 + j * self.thumb, y, self.thumb)
        return boxes

    def compose(self, tiles: Sequence[np.ndarray], start: int) -> np.ndarray:
        """The video frames (k, height, width, 3) uint8 of frames ``start .. start + k - 1``
        from each character's frames (k, S, S, 3), resized to their tile where S differs."""
        from .media.face import resize_square

        if len(tiles) != len(self.names):
            raise ValueError(f"compose: {len(tiles)} tile batches for {len(self.names)} characters")
        k = int(tiles[0].shape[0])
        out = np.zeros((k, self.height, self.width, 3), np.uint8)
        for j in range(k):
            t = start + j
            for i, (x, y, side) in enumerate(self.boxes(t)):
                frame = tiles[i][j]
                out[j, y:y + side, x:x + side] = frame if frame.shape[0] == side else resize_square(frame, side)
                if self.captions:
                    band = self._band(i, side, bool(self.speaking[i, t]))
                    out[j, y + side:y + side + band.shape[0], x:x + side] = band
        return out

    def _band(self, index: int, side: int, speaking: bool) -> np.ndarray:
        key = (index, side, speaking)
        if key not in self._bands:
            self._bands[key] = _caption(self.names[index], side, _band_height(side), speaking)
        return self._bands[key]


def _band_height(side: int) -> int:
    return _even(max(14, side // 8))


def _caption(name: str, width: int, height: int, speaking: bool) -> np.ndarray:
    """A caption band (height, width, 3): the name centred, on a highlighted band while speaking."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), _CAPTION_SPEAKING_BG if speaking else _CAPTION_BG)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(8, int(height * 0.62)))
    text = name
    while len(text) > 1 and draw.textlength(text, font=font) > width - 4:
        text = text[:-2] + "…"
    draw.text((width / 2, height / 2), text, fill=(255, 255, 255), font=font, anchor="mm")
    return np.asarray(image)


# ---------------------------------------------------------------------------- rendering
def conversation_frames(pipe: "FloatPipeline", conversation: Conversation, layout: Layout, *,
                        batch_size: int = 8) -> Iterator[np.ndarray]:
    """Composed video frames (k, height, width, 3) uint8, ``batch_size`` frames at a time.

    Every character is decoded by :meth:`FloatPipeline.render` (the frames ``generate`` makes
    from the same motion), one batch at a time and all in step, so only one batch per
    character exists at once.
    """
    renders = [pipe.render(c.source, c.motion, batch_size=batch_size) for c in conversation.characters]
    start = 0
    for tiles in zip(*renders):
        yield layout.compose(tiles, start)
        start += int(tiles[0].shape[0])


@dataclass
class ConversationResult:
    """What :func:`converse` made."""

    path: Path
    names: tuple[str, ...]
    speaking: np.ndarray  #: bool (N, T): row i is character i's speaking flags
    layout: str  #: the layout used
    size: tuple[int, int]  #: (width, height) of the video
    speaker: np.ndarray | None  #: int (T,): the large tile's character ("speaker" layout)
    seed: int  #: the conversation's seed
    seeds: tuple[int, ...]  #: each character's seed (:func:`character_seed`)
    num_frames: int
    seconds: float
    wall_seconds: float
    motion: tuple[Tensor, ...]  #: each character's motion latents (T, d)
    sampling: SamplingConfig
    segments: tuple[Segment, ...] = ()  #: a script's lines as placed
    voices: tuple[str, ...] = ()  #: a script's voice per character
    timings: dict[str, float] = field(default_factory=dict)
    messages: tuple[str, ...] = ()  #: notes about the portraits (e.g. several faces)

    def summary(self) -> str:
        who = ", ".join(f"{n} {s.mean():.0%}" for n, s in zip(self.names, self.speaking))
        return (f"{self.path}: {len(self.names)} characters ({self.layout}, {self.size[0]}x{self.size[1]}), "
                f"{self.num_frames} frames, {self.seconds:.2f} s in {self.wall_seconds:.1f} s; speaking: {who}")


def converse(
    pipe: "FloatPipeline", portraits: Sequence[ImageInput | SourceImage],
    speech: "Script | Sequence[TrackInput] | str | os.PathLike[str]", out_path: str | os.PathLike[str], *,
    names: Sequence[str] | str | None = None, layout: str = "row", sampling: SamplingConfig | None = None,
    progress: ProgressLike = None, voices: Mapping[str, str | None] | None = None, captions: bool = True,
    crop: bool = True, tile_size: int | None = None, gap: float = DEFAULT_GAP, batch_size: int = 8,
    max_seconds: float | None = None, **overrides: Any,
) -> ConversationResult:
    """N portraits in one video, each speaking its own speech and idling while the others talk.

    See :meth:`FloatPipeline.converse <float_core.pipeline.FloatPipeline.converse>`.
    """
    from .media.video import write_video

    tile = _check_layout(layout, pipe.config.image_size if tile_size is None else tile_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be a whole number >= 1, got {batch_size!r}")
    out = Path(out_path)
    if not out.parent.is_dir():
        raise ValueError(f"out_path: the folder {out.parent} does not exist")
    start = time.perf_counter()
    report = as_progress(progress)
    timings: dict[str, float] = {}
    conv = sample_conversation(pipe, portraits, speech, names=names, voices=voices, sampling=sampling, crop=crop,
                               gap=gap, max_seconds=max_seconds, progress=report, timings=timings, **overrides)
    plan = Layout.make(layout, conv.names, conv.speaking, tile, captions=captions)
    t0 = time.perf_counter()
    write_video(out, conversation_frames(pipe, conv, plan, batch_size=batch_size), fps=int(pipe.config.fps),
                audio=(conv.audio, SAMPLE_RATE), progress=report, total=conv.num_frames)
    timings["render"] = time.perf_counter() - t0
    messages = tuple(f"portrait {i + 1} ({c.name}): {c.source.message}"
                     for i, c in enumerate(conv.characters) if c.source.message)
    return ConversationResult(
        path=out, names=conv.names, speaking=conv.speaking, layout=layout, size=plan.size, speaker=plan.speaker,
        seed=conv.seed, seeds=tuple(c.seed for c in conv.characters), num_frames=conv.num_frames,
        seconds=conv.num_frames / pipe.config.fps, wall_seconds=time.perf_counter() - start,
        motion=tuple(c.motion for c in conv.characters), sampling=conv.sampling, segments=conv.segments,
        voices=conv.voices, timings=timings, messages=messages)
