"""A FLOAT portrait as the video of a Pipecat voice agent (optional extra ``[agents]``: pipecat-ai).

:class:`FloatAvatarService` is a Pipecat ``FrameProcessor`` placed after the text-to-speech
service. It is a :class:`~float_core.avatar.LiveAvatar` in Pipecat's frame types:

* **in**: ``TTSAudioRawFrame`` (16-bit PCM at any rate, mono or interleaved channels), pushed
  into the avatar as it arrives; ``TTSStoppedFrame`` ends the turn (the avatar flushes its
  look-ahead instead of waiting for audio that will not come). Both are consumed: the audio
  leaves again below, in sync with the video.
* **out**, at 25 fps for as long as the pipeline runs: an ``OutputImageRawFrame`` (RGB,
  ``sync_with_audio`` set, so an output transport shows it when the audio before it has been
  played) followed by a ``SpeechOutputAudioRawFrame`` with the 40 ms of audio that frame was
  made from (16 kHz mono). Between turns the frames are idle (blinks, small head motion) and
  their audio is silence, so the transport's bot-speaking detection sees the speech exactly
  where the mouth moves. Both frames carry ``pts`` (nanoseconds, ``index / 25`` s) and
  ``metadata["float_avatar"] = {"index", "speaking", "repeated"}`` (``repeated``: no new frame was
  ready on time, the last image is shown again with silence).
* ``InterruptionFrame`` (the user barged in) calls :meth:`LiveAvatar.interrupt`: speech not yet
  shown is dropped and the next frame is idle. It is passed on, so the output transport clears
  what it has queued too.
* ``EndFrame`` lets the queued speech play out, then closes the avatar; ``CancelFrame`` closes
  it at once. Every other frame is passed on unchanged.

Example (the rest of the pipeline as usual; ``examples/pipecat_avatar.py`` runs one)::

    avatar = FloatAvatarService(FloatPipeline.from_pretrained(), "portrait.png", nfe=10)
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, avatar,
                         transport.output(), assistant_aggregator])

Configure the output transport for the avatar's frames: ``video_out_enabled=True``,
``video_out_width``/``video_out_height`` = the frame size (``pipe.config.image_size``),
``video_out_framerate=25``; it resamples the 16 kHz audio to its own rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ..avatar import AVATAR_STALL_SECONDS, AvatarFrame, LiveAvatar
from ..config import SAMPLE_RATE, SAMPLING_FIELDS, SamplingConfig, StreamOptions
from ..inputs import SourceImage
from ..media.audio import pcm16

if TYPE_CHECKING:
    from ..inputs import ImageInput
    from ..pipeline import FloatPipeline

__all__ = ["FloatAvatarService"]

#: How long an ``EndFrame`` waits for the queued speech to be shown before closing the avatar.
END_DRAIN_SECONDS = 30.0
_NS = 1_000_000_000


class FloatAvatarService(FrameProcessor):
    """A Pipecat processor that turns TTS audio into the portrait's video and the same audio.

    Args:
        pipe: the :class:`~float_core.pipeline.FloatPipeline`.
        portrait: an image path, an RGB uint8 array or a prepared
            :class:`~float_core.inputs.SourceImage` (prepared once, here: a portrait without
            a face is a ValueError now, not in the middle of a conversation).
        settings: ``sampling`` (a :class:`~float_core.config.SamplingConfig`), ``options`` (a
            :class:`~float_core.config.StreamOptions`; default: :class:`LiveAvatar`'s),
            ``realtime`` (default True: frames paced at 25 fps; False only for offline use),
            ``name`` (the processor's name), and any field of either dataclass by name
            (``nfe=4``, ``seed=0``, ``emotion="happy"``, ``chunk_frames=10``, ``idle=False``...).

    Raises:
        ValueError: an unknown setting, an invalid value, or a portrait that cannot be prepared.
    """

    def __init__(self, pipe: "FloatPipeline", portrait: "SourceImage | ImageInput", **settings: Any) -> None:
        sampling = settings.pop("sampling", None) or SamplingConfig()
        options = settings.pop("options", None) or StreamOptions(stall_timeout=AVATAR_STALL_SECONDS)
        realtime = bool(settings.pop("realtime", True))
        name = settings.pop("name", None)
        option_names = {f.name for f in dataclasses.fields(StreamOptions)}
        unknown = sorted(set(settings) - set(SAMPLING_FIELDS) - option_names)
        if unknown:
            known = ["sampling", "options", "realtime", "name", *SAMPLING_FIELDS, *sorted(option_names)]
            raise ValueError(f"FloatAvatarService: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        self.sampling = sampling.with_overrides(**{k: v for k, v in settings.items() if k in SAMPLING_FIELDS})
        self.options = dataclasses.replace(options, **{k: v for k, v in settings.items() if k in option_names})
        self.realtime = realtime
        self.pipe = pipe
        self.source = (portrait if isinstance(portrait, SourceImage)
                       else pipe.prepare_image(portrait, crop=self.options.crop))
        super().__init__(name=name or "FloatAvatarService")
        self.avatar: LiveAvatar | None = None
        self._pump_task: asyncio.Task | None = None
        self._turn = 0  # interruptions so far: a push started before one is dropped

    # ------------------------------------------------------------------ frames in
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self._turn += 1  # first: the base class cancels a push in progress, whose thread may still run
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start()
        elif isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            await self._push_audio(frame)
        elif isinstance(frame, TTSStoppedFrame) and direction == FrameDirection.DOWNSTREAM:
            if self.avatar is not None:
                self.avatar.end_turn()
        elif isinstance(frame, TTSStartedFrame) and direction == FrameDirection.DOWNSTREAM:
            pass  # the audio that follows leaves as the avatar's own, in sync with its frames
        elif isinstance(frame, InterruptionFrame):
            if self.avatar is not None:
                self.avatar.interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._stop(drain=True)
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop(drain=False)
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _push_audio(self, frame: TTSAudioRawFrame) -> None:
        if self.avatar is None:
            return
        pcm = np.frombuffer(frame.audio, dtype="<i2")
        if frame.num_channels > 1:  # interleaved channels: mixed down (the avatar takes mono)
            samples = pcm.reshape(-1, frame.num_channels).astype(np.float32).mean(axis=1) / 32768.0
        else:
            samples = pcm
        turn, avatar = self._turn, self.avatar

        def push() -> None:
            if turn == self._turn:  # not interrupted while waiting for this thread
                avatar.push_audio(samples, frame.sample_rate)

        try:
            # In a thread: push_audio blocks while the avatar's buffer is full (back-pressure),
            # and the frames that drain it leave through this event loop.
            await asyncio.to_thread(push)
        except ValueError as exc:
            await self.push_error(error_msg=f"{self}: {exc}", exception=exc)

    # ------------------------------------------------------------------ frames out
    def _start(self) -> None:
        if self.avatar is None:
            self.avatar = LiveAvatar(self.pipe, self.source, sampling=self.sampling, options=self.options,
                                     realtime=self.realtime)
            self._pump_task = self.create_task(self._pump(self.avatar), name=f"{self}::pump")

    async def _pump(self, avatar: LiveAvatar) -> None:
        """Push every frame of the avatar downstream as an image and its audio."""
        frames = avatar.frames()
        while True:
            frame = await asyncio.to_thread(next, frames, None)  # paced at 25 fps when realtime
            if frame is None:  # closed
                return
            await self._emit(frame)

    async def _emit(self, frame: AvatarFrame) -> None:
        height, width = frame.image.shape[:2]
        pts = round(frame.pts * _NS)
        meta = {"index": frame.index, "speaking": frame.speaking, "repeated": frame.repeated}
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=(width, height), format="RGB")
        image.sync_with_audio = True  # shown when the audio before it has been played
        # int16 TTS audio comes out bit for bit (pcm16 inverts int16 / 32768)
        audio = SpeechOutputAudioRawFrame(audio=pcm16(frame.audio), sample_rate=SAMPLE_RATE, num_channels=1)
        for out in (image, audio):
            out.pts = pts
            out.metadata["float_avatar"] = meta
            await self.push_frame(out)

    # ------------------------------------------------------------------ lifetime
    async def _stop(self, drain: bool) -> None:
        avatar, self.avatar = self.avatar, None
        if avatar is None:
            return
        if drain:  # a graceful end: the speech already queued is shown first
            deadline = time.monotonic() + END_DRAIN_SECONDS
            while avatar.queued_seconds > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.04)
        await asyncio.to_thread(avatar.close)  # joins the avatar's threads; the pump then ends
        if self._pump_task is not None:
            await self.cancel_task(self._pump_task)
            self._pump_task = None

    async def cleanup(self) -> None:
        await self._stop(drain=False)
        await super().cleanup()
