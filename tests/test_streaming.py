"""Streaming engine (float_core.streaming, FloatPipeline.stream) on the tiny random model.

Every consumption runs under a deadline (``collect``), so a hang fails the test instead of
stalling the suite.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from helpers import consume

from float_core.media.audio import load_audio
from float_core.pipeline import FloatPipeline
from float_core.streaming import StreamChunk, StreamOptions

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "examples" / "portrait_astronaut.png"
SPEECH = ROOT / "examples" / "arctic_a0007.wav"
RATE = 16000


@pytest.fixture(scope="module")
def pipe() -> FloatPipeline:
    return FloatPipeline.tiny_random()


@pytest.fixture(scope="module")
def source(pipe: FloatPipeline):
    return pipe.prepare_image(str(PORTRAIT))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SPEECH, target_rate=RATE)  # 4.0 s, speech from ~0.45 s to ~3.85 s


def collect(chunks: Iterator[StreamChunk], timeout: float = 60.0, limit: int | None = None) -> list[StreamChunk]:
    """Consume a stream on a helper thread (closing it after ``limit`` chunks); fail, not hang."""
    return consume(chunks, timeout, limit, close=True)


def pieces(wave: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, wave.size, size):
        yield wave[start:start + size]


def frames_of(chunks: list[StreamChunk]) -> np.ndarray:
    return np.concatenate([c.frames for c in chunks])


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("float-stream") and t.is_alive()]


# ---------------------------------------------------------------------------- exactness
def test_file_stream_equals_offline_render(pipe: FloatPipeline, source) -> None:
    # chunk_frames is the live schedule: a path (or an array) keeps whole windows, exactly offline.
    chunks = collect(pipe.stream(source, str(SPEECH), idle=False, seed=5, nfe=3, chunk_frames=4))
    prepared = pipe.prepare(str(PORTRAIT), str(SPEECH))
    expected = np.concatenate(list(pipe.render(prepared, pipe.sample_motion(prepared, seed=5, nfe=3))))
    got = frames_of(chunks)
    assert got.shape == expected.shape == (prepared.num_frames, 64, 64, 3)
    np.testing.assert_array_equal(got, expected)
    assert [c.start_frame for c in chunks] == list(range(0, prepared.num_frames, 8))
    assert all(c.speaking.all() for c in chunks)  # idle off: every frame is driven by its audio


def test_array_stream_equals_file_stream_and_seed_matters(pipe: FloatPipeline, source, speech) -> None:
    a = frames_of(collect(pipe.stream(source, speech, idle=False, seed=5, nfe=2)))
    b = frames_of(collect(pipe.stream(source, str(SPEECH), idle=False, seed=5, nfe=2)))
    c = frames_of(collect(pipe.stream(source, speech, idle=False, seed=6, nfe=2)))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 0.5  # another seed, other motion


@pytest.mark.parametrize("samples", [RATE + 123, 2 * RATE, 9999])
@pytest.mark.parametrize("live, chunk_frames", [(False, None), (True, None), (True, 3)])
def test_frame_count_and_audio_preserved(pipe: FloatPipeline, source, speech, samples: int, live: bool,
                                         chunk_frames: int | None) -> None:
    wave = speech[RATE // 2:RATE // 2 + samples]
    audio: Any = pieces(wave, 1000) if live else wave
    chunks = collect(pipe.stream(source, audio, nfe=1, seed=0, chunk_frames=chunk_frames))
    frames = math.ceil(samples * 25 / RATE)
    assert sum(c.num_frames for c in chunks) == frames
    assert [c.start_frame for c in chunks] == list(np.cumsum([0] + [c.num_frames for c in chunks[:-1]]))
    for c in chunks:
        assert c.frames.dtype == np.uint8 and c.frames.shape[1:] == (64, 64, 3)
        assert c.audio.dtype == np.float32 and c.audio.shape == (c.num_frames * 640,)
        assert c.speaking.dtype == bool and c.speaking.shape == (c.num_frames,)
    audio_out = np.concatenate([c.audio for c in chunks])
    np.testing.assert_array_equal(audio_out[:samples], wave)
    assert not audio_out[samples:].any()  # the last chunk is zero-padded


@pytest.mark.parametrize("chunk_frames", [None, 4])
def test_live_chunking_invariance(pipe: FloatPipeline, source, speech, chunk_frames: int | None) -> None:
    wave = speech[:int(2.5 * RATE)]
    options = dict(seed=2, nfe=2, lookahead_seconds=1.0 if chunk_frames is None else 0.12, stall_timeout=None,
                   chunk_frames=chunk_frames)
    one_second = collect(pipe.stream(source, pieces(wave, RATE), **options))
    ms37 = collect(pipe.stream(source, pieces(wave, 592), **options))
    np.testing.assert_array_equal(frames_of(one_second), frames_of(ms37))
    np.testing.assert_array_equal(np.concatenate([c.speaking for c in one_second]),
                                  np.concatenate([c.speaking for c in ms37]))
    # Live features see a bounded span, so they differ from the whole clip's (measured in
    # benchmarks/streaming.py), but the stream is still the same length and seeded.
    assert frames_of(one_second).shape[0] == math.ceil(wave.size * 25 / RATE)


def test_live_with_full_look_ahead_equals_the_file_path(pipe: FloatPipeline, source, speech) -> None:
    """Spans covering the whole clip make the live features the whole-clip ones, so the
    live loop (WindowSampler.step per window) and the offline one give the same frames."""
    from float_core.streaming import live_audio_features, live_schedule

    wave = speech[:int(2.2 * RATE)]
    full = dict(context_seconds=60.0, lookahead_seconds=60.0)
    np.testing.assert_array_equal(live_audio_features(pipe, wave, **full).numpy(),
                                  pipe.prepare_audio(wave).audio_features.numpy())
    # batch_size = L: a live stream flushes its decode batch at every window end, and the
    # decoder's float rounding depends on the batch (1-level differences in a few pixels).
    common = dict(seed=3, nfe=2, emotion="neutral", idle=False, batch_size=pipe.model.fmt.num_frames)
    live = collect(pipe.stream(source, pieces(wave, 592), **common, **full))
    offline = collect(pipe.stream(source, wave, **common))
    np.testing.assert_array_equal(frames_of(live), frames_of(offline))
    # Chunks of 4 frames: the same as sampling the whole clip's features with that schedule
    # (one code path: WindowSampler.step per pass, with the same noise per frame).
    chunked = dict(common, batch_size=4, chunk_frames=4)
    live = collect(pipe.stream(source, pieces(wave, 592), **chunked, **full))
    prepared = pipe.prepare(str(PORTRAIT), wave)
    schedule = live_schedule(pipe, StreamOptions(chunk_frames=4, **full))
    motion = pipe.sample_motion(prepared, seed=3, nfe=2, emotion="neutral", chunk=schedule)
    np.testing.assert_array_equal(frames_of(live), np.concatenate(list(pipe.render(prepared, motion, batch_size=4))))
    # A bounded span changes the features (by how much: benchmarks/streaming.py --features).
    bounded = live_audio_features(pipe, wave, context_seconds=0.4, lookahead_seconds=0.0)
    assert (bounded - pipe.prepare_audio(wave).audio_features).abs().max() > 1e-3


# ---------------------------------------------------------------------------- streaming
def test_first_chunk_before_real_time_input_ends(pipe: FloatPipeline, source, speech) -> None:
    wave = speech[:3 * RATE]
    state = {"exhausted": False}

    def paced() -> Iterator[np.ndarray]:
        t0 = time.perf_counter()
        for i, block in enumerate(pieces(wave, 1600)):  # 100 ms blocks, at real time
            time.sleep(max(0.0, t0 + i * 0.1 - time.perf_counter()))
            yield block
        state["exhausted"] = True

    first: list[bool] = []
    chunks = pipe.stream(source, paced(), nfe=1, seed=0, idle=False)
    out = []
    for chunk in chunks:
        if not out:
            first.append(state["exhausted"])
        out.append(chunk)
    assert first == [False], "the first chunk waited for the whole input"
    assert out[0].latency < 3.0 and out[0].elapsed < 3.0
    assert sum(c.num_frames for c in out) == 75


def test_speaking_flags_and_idle_frames(pipe: FloatPipeline, source, speech) -> None:
    silence = 2 * RATE
    wave = np.concatenate([np.zeros(silence, np.float32), speech[int(0.5 * RATE):int(3.5 * RATE)]])
    for audio in (wave, pieces(wave, 3000)):
        chunks = collect(pipe.stream(source, audio, seed=1, nfe=2, emotion="neutral"))
        flags = np.concatenate([c.speaking for c in chunks])
        assert not flags[:50].any(), "digital silence was marked as speech"
        assert flags[60:120].mean() > 0.9, "speech was not marked as speech"
        idle = frames_of(chunks)[:50].astype(np.int16)
        # Idle frames move (the null-audio prior: blinks, head motion), they are not a still.
        assert np.abs(np.diff(idle, axis=0)).mean() > 0.5


def test_chunked_live_frames_respond_at_a_speech_onset(pipe: FloatPipeline, source, speech) -> None:
    """Chunks of 4 frames: the frames right after a speech onset differ from the same stream with
    the speech replaced by silence, and no frame before the onset's chunk does."""
    lead = np.zeros(RATE, np.float32)  # 25 frames of silence, then speech
    talk = speech[int(0.5 * RATE):int(2.0 * RATE)]
    runs = []
    for tail in (talk, np.zeros_like(talk)):
        chunks = collect(pipe.stream(source, pieces(np.concatenate([lead, tail]), 640), seed=1, nfe=2,
                                     emotion="neutral", chunk_frames=4, lookahead_seconds=0.12, batch_size=4))
        runs.append(frames_of(chunks).astype(np.int16))
    diff = np.abs(runs[0] - runs[1]).reshape(len(runs[0]), -1).mean(axis=1)
    assert not diff[:24].any()  # the chunks before the onset's (frames 24-27) saw only silence
    assert diff[25:30].max() > 1.0, f"no response within 0.2 s of the onset: {diff[24:32]}"


def test_silence_uses_the_null_audio_condition(pipe: FloatPipeline, source, speech) -> None:
    """Noise in a silent span changes nothing: its frames are driven by zeroed audio features."""
    quiet = np.zeros(int(1.2 * RATE), np.float32)
    noisy = (np.random.default_rng(0).standard_normal(quiet.size) * 0.02).astype(np.float32)
    tail = speech[RATE:2 * RATE]
    runs = []
    for lead in (quiet, noisy):
        wave = np.concatenate([lead, tail])
        chunks = collect(pipe.stream(source, pieces(wave, 2000), seed=4, nfe=2, emotion="neutral"))
        runs.append(chunks)
    flags = [np.concatenate([c.speaking for c in chunks]) for chunks in runs]
    assert not flags[0][:25].any() and not flags[1][:25].any()
    # Window 0 (10 frames) lies wholly in the silent span: identical frames for both leads.
    np.testing.assert_array_equal(frames_of(runs[0])[:10], frames_of(runs[1])[:10])
    # With idle off the noise drives the mouth, so the frames differ.
    off = [frames_of(collect(pipe.stream(source, pieces(np.concatenate([lead, tail]), 2000), seed=4, nfe=2,
                                         emotion="neutral", idle=False)))[:10] for lead in (quiet, noisy)]
    assert np.abs(off[0].astype(int) - off[1]).max() > 0


def test_stalled_source_keeps_idle_frames_flowing(pipe: FloatPipeline, source, speech) -> None:
    def stalling() -> Iterator[Any]:
        yield speech[:RATE // 2]
        t_end = time.perf_counter() + 2.5
        while time.perf_counter() < t_end:  # nothing to say for 2.5 s: keep-alives only
            time.sleep(0.05)
            yield None
        yield speech[RATE // 2:RATE]

    chunks = collect(pipe.stream(source, stalling(), seed=0, nfe=1, stall_timeout=0.3), timeout=90)
    frames = sum(c.num_frames for c in chunks)
    assert frames >= 25 + 40  # 1 s of speech plus well over a second of inserted idle frames
    flags = np.concatenate([c.speaking for c in chunks])
    audio = np.concatenate([c.audio for c in chunks])
    assert not flags[25:40].any()  # the stall is idle (after the 300 ms hangover of the speech)
    np.testing.assert_array_equal(audio[:RATE // 2], speech[:RATE // 2])  # what arrived is kept, in order
    rest = audio[RATE // 2:]
    start = np.flatnonzero(rest)[0]
    np.testing.assert_array_equal(rest[start:start + RATE // 2], speech[RATE // 2:RATE])


# ---------------------------------------------------------------------------- stopping
@pytest.mark.parametrize("live", [False, True])
def test_closing_the_generator_stops_the_workers(pipe: FloatPipeline, source, speech, live: bool) -> None:
    def endless() -> Iterator[np.ndarray]:
        while True:
            yield np.zeros(640, np.float32)

    audio: Any = endless() if live else np.tile(speech, 4)
    gen = pipe.stream(source, audio, nfe=1, seed=0)
    got = collect(gen, limit=2)
    assert len(got) == 2
    deadline = time.monotonic() + 5
    while stream_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream_threads() == []


def test_close_from_another_thread_ends_a_waiting_consumer(pipe: FloatPipeline, source) -> None:
    def silent_source() -> Iterator[Any]:
        while True:  # keep-alives only: the consumer waits on idle frames made from the clock
            time.sleep(0.02)
            yield None

    stream = pipe.stream(source, silent_source(), nfe=1, seed=0, stall_timeout=0.2)
    got: list[StreamChunk] = []
    consumer = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    consumer.start()
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got and not got[0].speaking.any()  # idle frames while the source says nothing
    stream.close()
    consumer.join(10)
    assert not consumer.is_alive() and stream.closed
    assert [t for t in stream_threads() if not t.name.endswith("reader")] == []
    # The reader ends at the source's next keep-alive (it cannot be woken inside next()).
    deadline = time.monotonic() + 5
    while stream_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream_threads() == []


def test_abandoning_a_stream_before_it_starts_makes_no_thread(pipe: FloatPipeline, source, speech) -> None:
    gen = pipe.stream(source, speech)
    del gen
    assert stream_threads() == []


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, message", [
    (np.array([0.0, np.nan] * 400, np.float32), "NaN"),
    ((np.ones(800) * 1000).astype(np.int16), "int16"),
    (np.zeros((800, 2), np.float32), "mono"),
    ("not audio", "numpy array"),
])
def test_bad_live_chunks_are_clear_errors(pipe: FloatPipeline, source, bad: Any, message: str) -> None:
    def source_iter() -> Iterator[Any]:
        yield np.zeros(8000, np.float32)
        yield bad

    with pytest.raises(ValueError, match=message) as info:
        collect(pipe.stream(source, source_iter(), nfe=1), timeout=30)
    assert "chunk 1" in str(info.value)


def test_a_failing_source_is_reported(pipe: FloatPipeline, source) -> None:
    def broken() -> Iterator[np.ndarray]:
        yield np.zeros(8000, np.float32)
        raise ConnectionError("peer went away")

    with pytest.raises(RuntimeError, match="live source raised ConnectionError.*peer went away"):
        collect(pipe.stream(source, broken(), nfe=1), timeout=30)


def test_empty_source_and_bad_arguments(pipe: FloatPipeline, source) -> None:
    with pytest.raises(ValueError, match="ended before sending any samples"):
        collect(pipe.stream(source, iter([np.zeros(0, np.float32)]), nfe=1), timeout=30)
    with pytest.raises(ValueError, match="raw bytes"):
        pipe.stream(source, b"\x00\x01")
    with pytest.raises(ValueError, match="emotion"):
        pipe.stream(source, np.zeros(RATE, np.float32), emotion="bored")
    with pytest.raises(ValueError, match="NaN"):
        pipe.stream(source, np.full(RATE, np.nan, np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        pipe.stream(source, np.zeros(RATE, np.float32), batch_size=0)
    with pytest.raises(TypeError):
        pipe.stream(source, np.zeros(RATE, np.float32), lookahead=1.0)  # misspelt option


def test_other_sample_rates_are_resampled(pipe: FloatPipeline, source, speech) -> None:
    at8k = speech[::2][:8000]  # 1 s at 8 kHz
    chunks = collect(pipe.stream(source, ((block, 8000) for block in pieces(at8k, 777)), nfe=1, seed=0))
    assert abs(sum(c.num_frames for c in chunks) - 25) <= 1


def test_stream_options_are_validated() -> None:
    with pytest.raises(ValueError, match="stall_timeout"):
        StreamOptions(stall_timeout=0)
    with pytest.raises(ValueError, match="lookahead_seconds"):
        StreamOptions(lookahead_seconds=-1)
