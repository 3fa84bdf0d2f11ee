"""FloatAvatarService (float_core.integrations.pipecat) inside a real Pipecat pipeline.

Pipecat 1.14's pipeline objects: ``Pipeline`` + ``PipelineWorker`` (the former ``PipelineTask``)
run by a ``WorkerRunner`` (the former ``PipelineRunner``), all in this process, no transport and
no network. The avatar runs in real time (25 fps) on the tiny random model (chunks of 4 frames,
0.12 s look-ahead); a sink processor records what comes out.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame, Frame, InterruptionFrame, OutputImageRawFrame, SpeechOutputAudioRawFrame, TTSAudioRawFrame,
    TTSStartedFrame, TTSStoppedFrame)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from float_core.config import SamplingConfig  # noqa: E402
from float_core.integrations.pipecat import FloatAvatarService  # noqa: E402
from float_core.media.audio import load_audio  # noqa: E402
from float_core.pipeline import FloatPipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


class Sink(FrameProcessor):
    """Records every frame that reaches the end of the pipeline (and wakes up waiters)."""

    def __init__(self) -> None:
        super().__init__(name="sink")
        self.frames: list[Frame] = []
        self.changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            self.changed.set()
        await self.push_frame(frame, direction)

    async def wait_for(self, predicate, timeout: float = 60.0) -> None:
        async def poll() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(poll(), timeout)

    def pairs(self) -> list[tuple[OutputImageRawFrame, SpeechOutputAudioRawFrame]]:
        out = [f for f in self.frames if isinstance(f, (OutputImageRawFrame, SpeechOutputAudioRawFrame))]
        return list(zip(out[::2], out[1::2]))


@pytest.fixture(scope="module")
def pipe() -> FloatPipeline:
    return FloatPipeline.tiny_random()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """The example's speech as int16 PCM (speech from ~0.45 s to ~3.85 s)."""
    return np.round(load_audio(ROOT / "examples" / "arctic_a0007.wav", target_rate=RATE) * 20000).astype(np.int16)


def tts(pcm: np.ndarray) -> list[Frame]:
    """One TTS turn as a TTS service sends it: started, 20 ms audio frames, stopped."""
    chunks = [TTSAudioRawFrame(pcm[i:i + 320].tobytes(), RATE, 1) for i in range(0, pcm.size, 320)]
    return [TTSStartedFrame(), *chunks, TTSStoppedFrame()]


def speech_frames(sink: Sink) -> int:
    return sum(1 for _, a in sink.pairs() if np.frombuffer(a.audio, np.int16).any())


def test_avatar_in_a_pipeline_sends_frames_with_their_audio_and_an_interruption_cuts_the_rest(pipe, speech):
    turn1, turn2 = speech[int(0.4 * RATE):int(1.6 * RATE)], speech[int(1.6 * RATE):]
    avatar = FloatAvatarService(pipe, str(ROOT / "examples" / "portrait_astronaut.png"),
                                sampling=SamplingConfig(seed=0, nfe=2, emotion="neutral"), chunk_frames=4)
    sink = Sink()
    marks: dict[str, int] = {}

    async def scenario() -> None:
        worker = PipelineWorker(Pipeline([avatar, sink]), params=PipelineParams(), enable_rtvi=False,
                                enable_turn_tracking=False, idle_timeout_secs=None, cancel_on_idle_timeout=False)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        run = asyncio.create_task(runner.run())
        await sink.wait_for(lambda: len(sink.pairs()) >= 5)  # idle frames before anyone speaks
        marks["turn1"] = len(sink.pairs())
        await worker.queue_frames(tts(turn1))
        # The turn plays out, then idle frames follow.
        await sink.wait_for(lambda: speech_frames(sink) > 0 and len(sink.pairs()) > marks["turn1"] + 60)
        marks["turn2"] = len(sink.pairs())
        await worker.queue_frames(tts(turn2))
        await sink.wait_for(lambda: speech_frames(sink) > turn1.size // 640 + 10)  # 0.4 s into turn 2
        await worker.queue_frame(InterruptionFrame())
        await sink.wait_for(lambda: any(isinstance(f, InterruptionFrame) for f in sink.frames))
        marks["cut"] = len(sink.pairs())
        await sink.wait_for(lambda: len(sink.pairs()) >= marks["cut"] + 30)
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(run, 30)

    asyncio.run(scenario())
    pairs = sink.pairs()
    # Every image is followed by the audio of the same frame: 25 fps, consecutive, 40 ms each.
    assert all(isinstance(i, OutputImageRawFrame) and isinstance(a, SpeechOutputAudioRawFrame) for i, a in pairs)
    meta = [i.metadata["float_avatar"] for i, _ in pairs]
    assert [m["index"] for m in meta] == list(range(len(pairs)))
    assert all(a.metadata["float_avatar"] == m and i.pts == a.pts == m["index"] * 40_000_000
               for (i, a), m in zip(pairs, meta))
    assert all(i.size == (64, 64) and i.format == "RGB" and len(i.image) == 64 * 64 * 3 and i.sync_with_audio
               for i, _ in pairs)
    assert all(a.sample_rate == RATE and a.num_channels == 1 and len(a.audio) == 640 * 2 for _, a in pairs)
    # The audio out is the audio in, in order, once: turn 1 whole, silence, turn 2 up to the cut.
    # (Frames repeated because the next one was not ready on time carry silence; they are skipped.)
    audio = [np.frombuffer(a.audio, np.int16) for _, a in pairs]
    made = np.concatenate([x for x, m in zip(audio, meta) if not m["repeated"]])
    before2 = sum(1 for m in meta[:marks["turn2"]] if not m["repeated"]) * 640
    start1 = np.flatnonzero(made)[0]
    assert start1 < before2
    first1 = np.flatnonzero(turn1)[0]
    np.testing.assert_array_equal(made[start1 - first1:start1 - first1 + turn1.size], turn1)
    assert not made[start1 - first1 + turn1.size:before2].any()  # idle after the turn: silence
    said = made[before2:]
    start2 = np.flatnonzero(said)[0] - np.flatnonzero(turn2)[0]
    heard = np.trim_zeros(said[start2:], "b")
    assert 10 * 640 < heard.size < turn2.size - RATE  # the interruption cut at least a second
    np.testing.assert_array_equal(heard, turn2[:heard.size])  # a prefix of turn 2, nothing after
    # Idle frames after the turn and after the cut: silent and not speaking.
    cut = marks["cut"] + 5  # within 0.2 s of stream time of the interruption reaching the end
    assert not any(m["speaking"] for m in meta[cut:]) and not np.concatenate(audio[cut:]).any()
    spoken = [m["speaking"] for m, x in zip(meta[:marks["turn2"]], audio) if x.any()]
    assert np.mean(spoken) > 0.8  # the frames that carry the speech are marked speaking
    assert any(isinstance(f, EndFrame) for f in sink.frames)
    assert not [t for t in threading.enumerate() if t.name.startswith(("float-stream", "float-avatar"))]


def test_settings_are_checked(pipe):
    with pytest.raises(ValueError, match="unknown setting.*volume"):
        FloatAvatarService(pipe, str(ROOT / "examples" / "portrait_astronaut.png"), volume=11)
    with pytest.raises(ValueError, match="nfe"):
        FloatAvatarService(pipe, str(ROOT / "examples" / "portrait_astronaut.png"), nfe=0)


def test_importing_the_engine_does_not_import_pipecat():
    code = ("import sys, float_core, float_core.avatar, float_core.streaming, float_core.integrations\n"
            "from float_core import LiveAvatar\n"
            "assert 'pipecat' not in sys.modules, sorted(m for m in sys.modules if 'pipecat' in m)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_example_agent_answers_through_the_avatar(monkeypatch, tmp_path):
    """examples/pipecat_avatar.py end to end: Pipecat's OpenAI speech recognition, chat and speech
    services on the local stand-ins (streamed chat, raw PCM speech), the tiny model; the MP4 shows
    the portrait listening, then speaking the answer."""
    import importlib.util

    from float_core.media.video import probe_video
    from float_studio.call.stub_services import StubServices, serve_stub_services

    url, stub, stop = serve_stub_services(StubServices(answer=["I am Ava."]))
    for name in ("FLOAT_ASR_URL", "FLOAT_LLM_URL", "FLOAT_TTS_URL"):
        monkeypatch.setenv(name, url)
    monkeypatch.setenv("FLOAT_TEST_MODEL", "tiny-random")
    monkeypatch.delenv("FLOAT_LLM_MODEL", raising=False)
    spec = importlib.util.spec_from_file_location("pipecat_avatar", ROOT / "examples" / "pipecat_avatar.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "answer.mp4"
    try:
        assert example.main(["-o", str(out), "--listen", "0.5", "--nfe", "2", "--timeout", "60"]) == 0
    finally:
        stop()
    kinds = [s for s, _ in stub.requests]
    assert kinds == ["asr", "llm", "tts"], kinds
    llm, tts = stub.requests[1][1]["body"], stub.requests[2][1]["body"]
    assert llm["stream"] is True and llm["messages"][-1] == {"role": "user", "content": "What is your name?"}
    assert tts["input"] == "I am Ava." and tts["response_format"] == "pcm"
    info = probe_video(out)
    assert info["width"] == 64 and info["frames"] >= 100 and abs(info["audio_seconds"] - info["frames"] / 25) < 0.1
