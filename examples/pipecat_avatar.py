"""A talking portrait as the face of a Pipecat voice agent: speech recognition -> chat -> speech ->
FLOAT, on OpenAI-compatible services (optional extra ``[agents]``: ``pip install "float-studio[agents]"``).

The services are the ones the Call tab's assistant mode uses (``FLOAT_ASR_URL``,
``FLOAT_LLM_URL``, ``FLOAT_TTS_URL``, ``FLOAT_API_KEY``, ``FLOAT_ASR_MODEL``,
``FLOAT_LLM_MODEL``, ``FLOAT_TTS_MODEL``, ``FLOAT_TTS_VOICE``; docs/call.md): local servers
such as faster-whisper-server, llama.cpp or Ollama, and Kokoro-FastAPI, or the stand-ins of
``float_studio.call.stub_services``. The pipeline is Pipecat's own::

    user audio -> OpenAISTTService -> user aggregator (Silero VAD) -> OpenAILLMService
        -> OpenAITTSService -> FloatAvatarService -> output -> assistant aggregator

Here the user is a recorded question played in real time and the output is an MP4 file of the
portrait listening, then answering (the avatar's images and audio as an output transport would
send them); in an app, put a transport's ``input()`` and ``output()`` there instead (its output
with ``video_out_enabled=True``, the frame size and ``video_out_framerate=25``). Try it with the
stand-in services and the tiny random model::

    python -m float_studio.call.stub_services --port 8808 &
    export FLOAT_ASR_URL=http://127.0.0.1:8808/v1 FLOAT_LLM_URL=http://127.0.0.1:8808/v1 \\
           FLOAT_TTS_URL=http://127.0.0.1:8808/v1 FLOAT_TEST_MODEL=tiny-random
    python examples/pipecat_avatar.py --question examples/arctic_a0007.wav -o answer.mp4
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipecat.frames.frames import (  # noqa: E402
    EndFrame, Frame, InputAudioRawFrame, OutputImageRawFrame, SpeechOutputAudioRawFrame)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from float_core import FloatPipeline  # noqa: E402
from float_core.config import FPS, SAMPLE_RATE  # noqa: E402
from float_core.integrations.pipecat import FloatAvatarService  # noqa: E402
from float_core.media.audio import load_audio, pcm16  # noqa: E402
from float_core.media.video import VideoWriter  # noqa: E402
from float_studio import services  # noqa: E402

SYSTEM_PROMPT = "You are Ava, a friendly talking portrait. Answer in one or two short, spoken sentences."


class Recorder(FrameProcessor):
    """Writes the avatar's frames and their audio to an MP4."""

    def __init__(self, writer: VideoWriter) -> None:
        super().__init__(name="recorder")
        self.writer = writer
        self.image: np.ndarray | None = None
        self.frames = self.speaking = 0
        self.last_speech: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            width, height = frame.size
            self.image = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
        elif isinstance(frame, SpeechOutputAudioRawFrame) and self.image is not None:
            audio = np.frombuffer(frame.audio, "<i2").astype(np.float32) / 32768.0
            self.writer.write(self.image[None], audio=audio)  # the image with the audio it was made from
            self.frames += 1
            if frame.metadata["float_avatar"]["speaking"]:
                self.speaking += 1
                self.last_speech = time.monotonic()
        await self.push_frame(frame, direction)


def build_services(cfg: services.ServiceConfig) -> tuple[list[FrameProcessor], Any]:
    """Pipecat's OpenAI services on the configured servers, the context aggregators, the context."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (LLMContextAggregatorPair,
                                                                       LLMUserAggregatorParams)
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.openai.stt import OpenAISTTService
    from pipecat.services.openai.tts import OpenAITTSService
    from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    key = cfg.api_key or "none"  # local servers take any key; the OpenAI client insists on one
    stt = OpenAISTTService(api_key=key, base_url=cfg.asr_url, settings=OpenAISTTService.Settings(model=cfg.asr_model))
    llm = OpenAILLMService(api_key=key, base_url=cfg.llm_url,
                           settings=OpenAILLMService.Settings(model=services.chat_model(cfg),
                                                              system_instruction=SYSTEM_PROMPT))
    tts = OpenAITTSService(api_key=key, base_url=cfg.tts_url,
                           settings=OpenAITTSService.Settings(model=cfg.tts_model, voice=cfg.tts_voice))
    turns = UserTurnStrategies(stop=[SpeechTimeoutUserTurnStopStrategy()])  # no turn model to download
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(
        vad_analyzer=SileroVADAnalyzer(), user_turn_strategies=turns))
    return [stt, aggregators.user(), llm, tts, aggregators.assistant()], context


async def converse(pipe: FloatPipeline, args: argparse.Namespace, cfg: services.ServiceConfig) -> Recorder:
    (stt, user, llm, tts, assistant), context = build_services(cfg)
    avatar = FloatAvatarService(pipe, args.portrait, nfe=args.nfe, seed=0)
    with VideoWriter(args.output, fps=FPS, audio_rate=SAMPLE_RATE) as writer:
        recorder = Recorder(writer)
        worker = PipelineWorker(Pipeline([stt, user, llm, tts, avatar, recorder, assistant]),
                                params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE), idle_timeout_secs=None)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        run = asyncio.create_task(runner.run())
        # The user speaks: the question in real time (20 ms packets), then silence.
        question = np.concatenate([load_audio(args.question), np.zeros(int(args.listen * SAMPLE_RATE), np.float32)])
        t0 = time.monotonic()
        for i, start in enumerate(range(0, question.size, 320)):
            await worker.queue_frame(InputAudioRawFrame(pcm16(question[start:start + 320]), SAMPLE_RATE, 1))
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - time.monotonic()))
        # Wait for the answer to be spoken (then a second of idle frames), or give up.
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not (
                recorder.last_speech is not None and time.monotonic() - recorder.last_speech > 1.0):
            await asyncio.sleep(0.1)
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(run, 60)
    for message in context.get_messages():
        print(f"{message.get('role')}: {message.get('content')}")
    return recorder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--portrait", default=str(ROOT / "examples" / "portrait_astronaut.png"))
    parser.add_argument("--question", default=str(ROOT / "examples" / "arctic_a0007.wav"),
                        help="what the user says (any audio file)")
    parser.add_argument("-o", "--output", default="pipecat_avatar.mp4", help="the MP4 to write")
    parser.add_argument("--listen", type=float, default=2.0, help="seconds of silence after the question")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    parser.add_argument("--nfe", type=int, default=10, help="vector-field evaluations per chunk (fewer: faster)")
    args = parser.parse_args(argv)
    cfg = services.ServiceConfig.from_env()
    reason = services.assistant_unavailable_reason(cfg)
    if reason or cfg.tts_url is None:
        sys.exit(reason or "Set FLOAT_TTS_URL to an OpenAI-compatible /audio/speech server (Pipecat's "
                           "OpenAITTSService speaks to one).")
    services.check_services(cfg)
    recorder = asyncio.run(converse(FloatPipeline.from_pretrained(), args, cfg))
    print(f"wrote {args.output}: {recorder.frames} frames at {FPS} fps, {recorder.speaking} of them speaking")
    return 0 if recorder.speaking else 1


if __name__ == "__main__":
    raise SystemExit(main())
