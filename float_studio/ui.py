"""The Studio tab of FLOAT Studio: portrait + speech -> video, live motion controls; and the
motion editor (preview, λ sliders, presets, curves, Apply) that the Video tab reuses
(:func:`layout_editor`, :func:`editor_handlers`, :func:`wire_editor`).

Three parts: the layout (:func:`layout_studio_tab`, the components in a :class:`StudioLayout`),
the event handlers (:func:`studio_handlers`: each calls a plain function of
:mod:`float_studio.handlers` and turns its result into component updates) and the wiring
(:func:`wire_studio_tab`). Long actions (analysis, generation, direction measurement,
re-rendering) report to one ``gr.Progress`` bar, stop at the next step when **Stop** is
pressed, and run inside a GPU request on ZeroGPU (:func:`float_studio.gpu.gpu_handler`, sized
from the speech's length).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, TypeVar

import gradio as gr
import numpy as np

from float_core.config import FPS, SOLVER_NAMES, FloatConfig
from float_core.editing import CURVE_KINDS
from float_core.media.face import CROP_SCALE, CROP_SCALE_RANGE
from float_core.progress import ProgressCallback, fraction_callback

from . import handlers as h
from . import plots
from . import state as st
from .gpu import gpu_handler
from .limits import limited_speech_seconds, max_speech_seconds
from .model import PipelineHolder

log = logging.getLogger("float_studio")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: The size of the crop shown next to the portrait (the released model's input size).
CROP_PREVIEW_SIZE = FloatConfig.official().image_size
#: Curve shapes offered by the curve editor (keyframes are for the Python API).
UI_CURVE_KINDS = tuple(k for k in CURVE_KINDS if k != "keyframes")
F = TypeVar("F", bound=Callable[..., Any])


def ui_errors(fn: F) -> F:
    """Turn any exception into a ``gr.Error`` toast with a readable message (never a traceback).

    Works for plain and generator functions (the wrapper keeps the kind, so Gradio still
    streams the generator's updates and still injects ``gr.Progress``).
    """
    def as_error(exc: Exception) -> gr.Error:
        if isinstance(exc, (ValueError, st.Cancelled)):  # the user's input or Stop: no traceback
            log.info("%s: %s", fn.__name__, exc)
        else:
            log.exception("%s failed", fn.__name__)
        return gr.Error(h.user_message(exc), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - the UI boundary
                raise as_error(exc) from None

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the UI boundary
            raise as_error(exc) from None

    return wrapper  # type: ignore[return-value]


def gallery() -> tuple[list[list[str]], list[list[str]]]:
    """The example portraits and voices under examples/ (see examples/README.md), when present.

    Their analyses are shared by all sessions (:data:`float_studio.state.EXAMPLES`): the
    first visitor who picks an example computes it, everyone after gets it from the cache.
    """
    from float_core.media.image import load_image

    portraits = sorted(str(p) for p in EXAMPLES.glob("portrait_*") if p.suffix in (".png", ".jpg"))
    voices = sorted(str(p) for p in EXAMPLES.glob("*.wav"))
    for path in portraits:
        st.EXAMPLES.register(st.image_key(load_image(path)))
    for path in voices:
        st.EXAMPLES.register(st.file_key(path))
    return [[p] for p in portraits], [[v] for v in voices]


#: Shortest interval between two progress-bar updates sent to the browser (seconds).
PROGRESS_INTERVAL = 0.25


def progress_bar(progress: gr.Progress, spans: dict[str, tuple[float, float]]) -> ProgressCallback:
    """One ``gr.Progress`` bar over the stages in ``spans``, updated at most every
    :data:`PROGRESS_INTERVAL` seconds (the engine reports every vector-field evaluation:
    hundreds per second on a small model, more than a page should re-render). Stop is
    checked at every report regardless (:func:`float_studio.state.cancellable`)."""
    last = [0.0]

    def report(fraction: float, desc: str) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL or fraction >= 1.0:
            last[0] = now
            progress(fraction, desc=desc)

    return fraction_callback(report, spans)


def _edits(preset: str | None, curves: list[dict] | None, values: tuple[Any, ...], num_dirs: int) -> h.Edits:
    return h.Edits(st.offsets_array(values, num_dirs), preset or None, h.curves_from_rows(curves or []))


def run_controls(action: str, video_label: str, prefix: str, height: int) -> tuple[gr.Button, gr.Button, gr.Video]:
    """A tab's primary action button with its Stop, and the video it makes (elem_ids
    ``{prefix}-generate``, ``{prefix}-stop``, ``{prefix}-video``)."""
    with gr.Row():
        run = gr.Button(action, variant="primary", elem_id=f"{prefix}-generate", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop", scale=1)
    video = gr.Video(label=video_label, height=height, autoplay=True, interactive=False, buttons=["download"],
                     elem_id=f"{prefix}-video")
    return run, stop, video


@dataclass
class StudioTab:
    """The components of the Studio tab that ``app.py`` wires to app-level events."""

    generate: gr.Button


class StudioLayout(SimpleNamespace):
    """The Studio tab's components by name (set by :func:`layout_studio_tab`): the ``gr.State``
    values ``session`` (:class:`~float_studio.state.Session`), ``preset`` and ``curves``; the
    inputs (``portrait``, ``crop``, ``face``, ``audio``, ...), the controls and result (``emotion``,
    ``nfe``, ``generate``, ``estimate``, ``video``, ...) and the motion editor (``preview``,
    ``frame``, ``sliders``, ``cells``, ``headings``, ``preset_buttons``, the curve fields, ...)."""


def build_studio_tab(holder: PipelineHolder) -> StudioTab:
    """Lay out the Studio tab (inside ``with gr.Tab("Studio"):``) and wire its events.

    Every per-user value lives in the ``gr.State`` :class:`~float_studio.state.Session`;
    the edit preset and curves in their own ``gr.State`` values.
    """
    # Only the slider count is needed before the model loads; every other size is read from
    # the loaded pipeline when an event runs.
    num_dirs = holder.get().config.motion_dim if holder.loaded else FloatConfig.official().motion_dim
    ui = layout_studio_tab(num_dirs)
    wire_studio_tab(ui, studio_handlers(holder, num_dirs, len(ui.headings)))
    return StudioTab(generate=ui.generate)


# ---------------------------------------------------------------------------- layout
def layout_studio_tab(num_dirs: int) -> StudioLayout:
    """Create the Studio tab's components (no events) for ``num_dirs`` motion directions."""
    ui = StudioLayout(num_dirs=num_dirs)
    # Each browser session gets a deep copy of this value: a fresh Session (Session.__deepcopy__).
    ui.session = gr.State(st.Session(), time_to_live=3600, delete_callback=st.cleanup_session)
    with gr.Row(equal_height=False):
        with gr.Column(scale=6):
            _layout_inputs(ui)
        with gr.Column(scale=5):
            _layout_controls(ui)
    layout_editor(ui)
    return ui


def _layout_inputs(ui: StudioLayout) -> None:
    """Portrait (with the face crop) and speech, with the example galleries and the emotion plots."""
    with gr.Row():
        ui.portrait = gr.Image(label="Portrait", type="numpy", height=260, elem_id="float-portrait",
                               sources=["upload", "webcam", "clipboard"])
        ui.crop_view = gr.Image(label="Detected face", type="numpy", height=260,
                                interactive=False, buttons=[], elem_id="float-crop-box")
        ui.crop_image = gr.Image(label=f"{CROP_PREVIEW_SIZE}x{CROP_PREVIEW_SIZE} crop", type="numpy",
                                 height=260, interactive=False, buttons=[], elem_id="float-crop")
    ui.crop_info = gr.Markdown(label="Crop note", elem_id="float-crop-note")
    with gr.Row():
        ui.crop = gr.Checkbox(value=True, label="Crop to the face",
                              info="Detect the faces and crop around one; off: the whole image is resized.")
        ui.paste_back = gr.Checkbox(value=False, label="Paste back into the photo",
                                    info="Blend the animated face back into the original photo, in the "
                                         "video and the preview (needs the face crop).")
    with gr.Row():
        ui.face = gr.Dropdown([("Face 1 (largest)", 0)], value=0, label="Face", interactive=False,
                              info="Which detected face to animate (by size).", elem_id="float-face")
        ui.crop_scale = gr.Slider(*CROP_SCALE_RANGE, value=CROP_SCALE, step=0.05, label="Crop scale",
                                  info=f"Crop side in face-box sizes; {CROP_SCALE:g} as in FLOAT's reference.",
                                  elem_id="float-crop-scale")
    portraits, voices = gallery()
    if portraits:
        gr.Examples(portraits, inputs=[ui.portrait], label="Example portraits (examples/README.md)",
                    examples_per_page=8)
    limit = max_speech_seconds()
    ui.audio = gr.Audio(label="Speech" + (f" (up to {limit:g} s)" if limit else ""), type="filepath",
                        sources=["upload", "microphone"], elem_id="float-speech")
    if voices:
        gr.Examples(voices, inputs=[ui.audio], label="Example voices (examples/README.md)", examples_per_page=8)
    ui.emotion_plot = gr.Plot(label="What the model hears", elem_id="float-emotion-plot")
    ui.timeline_plot = gr.Plot(label="Emotion over time", elem_id="float-emotion-timeline")


def _layout_controls(ui: StudioLayout) -> None:
    """The sampling settings, Generate/Stop, the time estimate, the video and its summary."""
    ui.emotion = gr.Dropdown(st.EMOTION_CHOICES, value="auto", label="Emotion", elem_id="float-emotion",
                             info="Auto: the clip's speech-emotion mixture; Dynamic: each 2 s window with "
                                  "its own estimate; a name redirects the talking head to that emotion.")
    ui.e_cfg = gr.Slider(*st.E_CFG_RANGE, value=st.DEFAULTS.e_cfg, step=0.1, label="Emotion intensity (guidance γe)",
                         info="How strongly the emotion shapes the motion; 0 ignores it.")
    ui.a_cfg = gr.Slider(*st.A_CFG_RANGE, value=st.DEFAULTS.a_cfg, step=0.1, label="Audio guidance γa",
                         info="How closely lips and head follow the speech; higher is more pronounced.")
    with gr.Row():
        ui.nfe = gr.Slider(*st.NFE_RANGE, value=st.DEFAULTS.nfe, step=1, label="Steps (NFE)",
                           info="Vector-field evaluations per window: more is smoother and slower.",
                           elem_id="float-nfe")
        ui.solver = gr.Radio(list(SOLVER_NAMES), value=st.DEFAULTS.solver, label="ODE solver",
                             info="midpoint and rk4 evaluate 2 and 4 times per step.", elem_id="float-solver")
    with gr.Row(equal_height=True):
        ui.seed = gr.Number(value=0, precision=0, minimum=-1, maximum=st.MAX_SEED, label="Seed",
                            info="Same seed and settings, same motion; -1 draws one (written back here).",
                            scale=4, elem_id="float-seed")
        ui.randomize = gr.Button("Randomize", size="sm", scale=1, elem_id="float-randomize")
    ui.estimate = gr.Markdown(elem_id="float-estimate")  # how long Generate will take here
    ui.generate, ui.stop, ui.video = run_controls("Generate", "Talking portrait", "float", height=380)
    ui.summary = gr.Markdown(label="Summary", elem_id="float-summary")


def layout_editor(ui: SimpleNamespace, prefix: str = "float", preview_label: str = "Preview (edited frame)") -> None:
    """The motion editor's components into ``ui`` (which has ``num_dirs``): the ``preset`` and
    ``curves`` states, the preview, the frame scrubber, the presets, one slider per motion
    direction and the curve editor. Element ids start with ``prefix`` (the Studio's: "float")."""
    ui.preset = gr.State(None)
    ui.curves = gr.State([])
    gr.Markdown("### Edit the motion\nEach λ slider adds an offset along one direction of the "
                "orthonormal motion basis, in every frame; after a generation the sliders are grouped "
                "by what each direction moves in this portrait (hover a slider's note for the shares). "
                "Presets and curves edit over time. The preview re-decodes only the frame under the "
                "scrubber; **Apply to video** re-renders every frame from the cached motion, without "
                "sampling again.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            ui.preview = gr.Image(label=preview_label, type="numpy", format="png", height=300,
                                  interactive=False, elem_id=f"{prefix}-preview", elem_classes=["float-preview"])
            ui.frame = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False,
                                 info="Scrub through the clip; the preview shows this frame.",
                                 elem_id=f"{prefix}-frame")
            with gr.Row():
                ui.reset = gr.Button("Reset edits", size="sm", elem_id=f"{prefix}-reset")
                ui.apply = gr.Button("Apply to video", variant="primary", size="sm", elem_id=f"{prefix}-apply")
                ui.stop_apply = gr.Button("Stop", variant="stop", size="sm", elem_id=f"{prefix}-stop-apply")
        with gr.Column(scale=6):
            ui.lambda_plot = gr.Plot(label="Motion coefficients λ(t)", elem_id=f"{prefix}-lambda-plot")
    with gr.Row(elem_id=f"{prefix}-presets"):
        ui.preset_note = gr.Markdown("**Preset:** none", elem_id=f"{prefix}-preset-note")
        ui.preset_buttons = [gr.Button(name.capitalize(), size="sm",
                                       elem_id=f"{prefix}-preset-{name.replace(' ', '-')}") for name in h.PRESET_NAMES]
        ui.no_preset = gr.Button("No preset", size="sm", elem_id=f"{prefix}-preset-none")
    # The sliders stay in index order in the page (the API takes the offsets in that order);
    # CSS `order` classes on their cells, set after the directions are measured, show them
    # grouped, each group after its heading. (Each slider has its own Column: Gradio puts
    # neighbouring sliders into one form box, which could not be reordered.)
    with gr.Row(elem_classes="float-lambda-sliders", elem_id=f"{prefix}-lambda-sliders"):
        ui.headings = [gr.Markdown(f"#### {title}", visible=False, elem_classes=["float-group-title"],
                                   elem_id=f"{prefix}-group-{group}")
                       for group, title in plots.GROUP_TITLES.items()]
        ui.cells, ui.sliders = [], []
        for m in range(ui.num_dirs):
            with gr.Column(min_width=170, elem_classes=["float-lambda-cell"], elem_id=f"{prefix}-cell-{m + 1}") as cell:
                ui.sliders.append(gr.Slider(-1, 1, value=0, step=0.01, label=plots.direction_label(None, m),
                                            info=plots.direction_tooltip(None), interactive=False,
                                            elem_id=f"{prefix}-lambda-{m + 1}", elem_classes=["float-lambda"]))
            ui.cells.append(cell)
    _layout_curves(ui, prefix)


def _layout_curves(ui: SimpleNamespace, prefix: str) -> None:
    """The curve editor: edits that vary over time."""
    with gr.Accordion("Edits over time (curves)", open=False, elem_id=f"{prefix}-curves"):
        with gr.Row():
            ui.curve_dir = gr.Dropdown([(plots.direction_label(None, m), m + 1) for m in range(ui.num_dirs)],
                                       value=1, label="Direction", elem_id=f"{prefix}-curve-direction")
            ui.curve_kind = gr.Radio(list(UI_CURVE_KINDS), value="ramp", label="Shape",
                                     info="constant/pulse: the value on [start, end); ramp: 0 at start to the "
                                          "value at end, then held.")
            ui.curve_value = gr.Number(value=1.0, label="Value (λ offset)")
            ui.curve_start = gr.Number(value=0, precision=0, minimum=0, label="Start frame")
            ui.curve_end = gr.Number(value=None, precision=0, minimum=1, label="End frame (empty: clip end)")
        with gr.Row():
            ui.add_curve = gr.Button("Add curve", size="sm", elem_id=f"{prefix}-add-curve")
            ui.clear_curves = gr.Button("Clear curves", size="sm")
        ui.curve_list = gr.JSON(value=[], label=f"Curves (λ is 1-based; frames at {FPS} fps)",
                                elem_id=f"{prefix}-curve-list")


# ---------------------------------------------------------------------------- handlers
def slider_updates(gen: st.Generation, reset: bool = False) -> list[Any]:
    """Ranges from the motion; labels and notes from the measured directions."""
    out = []
    for m, r in enumerate(plots.slider_ranges(gen.lambdas)):
        info = gen.directions[m] if gen.directions else None
        extra: dict[str, Any] = dict(value=0) if reset else {}
        if info is not None:
            extra.update(label=plots.direction_label(info, m), info=plots.direction_tooltip(info))
        out.append(gr.update(minimum=-float(r), maximum=float(r), step=float(r) / 100, interactive=True, **extra))
    return out


def _cell_updates(gen: st.Generation) -> list[Any]:
    """Each slider cell's group and CSS order: after the headings of its own and the earlier
    groups (see _heading_updates)."""
    order = {m: i for i, m in enumerate(plots.grouped_order(gen.directions))}
    groups = list(plots.GROUP_TITLES)
    return [gr.update(elem_classes=["float-lambda-cell", f"float-group-{d.group}",
                                    f"float-order-{order[m] + groups.index(d.group) + 1}"])
            for m, d in enumerate(gen.directions)]


def _heading_updates(gen: st.Generation) -> list[Any]:
    """Group headings with their counts; heading i sits before its group's sliders."""
    if not gen.directions:
        return [gr.update(visible=False) for _ in plots.GROUP_TITLES]
    counts = {g: sum(d.group == g for d in gen.directions) for g in plots.GROUP_TITLES}
    out, pos = [], 0
    for group, title in plots.GROUP_TITLES.items():
        out.append(gr.update(value=f"#### {title} ({counts[group]})", visible=counts[group] > 0,
                             elem_classes=["float-group-title", f"float-order-{pos}"]))
        pos += counts[group] + 1
    return out


def _generation_seconds(sess: st.Session, **_: Any) -> float:
    """Seconds of video of the session's current generation (the work of a re-render)."""
    return sess.current.num_frames / FPS if sess.current is not None else 0.0


def studio_handlers(holder: PipelineHolder, num_dirs: int, num_headings: int) -> SimpleNamespace:
    """The Studio tab's event handlers (``on_*``), as closures over the pipeline holder.

    Those that run the model are wrapped in :func:`~float_studio.gpu.gpu_handler`, sized from
    the speech (analysis, generation), the frames to decode (directions, preview) or the clip
    (re-render). Their arguments and results pickle (ZeroGPU runs them in a worker process):
    the session goes back as an output wherever they change it.
    """
    def apply(holder_: PipelineHolder, sess: st.Session, edits: h.Edits, paste: bool,
              report: ProgressCallback) -> tuple[str, str]:
        rendered = h.apply_edits(holder_, sess, edits, paste, report)
        for w in rendered.warnings:
            gr.Warning(w)
        return rendered.path, h.summary_markdown(rendered.generation, rendered.seconds, True, holder_.get().config.fps)

    fn = editor_handlers(holder, num_dirs, num_headings, preview=h.preview, apply=apply)
    fn.__dict__.update(vars(_studio_handlers(holder)))
    speech = lambda speech, **_: limited_speech_seconds(speech)  # noqa: E731

    @gpu_handler(holder.speed, speech)
    @ui_errors
    def on_analyze(sess: st.Session, speech: str | None, emo: str,
                   progress: gr.Progress = gr.Progress()) -> tuple[Any, Any]:
        """Analyse the speech (cached per session); returns the emotion plot and the timeline."""
        view = h.analyze(holder, sess, speech, emo, progress_bar(progress, {"speech": (0.0, 1.0)}))
        return (None, None) if view is None else (view.bars, view.timeline)

    @gpu_handler(holder.speed, speech)
    @ui_errors
    def on_generate(sess: st.Session, image: np.ndarray | None, speech: str | None, crop_on: bool,
                    paste: bool, a: float, e: float, steps: float, solver_name: str, emo: str,
                    seed_value: float, face: int = 0, crop_scale: float = CROP_SCALE,
                    progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        """Analyse (cached), sample motion (cached per settings), render; streams the seed and
        the emotion plots as soon as the speech is analysed."""
        sampling = st.sampling_from_ui(a, e, steps, solver_name, emo, seed_value)
        report = progress_bar(progress, h.GENERATE_SPANS)
        skip = gr.skip()
        estimate = h.generation_estimate(holder, speech, sampling.nfe)
        steps_iter = h.generate(holder, sess, image, speech, crop_on, sampling, int(face or 0), crop_scale, report)
        analysed = next(steps_iter)
        if analysed.message:
            gr.Info(analysed.message)
        yield (skip, f"Speech analysed; sampling the motion… {estimate}", sampling.seed, sess, skip, skip, skip,
               analysed.emotion.bars, analysed.emotion.timeline, *[skip] * num_dirs)
        gen = next(steps_iter)
        rendered = h.render_video(holder, sess, None, paste, report, generation=gen)
        for w in rendered.warnings:
            gr.Warning(w)
        fps = holder.get().config.fps
        yield (
            rendered.path, h.summary_markdown(gen, rendered.seconds, False, fps), sampling.seed, sess,
            gr.update(minimum=0, maximum=max(gen.num_frames - 1, 1), value=0, interactive=True),
            h.preview(holder, sess, 0, h.Edits(np.zeros(num_dirs, np.float32)), paste),
            plots.lambda_figure(gen.lambdas, fps, 0, directions=gen.directions),
            analysed.emotion.bars, analysed.emotion.timeline,
            *slider_updates(gen, reset=True),
        )

    fn.on_analyze, fn.on_generate = on_analyze, on_generate
    return fn


def _studio_handlers(holder: PipelineHolder) -> SimpleNamespace:
    """The Studio's handlers that do not run the model: status, crop preview, emotion plots, estimate."""

    @ui_errors
    def on_status() -> str:
        """The model banner: the loaded model's size and device, or what is missing and where."""
        return holder.status_markdown()

    @ui_errors
    def on_crop_preview(image: np.ndarray | None, crop_on: bool, face_index: Any,
                        scale: float) -> tuple[Any, Any, str, Any]:
        """The photo with the crop square, the crop the model animates, a note and the face choice."""
        out = h.crop_preview(image, crop_on, CROP_PREVIEW_SIZE, int(face_index or 0), scale)
        choices = [(label, i) for i, label in enumerate(out.faces)] or [("Face 1 (largest)", 0)]
        chosen = int(face_index or 0) if int(face_index or 0) < len(choices) else 0
        return (out.boxed, out.crop, out.note,
                gr.update(choices=choices, value=chosen, interactive=len(out.faces) > 1))

    @ui_errors
    def on_emotion_change(sess: st.Session, emo: str) -> tuple[Any, Any]:
        if sess.speech is None:
            return gr.skip(), gr.skip()
        view = h.emotion_view(holder.get(), sess.speech, emo)
        return view.bars, view.timeline

    def on_estimate(speech: str | None, steps: float) -> str:
        """How long generating this speech takes here (measured throughput), before Generate."""
        return h.generation_estimate(holder, speech, int(steps or st.DEFAULTS.nfe))

    return SimpleNamespace(on_status=on_status, on_crop_preview=on_crop_preview, on_emotion_change=on_emotion_change,
                           on_estimate=on_estimate)


#: ``preview(holder, session, frame, edits, paste_back)``: the edited frame, or None when stale.
PreviewFn = Callable[[PipelineHolder, st.Session, Any, h.Edits, bool], Any]
#: ``apply(holder, session, edits, paste_back, progress)``: (video path, summary Markdown).
ApplyFn = Callable[[PipelineHolder, st.Session, h.Edits, bool, ProgressCallback], tuple[str, str]]


def editor_handlers(holder: PipelineHolder, num_dirs: int, num_headings: int, *, preview: PreviewFn,
                    apply: ApplyFn) -> SimpleNamespace:
    """The motion editor's handlers for a tab whose session holds a
    :class:`~float_studio.state.Generation`: ``on_describe``, ``on_preview`` (``preview`` decodes
    the scrubbed frame) and ``on_apply`` (``apply`` re-renders) run the model, inside GPU
    requests sized from the frames they decode; ``on_plot``, ``on_reset``, the presets, the
    curves and ``on_stop`` do not."""

    @gpu_handler(holder.speed, (2 * num_dirs + 1) / FPS)  # the source +- a step per direction
    @ui_errors
    def on_describe(sess: st.Session, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Measure what each direction moves in this portrait; label and group the sliders."""
        gen = h.describe_directions(holder, sess, progress_bar(progress, {"directions": (0.0, 1.0)}))
        if gen is None:
            return (*[gr.skip()] * (2 * num_dirs + num_headings + 2), sess)
        choices = [(plots.direction_label(gen.directions[m], m), m + 1) for m in range(num_dirs)]
        return (*slider_updates(gen), *_cell_updates(gen), *_heading_updates(gen), gr.update(choices=choices),
                plots.lambda_figure(gen.lambdas, holder.get().config.fps, 0, directions=gen.directions), sess)

    @gpu_handler(holder.speed, 1 / FPS)
    @ui_errors
    def on_preview(sess: st.Session, preset_name: str | None, curve_rows: list[dict], index: float,
                   paste: bool, *values: float) -> Any:
        """Decode one frame (the scrubbed one) with the edits; no re-encoding or sampling."""
        frame_png = preview(holder, sess, index, _edits(preset_name, curve_rows, values, num_dirs), paste)
        return gr.skip() if frame_png is None else frame_png

    @gpu_handler(holder.speed, _generation_seconds)
    @ui_errors
    def on_apply(sess: st.Session, preset_name: str | None, curve_rows: list[dict], paste: bool, *values: float,
                 progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Re-render every frame from the cached motion plus the edits (no re-sampling)."""
        edits = _edits(preset_name, curve_rows, values, num_dirs)
        path, text = apply(holder, sess, edits, paste, progress_bar(progress, h.RENDER_SPANS))
        return path, text, sess

    @ui_errors
    def on_plot(sess: st.Session, preset_name: str | None, curve_rows: list[dict], index: float,
                *values: float) -> Any:
        gen = sess.current
        if gen is None:
            return gr.skip()
        offsets = h.edit_offsets(gen, _edits(preset_name, curve_rows, values, num_dirs))
        fps = holder.get().config.fps
        return plots.lambda_figure(gen.lambdas, fps, int(index or 0), offsets, directions=gen.directions)

    def on_reset() -> tuple[Any, ...]:
        return (None, [], [], "**Preset:** none", *[0.0] * num_dirs)

    @ui_errors
    def on_set_preset(name: str) -> tuple[Any, str]:
        """Choose a motion preset ("lips only", "calmer head", "more expressive" or "none")."""
        key = str(name or "none").strip().lower()
        if key != "none" and key not in h.PRESET_NAMES:
            raise ValueError(f"preset: expected 'none' or one of {', '.join(h.PRESET_NAMES)}, got {name!r}")
        return preset_setter(None if key == "none" else key)()

    @ui_errors
    def on_add_curve(rows: list[dict], direction: int, kind: str, value: float, start: float,
                     end: float | None) -> tuple[list[dict], list[dict]]:
        row = {"direction": int(direction or 1), "kind": kind, "value": value, "start": int(start or 0),
               "end": None if end in (None, "") else int(end)}
        new = [*(rows or []), row]
        h.curves_from_rows(new)  # validate now, with a message naming the curve
        return new, new

    @ui_errors
    def on_edit_curves(curves_json: str) -> tuple[list[dict], list[dict]]:
        """Replace the edit curves: a JSON list of {direction (1-based), kind, value, start, end}."""
        rows = json.loads(curves_json or "[]")
        if not isinstance(rows, list):
            raise ValueError("curves: expected a JSON list of objects")
        h.curves_from_rows(rows)
        return rows, rows

    def on_stop(sess: st.Session) -> None:
        h.stop(sess)

    return SimpleNamespace(on_describe=on_describe, on_preview=on_preview, on_apply=on_apply, on_plot=on_plot,
                           on_reset=on_reset, on_set_preset=on_set_preset, on_add_curve=on_add_curve,
                           on_edit_curves=on_edit_curves, on_stop=on_stop)


def preset_setter(name: str | None) -> Callable[[], tuple[Any, str]]:
    """A handler that sets the motion preset ``name`` (None: no preset) and its note."""
    def set_preset() -> tuple[Any, str]:
        return name, f"**Preset:** {name or 'none'}"

    set_preset.__name__ = f"set_preset_{(name or 'none').replace(' ', '_')}"
    return set_preset


# ---------------------------------------------------------------------------- wiring
def wire_studio_tab(ui: StudioLayout, fn: SimpleNamespace) -> None:
    """Connect the Studio tab's components to its handlers (and name the API endpoints)."""
    gr.api(fn.on_status, api_name="status", queue=False)
    gr.on([ui.portrait.change, ui.crop.change, ui.face.input, ui.crop_scale.release], fn.on_crop_preview,
          [ui.portrait, ui.crop, ui.face, ui.crop_scale], [ui.crop_view, ui.crop_image, ui.crop_info, ui.face],
          api_name="crop_preview", trigger_mode="always_last", show_progress="minimal")
    analyze_event = ui.audio.change(fn.on_analyze, [ui.session, ui.audio, ui.emotion],
                                    [ui.emotion_plot, ui.timeline_plot], api_name="analyze",
                                    trigger_mode="always_last", concurrency_limit=1, concurrency_id="analysis")
    gr.on([ui.audio.change, ui.nfe.release], fn.on_estimate, [ui.audio, ui.nfe], ui.estimate,
          api_visibility="private", show_progress="hidden", queue=False)
    ui.emotion.change(fn.on_emotion_change, [ui.session, ui.emotion], [ui.emotion_plot, ui.timeline_plot],
                      api_visibility="private", show_progress="hidden")
    ui.randomize.click(st.random_seed, None, ui.seed, api_visibility="private", show_progress="hidden")
    generate_event = ui.generate.click(
        fn.on_generate,
        [ui.session, ui.portrait, ui.audio, ui.crop, ui.paste_back, ui.a_cfg, ui.e_cfg, ui.nfe, ui.solver,
         ui.emotion, ui.seed, ui.face, ui.crop_scale],
        [ui.video, ui.summary, ui.seed, ui.session, ui.frame, ui.preview, ui.lambda_plot, ui.emotion_plot,
         ui.timeline_plot, *ui.sliders],
        api_name="generate", concurrency_limit=1, concurrency_id="render", show_progress_on=[ui.video],
    )
    generate_event.then(fn.on_estimate, [ui.audio, ui.nfe], ui.estimate, api_visibility="private",
                        show_progress="hidden", queue=False)  # now measured on this machine
    describe_event = describe_after(ui, fn, generate_event)
    apply_event = wire_editor(ui, fn)
    for button in (ui.stop, ui.stop_apply):
        button.click(fn.on_stop, [ui.session], None, queue=False, api_visibility="private",
                     cancels=[generate_event, describe_event, apply_event, analyze_event])


def _api(name: str, api: bool) -> dict[str, Any]:
    """An event's API name when the tab's editor is public, else private."""
    return dict(api_name=name) if api else dict(api_visibility="private")


def describe_after(ui: SimpleNamespace, fn: SimpleNamespace, event: Any, api: bool = True) -> Any:
    """Measure the directions (label and group the sliders) once ``event`` succeeded; the event."""
    return event.success(fn.on_describe, [ui.session],
                         [*ui.sliders, *ui.cells, *ui.headings, ui.curve_dir, ui.lambda_plot, ui.session],
                         **_api("describe_directions", api), concurrency_limit=1, concurrency_id="render",
                         show_progress="minimal")


def wire_editor(ui: SimpleNamespace, fn: SimpleNamespace, api: bool = True) -> Any:
    """Sliders, scrubber, presets and curves: each change re-decodes the preview frame and re-plots
    λ(t); **Apply to video** re-renders into ``ui.video`` and ``ui.summary`` (returns that event).
    ``api``: the Studio's public endpoints (/preview, /set_preset, /edit_curves, /apply_edits);
    otherwise every event is private."""
    edit_inputs = [ui.session, ui.preset, ui.curves]
    gr.on([s.input for s in ui.sliders] + [ui.frame.input], fn.on_preview,
          [*edit_inputs, ui.frame, ui.paste_back, *ui.sliders], ui.preview, **_api("preview", api),
          trigger_mode="always_last", show_progress="hidden", concurrency_limit=2, concurrency_id="preview")
    gr.on([s.release for s in ui.sliders] + [ui.frame.release], fn.on_plot, [*edit_inputs, ui.frame, *ui.sliders],
          ui.lambda_plot, api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    after_edit = dict(fn=fn.on_preview, inputs=[*edit_inputs, ui.frame, ui.paste_back, *ui.sliders],
                      outputs=ui.preview, api_visibility="private", show_progress="hidden")
    plot_after = dict(fn=fn.on_plot, inputs=[*edit_inputs, ui.frame, *ui.sliders], outputs=ui.lambda_plot,
                      api_visibility="private", show_progress="hidden")
    for name, button in [*zip(h.PRESET_NAMES, ui.preset_buttons), (None, ui.no_preset)]:
        button.click(preset_setter(name), None, [ui.preset, ui.preset_note], api_visibility="private",
                     show_progress="hidden").then(**after_edit).then(**plot_after)
    if api:  # hidden inputs that give gradio_client users the presets and curves
        set_preset_api = gr.Textbox(visible=False)
        set_preset_api.submit(fn.on_set_preset, set_preset_api, [ui.preset, ui.preset_note], api_name="set_preset")
        curves_api = gr.Textbox(visible=False)
        curves_api.submit(fn.on_edit_curves, curves_api, [ui.curves, ui.curve_list], api_name="edit_curves")
    ui.add_curve.click(fn.on_add_curve, [ui.curves, ui.curve_dir, ui.curve_kind, ui.curve_value, ui.curve_start,
                                         ui.curve_end], [ui.curves, ui.curve_list],
                       api_visibility="private").then(**after_edit).then(**plot_after)
    ui.clear_curves.click(lambda: ([], []), None, [ui.curves, ui.curve_list], api_visibility="private").then(
        **after_edit).then(**plot_after)
    ui.paste_back.change(**after_edit)
    ui.reset.click(fn.on_reset, None, [ui.preset, ui.curves, ui.curve_list, ui.preset_note, *ui.sliders],
                   api_visibility="private", show_progress="hidden").then(**after_edit).then(**plot_after)
    return ui.apply.click(fn.on_apply, [ui.session, ui.preset, ui.curves, ui.paste_back, *ui.sliders],
                          [ui.video, ui.summary, ui.session], **_api("apply_edits", api), concurrency_limit=1,
                          concurrency_id="render", show_progress_on=[ui.video])
