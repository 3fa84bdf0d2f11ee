"""The Conversation tab of FLOAT Studio: two to four portraits in one video, each speaking its
own part and listening (silence mode) while the others talk.

Speech is a script ("Name: line" per line, a voice per character, :mod:`float_core.tts`) or
one recording per portrait. The engine is :meth:`~float_core.pipeline.FloatPipeline.converse`;
:func:`run_conversation` is the tab's logic as a plain function (testable without a server)
and :func:`build_conversation_tab` lays the tab out and wires it (gradio_client endpoint
``/converse``). Stop ends the work at its next step and leaves no video behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence


from float_core.config import DEFAULT_GAP, LAYOUTS
from float_core.progress import ProgressCallback, silent

from . import limits, plots
from . import state as st
from .gpu import gpu_handler
from .model import PipelineHolder

if TYPE_CHECKING:
    from float_core.conversation import ConversationResult

__all__ = ["CONVERSE_SPANS", "ConversationView", "MAX_CHARACTERS", "MODES", "build_conversation_tab",
           "estimated_seconds", "run_conversation", "video_seconds", "tts_note"]

#: The app animates at most this many characters (the engine takes any number).
MAX_CHARACTERS = 4
MODES = ("Script", "Audio per character")
DEFAULT_NAMES = ("Ana", "Ben", "Cy", "Dee")
DEFAULT_SCRIPT = ("Ana: Hello Ben! Have you seen the new talking portraits?\n"
                  "Ben: I have. They even listen while we talk.")
#: Where each stage of a conversation sits on the one progress bar.
CONVERSE_SPANS: dict[str, tuple[float, float]] = {
    "portraits": (0.0, 0.05), "voices": (0.05, 0.15), "speech": (0.15, 0.2), "sampling": (0.2, 0.55),
    "rendering": (0.55, 1.0)}
@dataclass(frozen=True)
class ConversationView:
    """What the tab shows after a conversation: the video, the timeline plot, a summary."""

    path: str
    timeline: Any  #: plotly figure (plots.speaking_timeline_figure)
    summary: str
    result: "ConversationResult"


def _count(count: Any) -> int:
    try:
        n = int(float(count))
    except (TypeError, ValueError):
        raise ValueError(f"Characters: expected a number from 2 to {MAX_CHARACTERS}, got {count!r}") from None
    if n > MAX_CHARACTERS:
        raise ValueError(f"The app animates at most {MAX_CHARACTERS} characters (got {n}); the Python API "
                         f"(FloatPipeline.converse) and the command line take any number.")
    if n < 2:
        raise ValueError(f"A conversation needs at least 2 characters (got {n}).")
    return n


def _names(names: Sequence[Any], count: int) -> list[str]:
    return [str(names[i]).strip() if i < len(names) and names[i] and str(names[i]).strip() else DEFAULT_NAMES[i]
            for i in range(count)]


def estimated_seconds(mode: str, script: str | None, audios: Sequence[str | None]) -> float:
    """The conversation's length before it is made, as an upper bound: a script's lines at the
    slowest voice's rate plus its gaps and pauses (:mod:`float_studio.limits`), or the longest
    recording (from the files' headers)."""
    if mode == MODES[0]:
        from float_core.conversation import Pause, Script, ScriptError

        try:
            parsed = Script.parse(script or "")
        except ScriptError:
            return 0.0
        spoken = sum(limits.estimate_text_seconds(line.text, limits.SLOWEST_CHARS_PER_SECOND) for line in parsed.lines)
        pauses = sum(item.seconds for item in parsed.items if isinstance(item, Pause))
        return spoken + pauses + DEFAULT_GAP * len(parsed.lines)
    return max((limits.speech_seconds(path) for path in audios if path), default=0.0)


def video_seconds(count: Any, mode: str, script: str | None, audios: Sequence[str | None]) -> float:
    """Seconds of video the model makes for a conversation (each character's, together): what
    its GPU request is sized from (:func:`float_studio.gpu.gpu_handler`), within the limit."""
    try:
        n = min(max(int(float(count)), 1), MAX_CHARACTERS)
    except (TypeError, ValueError):
        n = 2
    seconds, limit = estimated_seconds(mode, script, audios), limits.max_speech_seconds()
    return n * (seconds if limit is None else min(seconds, limit))


def run_conversation(holder: PipelineHolder, sess: st.Session, count: Any, portraits: Sequence[Any],
                     names: Sequence[Any], mode: str, script: str | None, voices: Sequence[Any],
                     audios: Sequence[str | None], layout: str, captions: bool, crop: bool,
                     sampling: Any, progress: ProgressCallback = silent) -> ConversationView:
    """Make the conversation video of the first ``count`` character slots.

    Args:
        portraits, names, voices, audios: one per slot (the tab has :data:`MAX_CHARACTERS`);
            an empty name takes the default, an empty voice the engine's default voice, a
            missing recording (audio mode) makes that character a listener.
        mode: "Script" (``script`` spoken by ``voices``) or "Audio per character".
        sampling: a :class:`~float_core.config.SamplingConfig` with a concrete seed.

    Raises:
        ValueError: too many or too few characters, a missing portrait, a bad script or voice,
            no speech at all, too long (``FLOAT_MAX_SECONDS``), a portrait without a face.
        float_studio.state.Cancelled: Stop was pressed (no video is left behind).
    """
    n = _count(count)
    if mode not in MODES:
        raise ValueError(f"Speech: expected one of {', '.join(MODES)}, got {mode!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"Layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    images = list(portraits[:n]) + [None] * max(0, n - len(portraits))
    missing = [str(i + 1) for i, image in enumerate(images) if image is None]
    if missing:
        raise ValueError(f"Add a portrait for character {', '.join(missing)} (upload or an example).")
    who = _names(names, n)
    speech: Any
    chosen: dict[str, str] | None = None
    if mode == MODES[0]:
        from float_core.conversation import Script

        speech = Script.parse(script or "")
        limits.check_text(" ".join(line.text for line in speech.lines))  # refused before any synthesis
        chosen = {who[i]: str(voices[i]).strip() for i in range(min(n, len(voices)))
                  if voices[i] and str(voices[i]).strip()}
    else:
        speech = [audios[i] if i < len(audios) and audios[i] else None for i in range(n)]
        if all(a is None for a in speech):
            raise ValueError("Add a recording for at least one character (the others listen), or use a script.")
    pipe = holder.get()
    path = sess.new_video_path(f"conversation_seed{sampling.seed}")
    with sess.action() as stop_event:
        result = pipe.converse(images, speech, path, names=who, layout=layout, sampling=sampling,
                               progress=st.cancellable(progress, stop_event), voices=chosen, captions=bool(captions),
                               crop=bool(crop), max_seconds=limits.max_speech_seconds())
    sess.video_path = str(path)
    fps = pipe.config.fps
    figure = plots.speaking_timeline_figure(result.names, result.speaking, fps, result.speaker)
    shares = ", ".join(f"{name} speaks {flags.mean():.0%}" for name, flags in zip(result.names, result.speaking))
    summary = (f"**{len(result.names)} characters**, {result.layout} layout · **{result.num_frames} frames** "
               f"({result.seconds:.1f} s) in {result.wall_seconds:.1f} s · seed **{result.seed}** · {shares}")
    if result.voices:
        summary += " · voices: " + ", ".join(f"{n} {v}" for n, v in zip(result.names, result.voices))
    return ConversationView(str(path), figure, summary, result)


def tts_note() -> str:
    """Which voices work here (float_core.tts.available_engines), for the script box."""
    from float_core.tts import TTSError, available_engines

    try:
        engines = available_engines()
    except TTSError as exc:
        return f"Voices: {exc}"
    ready = [name for name, why in engines.items() if why is None]
    examples = {"espeak": "`espeak:en-us+f3`", "piper": "`piper:/path/voice.onnx`", "url": "`url:alloy`"}
    return ("Voices available here: " + (", ".join(examples[e] for e in ready) if ready else "none") +
            ". Leave a voice empty for a distinct espeak-ng voice per character.")


# ---------------------------------------------------------------------------- layout
def build_conversation_tab(holder: PipelineHolder) -> None:
    """Lay out the Conversation tab (inside ``with gr.Tab("Conversation"):``) and wire it."""
    import gradio as gr

    from float_core.conversation import DEFAULT_VOICES

    from .ui import EXAMPLES, progress_bar, run_controls, ui_errors

    session = gr.State(st.Session(), time_to_live=3600, delete_callback=st.cleanup_session)
    gr.Markdown("Two to four portraits in one video. Each speaks **its own** lines or recording; while "
                "the others talk it listens in silence mode (blinks, small head motion, mouth closed) and "
                "never mouths their voices. The sound is the mix of everyone's speech.")
    columns, portraits, names, audios, voices = [], [], [], [], []
    with gr.Row(equal_height=False):
        with gr.Column(scale=6):
            count = gr.Slider(2, MAX_CHARACTERS, value=2, step=1, label="Characters", elem_id="conv-count")
            with gr.Row():
                for i in range(MAX_CHARACTERS):
                    with gr.Column(min_width=160, visible=i < 2, elem_id=f"conv-character-{i + 1}") as column:
                        portraits.append(gr.Image(label=f"Portrait {i + 1}", type="numpy", height=180,
                                                  sources=["upload", "webcam", "clipboard"],
                                                  elem_id=f"conv-portrait-{i + 1}"))
                        names.append(gr.Textbox(DEFAULT_NAMES[i], label="Name", max_lines=1,
                                                elem_id=f"conv-name-{i + 1}"))
                        voices.append(gr.Textbox("", label="Voice", max_lines=1, placeholder=DEFAULT_VOICES[i],
                                                 elem_id=f"conv-voice-{i + 1}"))
                        audios.append(gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                                               visible=False, elem_id=f"conv-audio-{i + 1}"))
                    columns.append(column)
            pictures = sorted(str(p) for p in EXAMPLES.glob("portrait_*") if p.suffix in (".png", ".jpg"))
            if len(pictures) >= 2:
                pairs = [[pictures[i], pictures[(i + 1) % len(pictures)]] for i in range(len(pictures))]
                gr.Examples(pairs, inputs=portraits[:2], label="Example portraits (examples/README.md)",
                            elem_id="conv-examples")
            mode = gr.Radio(list(MODES), value=MODES[0], label="Speech", elem_id="conv-mode")
            script = gr.Textbox(DEFAULT_SCRIPT, lines=6, label="Script",
                                info="One 'Name: what they say' per line; a blank line or [pause 1.5] is a pause.",
                                elem_id="conv-script")
            voice_note = gr.Markdown(tts_note(), elem_id="conv-voice-note")
        with gr.Column(scale=5):
            layout = gr.Radio(list(LAYOUTS), value="row", label="Layout", elem_id="conv-layout",
                              info="row: side by side; grid; speaker: the current speaker large, the others small.")
            with gr.Row():
                captions = gr.Checkbox(True, label="Name captions", elem_id="conv-captions")
                crop = gr.Checkbox(True, label="Crop to the faces")
            with gr.Row():
                nfe = gr.Slider(*st.NFE_RANGE, value=st.DEFAULTS.nfe, step=1, label="Steps (NFE)", elem_id="conv-nfe")
                seed = gr.Number(value=0, precision=0, minimum=-1, maximum=st.MAX_SEED, label="Seed",
                                 info="Each character's seed is derived from it; -1 draws one.", elem_id="conv-seed")
            converse, stop, video = run_controls("Make the conversation", "Conversation", "conv", height=360)
            timeline = gr.Plot(label="Who speaks when", elem_id="conv-timeline")
            summary = gr.Markdown(elem_id="conv-summary")

    def show_slots(n: float) -> list[Any]:
        return [gr.update(visible=i < int(n)) for i in range(MAX_CHARACTERS)]

    def show_mode(choice: str) -> list[Any]:
        scripted = choice == MODES[0]
        return ([gr.update(visible=scripted), gr.update(visible=scripted)]
                + [gr.update(visible=scripted) for _ in voices] + [gr.update(visible=not scripted) for _ in audios])

    count.change(show_slots, count, columns, queue=False, api_visibility="private")
    mode.change(show_mode, mode, [script, voice_note, *voices, *audios], queue=False, api_visibility="private")

    def work(n: Any, choice: str, words: str, slots: tuple = (), **_: Any) -> float:
        return video_seconds(n, choice, words, slots[3 * MAX_CHARACTERS:4 * MAX_CHARACTERS])

    @gpu_handler(holder.speed, work)
    @ui_errors
    def on_converse(sess: st.Session, n: float, choice: str, words: str, layout_name: str, captions_on: bool,
                    crop_on: bool, steps: float, seed_value: float, *slots: Any,
                    progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, ...]]:
        """Make the conversation of the first ``n`` characters; streams the seed first."""
        k = MAX_CHARACTERS
        images, who, spoken, recordings = slots[:k], slots[k:2 * k], slots[2 * k:3 * k], slots[3 * k:4 * k]
        sampling = st.sampling_from_ui(st.DEFAULTS.a_cfg, st.DEFAULTS.e_cfg, steps, st.DEFAULTS.solver, "auto",
                                       seed_value)
        yield gr.skip(), gr.skip(), "Preparing the characters…", sampling.seed
        view = run_conversation(holder, sess, n, images, who, choice, words, spoken, recordings, layout_name,
                                captions_on, crop_on, sampling, progress_bar(progress, CONVERSE_SPANS))
        yield view.path, view.timeline, view.summary, sampling.seed

    event = converse.click(
        on_converse, [session, count, mode, script, layout, captions, crop, nfe, seed, *portraits, *names, *voices,
                      *audios],
        [video, timeline, summary, seed], api_name="converse", concurrency_limit=1, concurrency_id="render",
        show_progress_on=[video])
    stop.click(lambda sess: sess.request_stop(), session, None, cancels=[event], queue=False,
               api_visibility="private")
