"""The Video tab of FLOAT Studio: a video as input (:mod:`float_core.video_in`).

Three modes:

* **drive** (reenactment): the portrait moves as the face in the video (all motion from the
  video, relative to its first frame by default); the video's length and sound;
* **hybrid** (lips from speech + head from video): motion sampled for the speech, with the
  direction groups picked (default: head) taken from the video, relative to its first frame;
* **dub**: the video's own frames with the lips following new speech; identity from a reference
  frame, the picked groups (default head, eyes, other) from each frame, pasted back.

The first half of this module is the handlers, plain functions testable without a server (as
:mod:`float_studio.handlers` is for the Studio tab, whose analysis caches, sampling and edits
they reuse); :func:`build_video_tab` lays out the tab and wires it. The result is a
:class:`VideoGeneration`, so the Studio's edit panel (:func:`float_studio.ui.build_edit_panel`:
sliders, presets, curves, Apply) acts on it as on a Studio generation; its preview shows the
input frame next to the output frame.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from float_core.config import DEFAULT_DRIVE_GROUPS, DEFAULT_DUB_GROUPS, SamplingConfig
from float_core.inputs import move_tensors
from float_core.progress import ProgressCallback, silent

from . import handlers as h
from . import state as st
from .model import PipelineHolder

if TYPE_CHECKING:
    from float_core.pipeline import FloatPipeline
    from float_core.video_in import VideoMotion

#: Mode values (the API's ``mode``) and their labels in the page.
MODES: dict[str, str] = {"drive": "Drive (the video moves the portrait)",
                         "hybrid": "Lips from speech + head from video",
                         "dub": "Dub (new speech on the video)"}
#: The direction groups taken from the video by default in each mode.
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {"hybrid": DEFAULT_DRIVE_GROUPS, "dub": DEFAULT_DUB_GROUPS}
#: Where each stage sits on the one progress bar.
SPANS: dict[str, tuple[float, float]] = {
    "portrait": (0.0, 0.03), "video": (0.03, 0.15), "encoding": (0.15, 0.35), "speech": (0.35, 0.4),
    "sampling": (0.4, 0.6), "directions": (0.6, 0.7), "rendering": (0.7, 1.0)}
#: Height of the side-by-side preview (input | output) at most, in pixels.
PREVIEW_HEIGHT = 512
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class VideoGeneration(st.Generation):
    """A :class:`~float_studio.state.Generation` made from a video (CPU tensors; never mutated).

    ``speech`` is None in drive mode. Attributes added:
        mode: "drive", "hybrid" or "dub".
        video_key: the video analysis' cache key.
        video: the video's :class:`~float_core.video_in.VideoMotion` (motion, face track, frames).
        index: (T,) the video frame of each output frame (played back and forth, or cut).
        audio: what the MP4 carries: the speech, or the video's own sound (drive), or None.
        groups: the direction groups taken from the video.
    """

    mode: str = "drive"
    video_key: str = ""
    video: "VideoMotion | None" = None
    index: np.ndarray | None = None
    audio: np.ndarray | None = None
    groups: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- handlers
def check_video(video_path: str | None) -> str:
    """The uploaded video's path, or a ValueError saying what to do."""
    return h.check_upload(video_path, "Please add a video first (upload, webcam, or an example video).", "video")


def parse_mode(mode: str | None) -> str:
    """A mode value of :data:`MODES` (any case), or a ValueError listing them."""
    key = str(mode or "drive").strip().lower()
    if key not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return key


def analyse_video(pipe: "FloatPipeline", sess: st.Session, video_path: str | None, crop: bool = True,
                  reference: int | str | None = None,
                  progress: ProgressCallback = silent) -> tuple[str, "VideoMotion"]:
    """The video's face motion (:meth:`FloatPipeline.analyse_video`), cached per session by
    file content and settings (and shared for the example videos). A video longer than the
    server's limit (``FLOAT_MAX_SECONDS``, read from its header) is refused before any work."""
    from float_core.video_in import video_seconds

    from .limits import check_speech_seconds

    path = check_video(video_path)
    check_speech_seconds(video_seconds(path) or 0.0, what="The video")
    content = st.file_key(path)
    key = f"{content}:{int(bool(crop))}:{reference}"
    video = st.cached(sess.cache, ("video", key), pipe.device,
                      lambda: pipe.analyse_video(path, crop=crop, reference_frame=reference, progress=progress),
                      content)
    if video.path != Path(path):  # the same content uploaded again: read the file that exists
        video = dataclasses.replace(video, path=Path(path))
    return key, video


def run(holder: PipelineHolder, sess: st.Session, mode: str, video_path: str | None, *,
        image: np.ndarray | None = None, speech_path: str | None = None, groups: Sequence[str] | None = None,
        relative: bool = True, crop: bool = True, reference_frame: int | None = None,
        sampling: SamplingConfig | None = None, progress: ProgressCallback = silent) -> VideoGeneration:
    """Analyse (cached), make the motion of ``mode`` and install it as the session's current
    generation (see the module docstring). ``sampling`` (hybrid, dub) needs a concrete seed;
    ``reference_frame`` (dub): None for the first frontal, sharp face. Stop ends it at the next
    progress report."""
    mode = parse_mode(mode)
    check_video(video_path)
    if mode != "dub" and image is None:
        raise ValueError("Please add a portrait first (upload, webcam, paste or an example).")
    if mode != "drive":
        h.check_audio(speech_path)
        if sampling is None or sampling.seed is None:
            raise ValueError("the sampling settings need a concrete seed")
    from float_core.video_in import parse_groups

    chosen = parse_groups(groups if groups is not None else DEFAULT_GROUPS.get(mode, ()) or DEFAULT_DRIVE_GROUPS)
    pipe = holder.get()
    with sess.action() as stop_event:
        report = st.cancellable(progress, stop_event)
        generation = _make(pipe, sess, sess.next_version(), mode, video_path, image, speech_path, chosen,
                           relative, crop, reference_frame, sampling, report)
    sess.install(generation)
    return generation


def _make(pipe: "FloatPipeline", sess: st.Session, version: int, mode: str, video_path: str | None,
          image: np.ndarray | None, speech_path: str | None, groups: tuple[str, ...], relative: bool, crop: bool,
          reference_frame: int | None, sampling: SamplingConfig | None, report: ProgressCallback) -> VideoGeneration:
    from float_core.video_in import drive_motion, ping_pong, transfer_groups, video_audio

    if mode == "dub":
        reference = "auto" if reference_frame is None or reference_frame < 0 else int(reference_frame)
        video_key, video = analyse_video(pipe, sess, video_path, True, reference, report)
        source_key, source = f"{video_key}:reference", video.reference_source
    else:
        source_key, source = h.prepare_source(pipe, sess, image, crop, progress=report)
        video_key, video = analyse_video(pipe, sess, video_path, crop, None, report)
    cpu_video = move_tensors(video, "cpu")
    if mode == "drive":
        motion = drive_motion(source.source_motion, video.motion, relative)
        return VideoGeneration(
            version=version, source_key=source_key, speech_key="", source=move_tensors(source, "cpu"), speech=None,
            motion=motion.cpu(), lambdas=pipe.motion_lambda(motion).float().cpu().numpy(),
            emotion=np.zeros(pipe.config.dim_e, np.float32), sampling=None,
            directions=tuple(sess.cache.get(("directions", source_key)) or ()), mode=mode, video_key=video_key,
            video=cpu_video, index=np.arange(video.num_frames),
            audio=video_audio(video.path, pipe.config.sample_rate, video.num_frames), groups=groups)
    speech_key, speech = h.analyse_speech(pipe, sess, speech_path, report)
    base = h.sample_generation(pipe, sess, version, source_key, source, speech_key, speech, sampling, report)
    directions = h.cached_directions(pipe, sess, source_key, source, report)
    motion = transfer_groups(base.motion.to(pipe.device), video, groups, directions, pipe.basis,
                             source_lambda=None if mode == "dub" else source.source_lambda)
    return VideoGeneration(
        **{f.name: getattr(base, f.name) for f in dataclasses.fields(st.Generation)} | dict(
            motion=motion.cpu(), lambdas=pipe.motion_lambda(motion).float().cpu().numpy(), directions=directions),
        mode=mode, video_key=video_key, video=cpu_video, index=ping_pong(video.num_frames, base.num_frames),
        audio=speech.waveform, groups=groups)


def _current(sess: st.Session) -> VideoGeneration:
    gen = sess.current
    if not isinstance(gen, VideoGeneration):
        raise ValueError("Make a video first (Animate or Dub); the edits act on its motion.")
    return gen


def side_by_side(left: np.ndarray, right: np.ndarray, height: int | None = None, gap: int = 8) -> np.ndarray:
    """Two RGB frames next to each other at one height (at most :data:`PREVIEW_HEIGHT`), a white gap between."""
    from PIL import Image

    height = height or min(PREVIEW_HEIGHT, max(left.shape[0], right.shape[0]))

    def scaled(image: np.ndarray) -> np.ndarray:
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))

    return np.concatenate([scaled(left), np.full((height, gap, 3), 255, np.uint8), scaled(right)], axis=1)


def output_frame(pipe: "FloatPipeline", sess: st.Session, gen: VideoGeneration, frame_index: Any,
                 edits: h.Edits, paste_back: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(input frame, output frame) for output frame ``frame_index`` with ``edits``: the video's
    frame and the decoded one (a dub: pasted into that video frame; else pasted into the
    portrait when ``paste_back``). Decodes one frame and reads one video frame."""
    from float_core.video_in import DubCompositor

    k, frame = h.edited_frame(pipe, gen, frame_index, edits)
    assert gen.video is not None and gen.index is not None
    source_frame = int(gen.index[k])
    with gen.video.reader() as reader:
        original = reader.frame(source_frame)
    if gen.mode == "dub":
        frame = DubCompositor(gen.video, gen.index, pipe.config.image_size).paste(frame, original, source_frame)
    elif paste_back:
        paste, _ = h.paste_back_transform(pipe, sess, gen)
        frame = paste(frame) if paste is not None else frame
    return original, frame


def preview(holder: PipelineHolder, sess: st.Session, frame_index: Any, edits: h.Edits,
            paste_back: bool = False) -> np.ndarray | None:
    """The side-by-side preview (input | output) of one frame with ``edits``; None when a new
    generation replaced this one meanwhile."""
    gen = _current(sess)
    original, frame = output_frame(holder.get(), sess, gen, frame_index, edits, paste_back)
    return side_by_side(original, frame) if sess.is_current(gen) else None


@dataclass(frozen=True)
class VideoRendered:
    """A finished video of the Video tab."""

    path: str
    generation: VideoGeneration
    seconds: float
    warnings: list[str]


def render(holder: PipelineHolder, sess: st.Session, edits: h.Edits | None = None, paste_back: bool = False,
           progress: ProgressCallback = silent, generation: VideoGeneration | None = None) -> VideoRendered:
    """Write the current generation (with ``edits``) to an MP4 through
    :meth:`FloatPipeline.render_video` (a dub composited into the video's frames); the file
    appears only when complete (Stop removes the unfinished one)."""
    from float_core.video_in import DubCompositor

    gen = generation or _current(sess)
    pipe = holder.get()
    t0 = time.perf_counter()
    warnings = []
    paste = paste_back and gen.mode != "dub"
    if paste and (gen.source.crop_box is None or gen.source.original is None):
        warnings.append("Paste-back needs a detected face crop; showing the cropped video instead.")
        paste = False
    composite = (DubCompositor(gen.video, gen.index, pipe.config.image_size).frames if gen.mode == "dub" else None)
    path = sess.new_video_path(f"float_{gen.mode}")
    with sess.action() as stop_event:
        pipe.render_video(path, move_tensors(gen.source, pipe.device), gen.motion.to(pipe.device), audio=gen.audio,
                          edits=None if edits is None else h.edit_offsets(gen, edits),
                          progress=st.cancellable(progress, stop_event), paste_back=paste, composite=composite)
    sess.video_path = str(path)
    return VideoRendered(str(path), gen, time.perf_counter() - t0, warnings)


def summary_markdown(gen: VideoGeneration, seconds: float, edited: bool = False, fps: float = 25.0) -> str:
    """A short result line: mode, frames, duration, what came from the video, wall time."""
    what = "Re-rendered with edits" if edited else MODES[gen.mode].split(" (")[0]
    assert gen.video is not None
    parts = [f"{what}: **{gen.num_frames} frames** ({gen.num_frames / fps:.1f} s) in {seconds:.1f} s",
             f"video {gen.video.num_frames} frames"]
    if gen.mode != "drive":
        from float_core.video_in import group_note

        parts.append(f"from the video: {', '.join(gen.groups)}")
        parts.append(f"seed **{gen.sampling.seed}**" if gen.sampling is not None else "")
        parts.append(group_note(gen.directions, gen.groups) or "")
    if gen.video.message:
        parts.append(gen.video.message)
    return " · ".join(p for p in parts if p)


def video_gallery() -> list[list[str]]:
    """The example videos under examples/ (see examples/README.md), their analyses shared by
    all sessions (:data:`float_studio.state.EXAMPLES`)."""
    videos = sorted(str(p) for p in EXAMPLES.glob("*.mp4"))
    for path in videos:
        st.EXAMPLES.register(st.file_key(path))
    return [[v] for v in videos]


# ---------------------------------------------------------------------------- layout and wiring
def work_seconds(video: str | None = None, speech: str | None = None, **_: Any) -> float:
    """Seconds of media a Video-tab request processes (its GPU request's size): the video, read
    and encoded frame by frame, plus the speech; each at most the server's limit."""
    from float_core.video_in import video_seconds

    from .limits import limited_speech_seconds, max_speech_seconds

    limit = max_speech_seconds()
    seconds = (video_seconds(video) or 0.0) if video else 0.0
    return (seconds if limit is None else min(seconds, limit)) + limited_speech_seconds(speech)


def build_video_tab(holder: PipelineHolder) -> None:
    """Lay out the Video tab (inside ``with gr.Tab("Video"):``) and wire its events.

    Public API endpoints: ``/drive`` (modes drive and hybrid) and ``/dub``; the motion editor's
    events are private (the Studio tab's endpoints edit Studio generations). The handlers that
    run the model are GPU requests (:func:`float_studio.gpu.gpu_handler`) sized by
    :func:`work_seconds`; they return the session, and Stop cancels their events.
    """
    from types import SimpleNamespace

    import gradio as gr

    from float_core.config import FloatConfig
    from float_core.directions import GROUPS

    from . import plots
    from .gpu import gpu_handler
    from .ui import (describe_after, editor_handlers, gallery, layout_editor, progress_bar, slider_updates,
                     ui_errors, wire_editor)

    num_dirs = holder.get().config.motion_dim if holder.loaded else FloatConfig.official().motion_dim
    ui = SimpleNamespace(num_dirs=num_dirs)
    ui.session = gr.State(st.Session(), time_to_live=3600, delete_callback=st.cleanup_session)
    portraits, voices = gallery()
    videos = video_gallery()
    gr.Markdown("Use a video as input. **Drive**: the portrait moves as the face in the video. **Lips from "
                "speech + head from video**: the mouth follows the speech, the groups you pick (the head by "
                "default) follow the video. **Dub**: the video keeps its picture and the lips follow new "
                "speech. See docs/video.md.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=6):
            ui.mode = gr.Radio([(label, key) for key, label in MODES.items()], value="drive", label="Mode",
                               elem_id="video-mode")
            with gr.Row(equal_height=False):
                with gr.Column() as ui.portrait_box:
                    ui.portrait = gr.Image(label="Portrait", type="numpy", height=240, elem_id="video-portrait",
                                           sources=["upload", "webcam", "clipboard"])
                    if portraits:
                        gr.Examples(portraits, inputs=[ui.portrait], label="Example portraits", examples_per_page=8)
                with gr.Column():
                    ui.video_in = gr.Video(label="Video (a face)", height=240, sources=["upload", "webcam"],
                                           elem_id="video-input")
                    if videos:
                        gr.Examples(videos, inputs=[ui.video_in], label="Example videos (examples/README.md)",
                                    examples_per_page=8, elem_id="video-examples")
            with gr.Column(visible=False) as ui.speech_box:
                ui.speech = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                                     elem_id="video-speech")
                if voices:
                    gr.Examples(voices, inputs=[ui.speech], label="Example voices", examples_per_page=8,
                                elem_id="video-voice-examples")
            ui.groups = gr.CheckboxGroup(list(GROUPS), value=list(DEFAULT_GROUPS["hybrid"]), visible=False,
                                         label="Taken from the video",
                                         info="Direction groups whose motion follows the video; the rest follows "
                                              "the speech.", elem_id="video-groups")
            with gr.Row():
                ui.relative = gr.Checkbox(True, label="Relative motion", elem_id="video-relative",
                                          info="The portrait starts as it is and makes the video's changes "
                                               "(off: it takes the video's pose).")
                ui.crop = gr.Checkbox(True, label="Crop to the face", elem_id="video-crop",
                                      info="Detect and crop the face in the portrait and in every video frame.")
                ui.paste_back = gr.Checkbox(False, label="Paste back into the photo", elem_id="video-paste",
                                            info="Blend the animated face back into the portrait photo.")
                ui.reference = gr.Number(-1, precision=0, minimum=-1, label="Reference frame", visible=False,
                                         info="The frame whose face is the identity; -1: the first frontal, "
                                              "sharp one.", elem_id="video-reference")
            with gr.Accordion("Sampling (speech)", open=False, visible=False) as ui.sampling_box:
                with gr.Row():
                    ui.a_cfg = gr.Slider(*st.A_CFG_RANGE, value=st.DEFAULTS.a_cfg, step=0.1,
                                         label="Audio guidance γa")
                    ui.e_cfg = gr.Slider(*st.E_CFG_RANGE, value=st.DEFAULTS.e_cfg, step=0.1,
                                         label="Emotion intensity γe")
                with gr.Row():
                    ui.nfe = gr.Slider(*st.NFE_RANGE, value=st.DEFAULTS.nfe, step=1, label="Steps (NFE)",
                                       elem_id="video-nfe")
                    ui.seed = gr.Number(value=0, precision=0, minimum=-1, maximum=st.MAX_SEED, label="Seed",
                                        info="-1 draws one (written back here).", elem_id="video-seed")
        with gr.Column(scale=5):
            with gr.Row():
                ui.run_drive = gr.Button("Animate", variant="primary", elem_id="video-run-drive", scale=3)
                ui.run_dub = gr.Button("Dub", variant="primary", visible=False, elem_id="video-run-dub", scale=3)
                ui.stop = gr.Button("Stop", variant="stop", elem_id="video-stop", scale=1)
            ui.video = gr.Video(label="Result", height=380, autoplay=True, interactive=False, buttons=["download"],
                                elem_id="video-output")
            ui.summary = gr.Markdown(elem_id="video-summary")
    layout_editor(ui, prefix="float-video", preview_label="Preview: input frame | edited output frame")

    # ---------------------------------------------------------------- handlers
    def pipe_fps() -> float:
        return holder.get().config.fps

    def apply_edits(holder_: PipelineHolder, sess: st.Session, edits: h.Edits, paste: bool,
                    report: ProgressCallback) -> tuple[str, str]:
        rendered = render(holder_, sess, edits, paste, report)
        for w in rendered.warnings:
            gr.Warning(w)
        return rendered.path, summary_markdown(rendered.generation, rendered.seconds, True, pipe_fps())

    fn = editor_handlers(holder, num_dirs, len(ui.headings), preview=preview, apply=apply_edits)

    def on_mode(choice: str) -> tuple[Any, ...]:
        key = parse_mode(choice)
        speech_on = key != "drive"
        return (gr.update(visible=key != "dub"), gr.update(visible=speech_on),
                gr.update(visible=speech_on, value=list(DEFAULT_GROUPS.get(key, DEFAULT_DRIVE_GROUPS))),
                gr.update(visible=key == "drive"), gr.update(visible=key != "dub"), gr.update(visible=key != "dub"),
                gr.update(visible=key == "dub"), gr.update(visible=speech_on), gr.update(visible=key != "dub"),
                gr.update(visible=key == "dub"))

    def finish(sess: st.Session, gen: VideoGeneration, paste: bool, report: ProgressCallback,
               seed_value: Any) -> tuple[Any, ...]:
        rendered = render(holder, sess, None, paste, report, generation=gen)
        for w in rendered.warnings:
            gr.Warning(w)
        if gen.video is not None and gen.video.message:
            gr.Info(gen.video.message)
        return (rendered.path, summary_markdown(gen, rendered.seconds, False, pipe_fps()), seed_value, sess,
                gr.update(minimum=0, maximum=max(gen.num_frames - 1, 1), value=0, interactive=True),
                preview(holder, sess, 0, h.Edits(np.zeros(num_dirs, np.float32)), paste),
                plots.lambda_figure(gen.lambdas, pipe_fps(), 0, directions=gen.directions),
                *slider_updates(gen, reset=True))

    @gpu_handler(holder.speed, work_seconds)
    @ui_errors
    def on_drive(sess: st.Session, image: np.ndarray | None, video: str | None, speech: str | None, mode: str,
                 groups: list[str], relative: bool, crop: bool, paste_back: bool, a_cfg: float, e_cfg: float,
                 nfe: float, seed: float, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Drive the portrait with the video (mode "drive"), or take the groups from the video and
        the rest from the speech (mode "hybrid"); returns the video, a summary, the seed used."""
        key = parse_mode(mode)
        if key == "dub":
            raise ValueError("mode: use the Dub button (the /dub endpoint) to dub a video")
        sampling = st.sampling_from_ui(a_cfg, e_cfg, nfe, "euler", "auto", seed) if key == "hybrid" else None
        report = progress_bar(progress, SPANS)
        gen = run(holder, sess, key, video, image=image, speech_path=speech, groups=groups, relative=bool(relative),
                  crop=bool(crop), sampling=sampling, progress=report)
        return finish(sess, gen, bool(paste_back), report, sampling.seed if sampling is not None else seed)

    @gpu_handler(holder.speed, work_seconds)
    @ui_errors
    def on_dub(sess: st.Session, video: str | None, speech: str | None, groups: list[str],
               reference_frame: float | None, a_cfg: float, e_cfg: float, nfe: float, seed: float,
               progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Dub the video with the speech: the picked groups from each video frame, the rest (the
        mouth) from the speech; returns the video, a summary, the seed used."""
        sampling = st.sampling_from_ui(a_cfg, e_cfg, nfe, "euler", "auto", seed)
        ref = None if reference_frame in (None, "") or int(reference_frame) < 0 else int(reference_frame)
        report = progress_bar(progress, SPANS)
        gen = run(holder, sess, "dub", video, speech_path=speech, groups=groups, reference_frame=ref,
                  sampling=sampling, progress=report)
        return finish(sess, gen, False, report, sampling.seed)

    # ---------------------------------------------------------------- wiring
    ui.mode.change(on_mode, ui.mode, [ui.portrait_box, ui.speech_box, ui.groups, ui.relative, ui.crop, ui.paste_back,
                                      ui.reference, ui.sampling_box, ui.run_drive, ui.run_dub],
                   queue=False, api_visibility="private")
    outputs = [ui.video, ui.summary, ui.seed, ui.session, ui.frame, ui.preview, ui.lambda_plot, *ui.sliders]
    drive_event = ui.run_drive.click(
        on_drive, [ui.session, ui.portrait, ui.video_in, ui.speech, ui.mode, ui.groups, ui.relative, ui.crop,
                   ui.paste_back, ui.a_cfg, ui.e_cfg, ui.nfe, ui.seed], outputs, api_name="drive",
        concurrency_limit=1, concurrency_id="render", show_progress_on=[ui.video])
    dub_event = ui.run_dub.click(
        on_dub, [ui.session, ui.video_in, ui.speech, ui.groups, ui.reference, ui.a_cfg, ui.e_cfg, ui.nfe, ui.seed],
        outputs, api_name="dub", concurrency_limit=1, concurrency_id="render", show_progress_on=[ui.video])
    describes = [describe_after(ui, fn, event, api=False) for event in (drive_event, dub_event)]
    apply_event = wire_editor(ui, fn, api=False)
    for button in (ui.stop, ui.stop_apply):
        button.click(fn.on_stop, [ui.session], None, cancels=[drive_event, dub_event, *describes, apply_event],
                     queue=False, api_visibility="private")
