"""The Studio tab of FLOAT Studio: portrait + speech -> video, live motion controls.

Layout and wiring only; the logic is in :mod:`float_studio.state` and :mod:`float_studio.plots`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import gradio as gr
import numpy as np

from float_core.config import FloatConfig

from . import plots
from . import state as st

try:  # Hugging Face ZeroGPU; everywhere else a no-op decorator
    import spaces  # type: ignore[import-not-found]

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the host
    def gpu(fn: Any = None, **_: Any) -> Any:
        """Stand-in for ``spaces.GPU``: usable as ``@gpu`` and ``@gpu(duration=...)``."""
        return fn if callable(fn) else (lambda f: f)

log = logging.getLogger("float_studio")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: The size of the crop shown next to the portrait (the released model's input size).
CROP_PREVIEW_SIZE = FloatConfig.official().image_size
F = TypeVar("F", bound=Callable[..., Any])


def _as_gr_error(fn_name: str, exc: Exception) -> gr.Error:
    log.exception("%s failed", fn_name)
    return gr.Error(st.user_message(exc), print_exception=False)


def ui_errors(fn: F) -> F:
    """Turn any exception into a ``gr.Error`` toast with a readable message (never a traceback).

    Works for plain and generator functions (the wrapper keeps the kind, so Gradio still
    streams the generator's updates and still injects ``gr.Progress``).
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - the UI boundary
                raise _as_gr_error(fn.__name__, exc) from None

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the UI boundary
            raise _as_gr_error(fn.__name__, exc) from None

    return wrapper  # type: ignore[return-value]


def example_inputs() -> list[list[str]]:
    """The shipped [portrait, speech] pair from examples/, when the files are there."""
    speech = EXAMPLES / "arctic_a0007.wav"
    portrait = EXAMPLES / "portrait_astronaut.png"
    return [[str(portrait), str(speech)]] if portrait.is_file() and speech.is_file() else []




@dataclass
class StudioTab:
    """The components of the Studio tab that ``app.py`` wires to app-level events."""

    generate: gr.Button


def build_studio_tab(holder: st.PipelineHolder) -> StudioTab:
    """Lay out the Studio tab (inside ``with gr.Tab("Studio"):``) and wire its events.

    Every per-user value lives in the ``gr.State`` :class:`~float_studio.state.Session`.
    """
    # Only the slider count is needed before the model loads; every other size is read from
    # the loaded pipeline when an event runs.
    num_dirs = holder.get().config.motion_dim if holder.loaded else FloatConfig.official().motion_dim
    session = gr.State(st.Session(), time_to_live=3600, delete_callback=st.cleanup_session)

    with gr.Row(equal_height=False):
        # ------------------------------------------------------------ inputs
        with gr.Column(scale=6):
            with gr.Row():
                portrait = gr.Image(label="Portrait", type="numpy", height=260, elem_id="float-portrait",
                                    sources=["upload", "webcam", "clipboard"])
                crop_view = gr.Image(label="Detected face", type="numpy", height=260,
                                     interactive=False, buttons=[], elem_id="float-crop-box")
                crop_image = gr.Image(label=f"{CROP_PREVIEW_SIZE}x{CROP_PREVIEW_SIZE} crop", type="numpy",
                                      height=260, interactive=False, buttons=[], elem_id="float-crop")
            crop_info = gr.Markdown(label="Crop note")
            with gr.Row():
                crop = gr.Checkbox(value=True, label="Crop to the face",
                                   info="Detect the largest face and crop around it; off: the whole "
                                        "image is resized.")
                paste_back = gr.Checkbox(value=False, label="Paste back into the photo",
                                         info="Blend the animated face back into the original photo "
                                              "(needs the face crop).")
            audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                             elem_id="float-speech")
            emotion_plot = gr.Plot(label="What the model hears", elem_id="float-emotion-plot")
            examples = example_inputs()
            if examples:
                gr.Examples(examples, inputs=[portrait, audio], label="Example: portrait and speech")

        # ------------------------------------------------------------ controls + result
        with gr.Column(scale=5):
            emotion = gr.Dropdown(st.EMOTION_CHOICES, value="auto", label="Emotion",
                                  info="Auto (from speech) uses the emotion the speech classifier "
                                       "hears; a name redirects the talking head to that emotion.")
            e_cfg = gr.Slider(*st.E_CFG_RANGE, value=st.E_CFG_DEFAULT, step=0.1,
                              label="Emotion intensity (guidance γe)",
                              info="How strongly the emotion shapes the motion; 0 ignores it.")
            a_cfg = gr.Slider(*st.A_CFG_RANGE, value=st.A_CFG_DEFAULT, step=0.1,
                              label="Audio guidance γa",
                              info="How closely lips and head follow the speech; higher is "
                                   "more pronounced.")
            with gr.Row():
                nfe = gr.Slider(*st.NFE_RANGE, value=st.NFE_DEFAULT, step=1, label="Steps (NFE)",
                                info="Vector-field evaluations per window: more is smoother and slower.")
                solver = gr.Radio(list(st.SOLVER_CHOICES), value="euler", label="ODE solver",
                                  info="midpoint and rk4 evaluate 2 and 4 times per step.")
            with gr.Row(equal_height=True):
                seed = gr.Number(value=0, precision=0, minimum=-1, maximum=st.MAX_SEED, label="Seed",
                                 info="Same seed and settings, same motion; -1 draws one.", scale=4)
                randomize = gr.Button("🎲 Randomize", size="sm", scale=1, elem_id="float-randomize")
            generate = gr.Button("Generate", variant="primary", elem_id="float-generate")
            video = gr.Video(label="Talking portrait", height=380, autoplay=True, interactive=False,
                             buttons=["download"], elem_id="float-video")
            summary = gr.Markdown(label="Summary", elem_id="float-summary")

    # ---------------------------------------------------------------- motion editing
    gr.Markdown("### Edit the motion\nEach λ slider adds an offset along one direction of the "
                "orthonormal motion basis, in every frame. Dragging re-decodes only the frame "
                "under the scrubber; **Apply to video** re-renders every frame from the cached "
                "motion, without sampling again.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            preview = gr.Image(label="Preview (edited frame)", type="numpy", format="png", height=300,
                               interactive=False, elem_id="float-preview")
            frame = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False,
                              info="Scrub through the clip; the preview shows this frame.",
                              elem_id="float-frame")
            with gr.Row():
                reset = gr.Button("Reset sliders", size="sm")
                apply = gr.Button("Apply to video", variant="primary", size="sm", elem_id="float-apply")
        with gr.Column(scale=6):
            lambda_plot = gr.Plot(label="Motion coefficients λ(t)", elem_id="float-lambda-plot")
    sliders: list[gr.Slider] = []
    with gr.Group(elem_classes="float-lambda-sliders"):
        for row in range(0, num_dirs, 5):
            with gr.Row():
                for m in range(row, min(row + 5, num_dirs)):
                    sliders.append(gr.Slider(-1, 1, value=0, step=0.01, label=f"λ{m + 1}",
                                             interactive=False, min_width=120,
                                             elem_id=f"float-lambda-{m + 1}"))

    # ---------------------------------------------------------------- handlers
    def offsets_of(values: tuple[Any, ...]) -> np.ndarray:
        return st.offsets_array(values, num_dirs)

    @ui_errors
    def on_status() -> str:
        """The model banner: the loaded model's size and device, or what is missing and where."""
        return holder.status_markdown()

    @ui_errors
    def on_crop_preview(image: np.ndarray | None, crop_on: bool) -> tuple[Any, Any, str]:
        """The photo with the detected face box, the crop the model animates, and a note."""
        return st.crop_preview(image, crop_on, CROP_PREVIEW_SIZE)

    @gpu(duration=60)
    @ui_errors
    def on_analyze(sess: st.Session, speech: str | None, emo: str,
                   progress: gr.Progress = gr.Progress()) -> tuple[Any, st.Session]:
        """Analyse the speech (cached per session); returns the emotion probability plot."""
        if not speech:
            return None, sess
        analysed = st.analyse_speech_cached(holder.get(), sess, speech, st.max_audio_seconds(),
                                            lambda f, d: progress(f, desc=d))
        return plots.emotion_figure(analysed.emotion_probs.float().cpu().numpy(), emo), sess

    @ui_errors
    def on_emotion_change(sess: st.Session, emo: str) -> Any:
        if sess.speech is None:
            return gr.skip()
        return plots.emotion_figure(sess.speech.emotion_probs.float().cpu().numpy(), emo)

    @gpu(duration=120)
    @ui_errors
    def on_generate(sess: st.Session, image: np.ndarray | None, speech: str | None, crop_on: bool,
                    paste: bool, a: float, e: float, steps: float, solver_name: str, emo: str,
                    seed_value: float, progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        """Analyse (cached), sample motion (cached per settings), render; streams the emotion
        plot as soon as the speech is analysed."""
        pipe = holder.get()
        settings = st.SamplingSettings.from_ui(a, e, steps, solver_name, emo, seed_value)
        report = lambda f, d: progress(f, desc=d)  # noqa: E731
        t0 = time.perf_counter()
        prepared = st.prepare_cached(pipe, sess, image, speech, crop_on, st.max_audio_seconds(), report)
        if prepared.source.message:
            gr.Info(prepared.source.message)
        emotion_fig = plots.emotion_figure(prepared.speech.emotion_probs.float().cpu().numpy(),
                                        settings.emotion)
        skip = gr.skip()
        yield (skip, "Speech analysed; sampling the motion…", sess, skip, skip, skip, emotion_fig,
               *[skip] * num_dirs)
        st.sample_cached(pipe, sess, settings, report)
        path, warnings = st.render_video(pipe, sess, None, paste, report)
        for w in warnings:
            gr.Warning(w)
        ranges = plots.slider_ranges(sess.lambdas)
        fps = pipe.config.fps
        yield (
            str(path), st.summary_markdown(sess, time.perf_counter() - t0, False, fps), sess,
            gr.update(minimum=0, maximum=max(sess.num_frames - 1, 1), value=0, interactive=True),
            st.preview_frame(pipe, sess, 0, None),
            plots.lambda_figure(sess.lambdas, fps, 0),
            emotion_fig,
            *[gr.update(minimum=-float(r), maximum=float(r), step=float(r) / 100, value=0,
                        interactive=True) for r in ranges],
        )

    @gpu(duration=20)
    @ui_errors
    def on_preview(sess: st.Session, index: float, *values: float) -> np.ndarray:
        """Decode one frame (the scrubbed one) with the λ offsets; no re-encoding or sampling."""
        return st.preview_frame(holder.get(), sess, index, offsets_of(values))

    @ui_errors
    def on_plot(sess: st.Session, index: float, *values: float) -> Any:
        if sess.lambdas is None:
            return gr.skip()
        return plots.lambda_figure(sess.lambdas, holder.get().config.fps, int(index or 0), offsets_of(values))

    @gpu(duration=20)
    @ui_errors
    def on_reset(sess: st.Session, index: float) -> tuple[Any, ...]:
        zeros = np.zeros(num_dirs, dtype=np.float32)
        if sess.motion is None:
            return (gr.skip(), gr.skip(), *[0.0] * num_dirs)
        pipe = holder.get()
        return (st.preview_frame(pipe, sess, index, zeros),
                plots.lambda_figure(sess.lambdas, pipe.config.fps, int(index or 0)), *[0.0] * num_dirs)

    @gpu(duration=120)
    @ui_errors
    def on_apply(sess: st.Session, paste: bool, *values: float,
                 progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Re-render every frame from the cached motion plus the λ offsets (no re-sampling)."""
        pipe = holder.get()
        t0 = time.perf_counter()
        path, warnings = st.render_video(pipe, sess, offsets_of(values), paste,
                                         lambda f, d: progress(f, desc=d))
        for w in warnings:
            gr.Warning(w)
        return str(path), st.summary_markdown(sess, time.perf_counter() - t0, True, pipe.config.fps), sess

    # ---------------------------------------------------------------- wiring
    gr.api(on_status, api_name="status", queue=False)
    gr.on([portrait.change, crop.change], on_crop_preview, [portrait, crop],
          [crop_view, crop_image, crop_info], api_name="crop_preview", trigger_mode="always_last",
          show_progress="minimal")
    audio.change(on_analyze, [session, audio, emotion], [emotion_plot, session], api_name="analyze",
                 trigger_mode="always_last", concurrency_limit=1, concurrency_id="analysis")
    emotion.change(on_emotion_change, [session, emotion], emotion_plot, api_visibility="private",
                   show_progress="hidden")
    randomize.click(st.random_seed, None, seed, api_visibility="private", show_progress="hidden")
    generate.click(
        on_generate,
        [session, portrait, audio, crop, paste_back, a_cfg, e_cfg, nfe, solver, emotion, seed],
        [video, summary, session, frame, preview, lambda_plot, emotion_plot, *sliders],
        api_name="generate", concurrency_limit=1, concurrency_id="render",
    )
    gr.on([s.input for s in sliders] + [frame.input], on_preview, [session, frame, *sliders], preview,
          api_name="preview", trigger_mode="always_last", show_progress="hidden",
          concurrency_limit=2, concurrency_id="preview")
    gr.on([s.release for s in sliders] + [frame.release], on_plot, [session, frame, *sliders],
          lambda_plot, api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    reset.click(on_reset, [session, frame], [preview, lambda_plot, *sliders], api_visibility="private",
                show_progress="hidden")
    apply.click(on_apply, [session, paste_back, *sliders], [video, summary, session],
                api_name="apply_edits", concurrency_limit=1, concurrency_id="render")
    return StudioTab(generate=generate)
