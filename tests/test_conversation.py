"""float_core.conversation: several portraits in one video (tiny random model, the example photos).

Script placement and the layouts are checked against hand-computed values; the sampled
characters against the engine's one-portrait path (`generate(idle=True)`) bit for bit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from float_core.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from float_core.conversation import (BLANK_LINE_PAUSE, DEFAULT_VOICES, Layout, Pause, Script, ScriptError,
                                     ScriptLine, character_seed, conversation_frames, load_tracks, mix_tracks,
                                     sample_conversation, speaker_timeline)
from float_core.media.audio import load_audio
from float_core.media.video import probe_video
from float_core.pipeline import FloatPipeline
from float_core.vad import detect_speech
from helpers import one_torch_thread

ROOT = Path(__file__).resolve().parents[1]
PORTRAITS = [ROOT / "examples" / "portrait_astronaut.png", ROOT / "examples" / "portrait_grace_hopper.jpg"]
FAST = dict(nfe=2)
TILE = 64  # the tiny model's frame size


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def pipe() -> FloatPipeline:
    return FloatPipeline.tiny_random()


@pytest.fixture(scope="module")
def sources(pipe):
    return [pipe.prepare_image(p) for p in PORTRAITS]


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """1.6 s of speech (40 frames) and another voice's 1.6 s, 16 kHz."""
    a = load_audio(ROOT / "examples" / "arctic_a0007.wav")[:25600]
    b = load_audio(ROOT / "examples" / "espeak_en-gb_m3.wav")[:25600]
    return {"a": a, "b": b, "silence": np.zeros_like(a)}


@pytest.fixture(scope="module")
def listening(pipe, sources, speech):
    """Character 0 speaks; character 1 listens (an all-silent track); seed 3."""
    return sample_conversation(pipe, sources, [speech["a"], speech["silence"]], names=["Ana", "Ben"],
                               seed=3, **FAST)


def _tiles(pipe, conv) -> np.ndarray:
    layout = Layout.make("row", conv.names, conv.speaking, TILE, captions=False)
    return np.concatenate(list(conversation_frames(pipe, conv, layout, batch_size=8)))


# ---------------------------------------------------------------------------- script
def test_script_parse_reads_lines_pauses_and_comments() -> None:
    script = Script.parse("\n# a comment\nAna: Hello, Ben: how are you?\n\nben: Fine.\n[Pause 1.5]\nAna: Good.\n\n")
    assert script.items == (ScriptLine("Ana", "Hello, Ben: how are you?", 2), Pause(BLANK_LINE_PAUSE, 3),
                            ScriptLine("ben", "Fine.", 4), Pause(1.5, 5), ScriptLine("Ana", "Good.", 6))
    assert script.speakers == ("Ana", "ben")


@pytest.mark.parametrize("text, message", [
    ("Ana: Hi.\nHello there\n", r"script line 2: no speaker in 'Hello there'.*'Name: what they say'"),
    ("Ana: Hi.\n: nobody", "script line 2: no speaker"),
    ("Ana:   \n", "script line 1: Ana has nothing to say"),
    ("Ana: Hi.\n[pause soon]", r"script line 2: \[pause soon\] needs seconds"),
    ("\n\n[pause 2]\n# only a comment\n", "no spoken lines"),
    ("", "no spoken lines"),
])
def test_script_errors_name_the_line(text, message) -> None:
    with pytest.raises(ScriptError, match=message):
        Script.parse(text)


def _fake_voice(text: str, voice: str) -> np.ndarray:
    """A stand-in voice: 100 samples per character of the text, valued by the voice."""
    return np.full(100 * len(text), 0.1 * (1 + DEFAULT_VOICES.index(voice) if voice in DEFAULT_VOICES else 0.5),
                   np.float32)


def test_script_places_lines_in_order_with_gaps_and_pauses() -> None:
    script = Script.parse("[pause 0.1]\nAna: Hello.\nBen: Hi!\n\nAna: Bye now.\n[pause 0.2]")
    placed = script.place(["ana", "Ben", "Cy"], gap=0.25, synthesize=_fake_voice)
    assert placed.names == ("ana", "Ben", "Cy") and placed.voices == DEFAULT_VOICES[:3]
    gap, blank = 4000, int(BLANK_LINE_PAUSE * SAMPLE_RATE)
    starts = [1600, 1600 + 600 + gap, 1600 + 600 + gap + 300 + blank + gap]
    assert [(s.character, s.text, s.start, s.end) for s in placed.segments] == [
        (0, "Hello.", starts[0], starts[0] + 600), (1, "Hi!", starts[1], starts[1] + 300),
        (0, "Bye now.", starts[2], starts[2] + 800)]
    assert placed.tracks.shape == (3, starts[2] + 800 + 3200) and placed.tracks.dtype == np.float32
    expected = np.zeros_like(placed.tracks)
    for seg in placed.segments:
        expected[seg.character, seg.start:seg.end] = 0.1 * (1 + seg.character)
    np.testing.assert_array_equal(placed.tracks, expected)  # each line on its speaker's track only
    assert not placed.tracks[2].any()  # Cy never speaks


def test_script_cast_checks_speakers_and_voices_first() -> None:
    script = Script.parse("Ana: Hi.\nBen: Hello.")
    spoken = []
    with pytest.raises(ScriptError, match=r"script line 2: unknown speaker 'Ben'; the characters are Ana, Cy"):
        script.place(["Ana", "Cy"], synthesize=lambda t, v: spoken.append(t) or _fake_voice(t, v))
    assert spoken == []  # nothing was spoken before the error
    with pytest.raises(ScriptError, match="voices: no character named 'Dee'"):
        script.cast(None, {"Dee": "espeak:en-us"})
    with pytest.raises(ValueError, match=r"voice 'nonsense'.*expected 'espeak:<voice>'"):
        script.cast(None, {"Ben": "nonsense"})
    with pytest.raises(ScriptError, match="'ana' is given twice"):
        script.cast(["Ana", "ana"])


# ---------------------------------------------------------------------------- pure parts
def test_speaker_layout_switches_with_hysteresis() -> None:
    flags = np.zeros((3, 60), bool)
    flags[0, 5:20] = True   # Ana's turn
    flags[1, 24:27] = True  # Ben coughs (3 frames): no cut
    flags[1, 30:45] = True  # Ben's turn
    flags[0, 40:50] = True  # Ana starts while Ben still talks: she gets it when he stops
    flags[2, 52:54] = True  # Cy's "mm": no cut
    expected = np.array([0] * 30 + [1] * 15 + [0] * 15)
    np.testing.assert_array_equal(speaker_timeline(flags, min_turn=5), expected)
    assert not speaker_timeline(np.zeros((2, 8), bool), 5).any()  # nobody speaks: character 0
    second = np.zeros((2, 20), bool)
    second[1, 10:20] = True  # only character 1 ever takes a turn: it has the tile from the start
    assert (speaker_timeline(second, 5) == 1).all()


def test_layout_geometry_and_composition() -> None:
    speaking = np.zeros((3, 4), bool)
    speaking[2, 1:] = True
    row = Layout.make("row", ["A", "B", "C"], speaking, 32, captions=False)
    assert row.size == (96, 32) and row.boxes(0) == [(0, 0, 32), (32, 0, 32), (64, 0, 32)]
    grid = Layout.make("grid", ["A", "B", "C"], speaking, 32, captions=True)
    assert grid.size == (64, 2 * (32 + 14)) and grid.boxes(0) == [(0, 0, 32), (32, 0, 32), (0, 46, 32)]
    speaker = Layout.make("speaker", ["A", "B", "C"], speaking, 32, captions=False, min_turn=2)
    assert speaker.size == (32, 32 + 16) and speaker.thumb == 16
    assert speaker.boxes(0)[2] == (0, 0, 32) and speaker.boxes(0)[:2] == [(0, 32, 16), (16, 32, 16)]
    tiles = [np.full((4, 64, 64, 3), 50 * (i + 1), np.uint8) for i in range(3)]
    out = row.compose(tiles, 0)
    assert out.shape == (4, 32, 96, 3)
    for i in range(3):  # each tile lands in its box (resized from the model's 64 px to 32)
        assert (out[:, :, 32 * i:32 * (i + 1)] == 50 * (i + 1)).all()
    lit = grid.compose(tiles, 0)
    band = lit[:, 32 + 46:, 0:32]  # C's caption under the second row: lit from frame 1 on
    assert (band[0] == band[0, 0, 0]).mean() < 1 and not np.array_equal(band[0], band[1])
    with pytest.raises(ValueError, match="layout: expected one of row, grid, speaker"):
        Layout.make("mosaic", ["A"], np.zeros((1, 1), bool), 32)
    with pytest.raises(ValueError, match="tile size: must be an even number"):
        Layout.make("row", ["A"], np.zeros((1, 1), bool), 33)


def test_mix_is_the_sum_and_never_clips() -> None:
    tracks = np.array([[0.1, 0.2, 0.0], [0.3, 0.0, -0.2]], np.float32)
    np.testing.assert_allclose(mix_tracks(tracks), [0.4, 0.2, -0.2], rtol=1e-6)
    loud = np.array([[0.8, -0.9], [0.8, 0.1]], np.float32)
    np.testing.assert_allclose(mix_tracks(loud), [1.0, -0.5], rtol=1e-6)  # peak 1.6 scaled to 1


def test_tracks_are_padded_split_and_counted(tmp_path, speech) -> None:
    tracks = load_tracks([speech["a"][:1000], None, speech["b"][:640]], 3)
    assert tracks.shape == (3, 1000)
    np.testing.assert_array_equal(tracks[0], speech["a"][:1000])
    assert not tracks[1].any() and not tracks[2, 640:].any()
    stereo = np.stack([speech["a"], speech["b"]], axis=1)
    sf.write(tmp_path / "two.wav", stereo, SAMPLE_RATE, subtype="FLOAT")
    split = load_tracks(str(tmp_path / "two.wav"), 2)  # a multi-channel file: channel i is character i
    np.testing.assert_array_equal(split, stereo.T)
    with pytest.raises(ValueError, match=r"two.wav has 2 channel\(s\) but there are 3 portraits"):
        load_tracks(str(tmp_path / "two.wav"), 3)
    with pytest.raises(ValueError, match="speech: 2 portraits but 3 speech tracks; give one track per portrait"):
        load_tracks([speech["a"]] * 3, 2)
    with pytest.raises(ValueError, match="every track is None"):
        load_tracks([None, None], 2)


def test_character_seeds_depend_on_the_seed_and_index_only() -> None:
    seeds = [character_seed(7, i) for i in range(4)]
    assert len(set(seeds)) == 4 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [character_seed(7, i) for i in range(4)] and character_seed(8, 0) != seeds[0]


# ---------------------------------------------------------------------------- sampled characters
def test_a_tile_does_not_depend_on_the_others_track(pipe, sources, speech, listening) -> None:
    other = sample_conversation(pipe, sources, [speech["a"], speech["b"]], names=["Ana", "Ben"], seed=3, **FAST)
    assert other.characters[0].seed == listening.characters[0].seed
    assert torch.equal(other.characters[0].motion, listening.characters[0].motion)
    a, b = _tiles(pipe, listening), _tiles(pipe, other)
    assert a.shape == (40, TILE, 2 * TILE, 3)
    np.testing.assert_array_equal(a[:, :, :TILE], b[:, :, :TILE])  # Ana's tile: the same pixels
    assert not np.array_equal(a[:, :, TILE:], b[:, :, TILE:])  # Ben's changed with his track


def test_a_silent_character_equals_generate_of_silence_in_idle_mode(pipe, sources, speech, listening,
                                                                    tmp_path) -> None:
    ben = listening.characters[1]
    assert ben.seed == character_seed(3, 1) and not ben.speaking.any()
    result = pipe.generate(PORTRAITS[1], speech["silence"], tmp_path / "ben.mp4", idle=True, seed=ben.seed,
                           progress=False, **FAST)
    assert torch.equal(result.motion, ben.motion) and not result.speaking.any()
    alone = np.concatenate(list(pipe.render(sources[1], result.motion)))
    np.testing.assert_array_equal(_tiles(pipe, listening)[:, :, TILE:], alone)


def test_generate_in_idle_mode_is_the_streams_silence_mode(pipe, sources, speech, tmp_path) -> None:
    wave = np.concatenate([speech["a"][:16000], np.zeros(9600, np.float32)])  # speech, then silence
    result = pipe.generate(PORTRAITS[0], wave, tmp_path / "idle.mp4", idle=True, seed=6, progress=False, **FAST)
    chunks = list(pipe.stream(sources[0], wave, idle=True, seed=6, **FAST))
    np.testing.assert_array_equal(np.concatenate([c.speaking for c in chunks]), result.speaking)
    assert result.speaking[:20].any() and not result.speaking[-5:].any()
    np.testing.assert_array_equal(np.concatenate([c.frames for c in chunks]),
                                  np.concatenate(list(pipe.render(sources[0], result.motion))))


def test_speaking_flags_follow_each_tracks_voice_activity(listening, speech) -> None:
    np.testing.assert_array_equal(listening.speaking[0], detect_speech(speech["a"]))
    assert listening.speaking[0].mean() > 0.5 and not listening.speaking[1].any()
    assert listening.speaking.shape == (2, 40)


def test_converse_writes_the_longest_track_with_the_mixed_sound(pipe, sources, speech, tmp_path) -> None:
    tracks = [speech["a"], speech["b"][:16000]]  # 1.6 s and 1.0 s
    out = tmp_path / "talk.mp4"
    result = pipe.converse(sources, tracks, out, names="Ana,Ben", layout="speaker", seed=5, **FAST)
    frames = -(-speech["a"].size // SAMPLES_PER_FRAME)
    assert result.num_frames == frames and result.speaking.shape == (2, frames)
    assert result.layout == "speaker" and result.speaker.shape == (frames,) and result.size == (TILE, 124)
    info = probe_video(out)
    assert info["frames"] == frames and (info["width"], info["height"]) == result.size
    heard = load_audio(out)[:speech["a"].size]
    mix = mix_tracks(load_tracks(tracks, 2))

    def snr(reference: np.ndarray) -> float:
        return float(10 * np.log10((reference ** 2).sum() / ((heard - reference) ** 2).sum()))

    assert snr(mix) > 25  # AAC at 128 kb/s: ~38 dB measured
    assert snr(load_tracks(tracks, 2)[0]) < 10  # not just one of the tracks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]


def test_everyone_idles_when_every_track_is_silent(pipe, sources, speech, tmp_path) -> None:
    out = tmp_path / "quiet.mp4"
    result = pipe.converse(sources, [speech["silence"][:8000]] * 2, out, layout="grid", seed=1, **FAST)
    assert not result.speaking.any() and result.num_frames == 13 and probe_video(out)["frames"] == 13


def test_bad_inputs_are_clear_errors_and_write_nothing(pipe, sources, speech, tmp_path) -> None:
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="2 portraits but 3 speech tracks"):
        pipe.converse(sources, [speech["a"]] * 3, out, **FAST)
    no_face = np.full((200, 200, 3), 128, np.uint8)
    with pytest.raises(ValueError, match=r"portrait 2 \(Ben\): .*no face"):
        pipe.converse([PORTRAITS[0], no_face], [speech["a"]] * 2, out, names=["Ana", "Ben"], **FAST)
    with pytest.raises(ScriptError, match="the script has 1 speaker"):
        pipe.converse(sources, Script.parse("Ana: Hi."), out, **FAST)
    with pytest.raises(ValueError, match="layout: expected one of"):
        pipe.converse(sources, [speech["a"]] * 2, out, layout="mosaic")
    with pytest.raises(ValueError, match="does not exist"):
        pipe.converse(sources, [speech["a"]] * 2, tmp_path / "missing" / "x.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_a_spoken_script_puts_each_line_on_its_speakers_track(pipe, sources, tmp_path) -> None:
    script = Script.parse("Ana: Hello Ben.\nBen: Hello Ana, welcome.")
    result = pipe.converse(sources, script, tmp_path / "script.mp4", layout="speaker", seed=2,
                           voices={"Ben": "espeak:en-gb+m3"}, **FAST)
    assert result.names == ("Ana", "Ben") and result.voices == ("espeak:en-us+f3", "espeak:en-gb+m3")
    ana, ben = result.segments
    assert ana.start == 0 and ben.start == ana.end + int(0.3 * SAMPLE_RATE)
    assert result.num_frames == -(-ben.end // SAMPLES_PER_FRAME)
    in_ana = slice(ana.start // SAMPLES_PER_FRAME + 3, ana.end // SAMPLES_PER_FRAME - 3)
    in_ben = slice(ben.start // SAMPLES_PER_FRAME + 3, ben.end // SAMPLES_PER_FRAME - 3)
    assert result.speaking[0, in_ana].all() and not result.speaking[1, in_ana].any()
    assert result.speaking[1, in_ben].all() and not result.speaking[0, in_ben].any()
    assert (result.speaker[in_ana] == 0).all() and (result.speaker[in_ben] == 1).all()
