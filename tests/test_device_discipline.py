"""Device discipline: every path runs on a simulated accelerator.

:class:`float_core.testing.SimulatedAccelerator` makes the CPU behave like a separate device:
implicit host conversions of device tensors raise, host tensors mixed into device ops raise,
and syncs (``item``, ``bool``) are recorded with their source line. Each engine path (generate
with every kind of emotion, render with per-frame edits, paste-back, the training stage-2
sample video, the app's handlers) runs on it and must give exactly the CPU's result, with no
sync inside the sampling and decoding loops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from float_core import FloatPipeline
from float_core.media import load_audio
from float_core.testing import (
    SIMULATED_DEVICE,
    DeviceMismatch,
    DeviceTensor,
    ImplicitHostConversion,
    SimulatedAccelerator,
    iter_device_tensors,
)
from helpers import one_torch_thread

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "examples" / "portrait_astronaut.png"
AUDIO = ROOT / "examples" / "arctic_a0007.wav"


@pytest.fixture()
def acc():
    with SimulatedAccelerator() as a:
        yield a


@pytest.fixture(scope="module")
def cpu_pipe():
    return FloatPipeline.tiny_random()


@pytest.fixture(scope="module")
def dev_pipe(cpu_pipe):
    with SimulatedAccelerator() as a:
        return a.pipeline(cpu_pipe)


@pytest.fixture(scope="module")
def wave():
    return load_audio(AUDIO)[:9600]  # 0.6 s: 15 frames, 2 windows of the tiny model's L = 10


@pytest.fixture(scope="module")
def prepared(cpu_pipe, dev_pipe, wave):
    """The same portrait + speech analysed on the CPU and on the accelerator (face crop on)."""
    cpu = cpu_pipe.prepare(IMAGE, wave)
    with SimulatedAccelerator():
        dev = dev_pipe.prepare(IMAGE, wave)
    return cpu, dev


# ---------------------------------------------------------------------------- the simulation
def test_simulation_refuses_implicit_conversions_like_cuda(acc):
    x = acc.tensor([1.0, 2.0, 3.0])
    assert x.device == SIMULATED_DEVICE and (x * 2).device == SIMULATED_DEVICE
    for convert in (np.asarray, lambda t: t.numpy(), lambda t: t.tolist(), lambda t: float(t[0]),
                    lambda t: int(t[0]), lambda t: np.stack([t, t])):
        with pytest.raises(ImplicitHostConversion, match="explicitly with .cpu()"):
            convert(x)
    with pytest.raises(DeviceMismatch, match="same device"):
        _ = x + torch.ones(3)  # a host tensor in a device op
    assert isinstance(x + torch.tensor(2.0), DeviceTensor)  # 0-dim host tensors are scalars, as on CUDA


def test_simulation_moves_explicitly_and_counts_syncs(acc):
    x = acc.tensor([1.0, 2.0, 3.0])
    host = x.cpu()
    assert type(host) is torch.Tensor and type(x.to("cpu")) is torch.Tensor
    host[0] = 9.0  # a transfer copies
    assert x[0].item() == 1.0
    assert type(torch.zeros(2, device=x.device)) is DeviceTensor
    assert type(torch.ones(2).to(x.device)) is DeviceTensor
    assert type(x.to(torch.float64)) is DeviceTensor
    assert acc.transfers == {"to_host": 2, "to_device": 1}
    mark = acc.mark()
    assert bool(x.sum() > 0) and f"{x.sum():.1f}" == "6.0"
    assert [s.kind for s in acc.since(mark)] == ["__bool__", "__format__"]
    assert all("test_device_discipline.py" in s.where for s in acc.since(mark))


def test_pipeline_lives_on_the_accelerator(dev_pipe, prepared):
    _, dev = prepared
    assert dev_pipe.device == SIMULATED_DEVICE
    assert all(isinstance(p, DeviceTensor) for p in dev_pipe.model.parameters())
    tensors = list(iter_device_tensors(dev.source)) + list(iter_device_tensors(dev.speech))
    assert len(tensors) >= 6  # image, latents, lambda, motion, features, audio features, probs
    assert isinstance(dev.speech.waveform, np.ndarray)  # the host copy muxed into the video


# ---------------------------------------------------------------------------- engine paths
@pytest.mark.parametrize("emotion", ["happy", [1, 0, 0, 0, 0, 0, 2], "device-tensor"])
def test_generate_on_accelerator_equals_cpu(acc, cpu_pipe, dev_pipe, prepared, emotion, tmp_path):
    """Guards a CUDA crash: generate() once resolved a device-tensor emotion with np.asarray."""
    cpu, dev = prepared
    given = acc.tensor([0.0, 1, 0, 0, 0, 0, 0]) if emotion == "device-tensor" else emotion
    result = dev_pipe.generate(None, None, tmp_path / "dev.mp4", prepared=dev, emotion=given,
                               nfe=2, seed=3, progress=False)
    same = [0.0, 1, 0, 0, 0, 0, 0] if emotion == "device-tensor" else emotion
    assert result.path.stat().st_size > 0 and result.num_frames == 15
    assert isinstance(result.motion, DeviceTensor) and isinstance(result.emotion, DeviceTensor)
    assert torch.equal(result.motion.cpu(), cpu_pipe.sample_motion(cpu, emotion=same, nfe=2, seed=3))
    assert torch.equal(result.emotion.cpu(), cpu_pipe.resolve_emotion(cpu, same))


def test_converse_on_accelerator_equals_cpu(acc, cpu_pipe, dev_pipe, wave, tmp_path):
    """A conversation (silence mode, per-character seeds, speaker layout) on the device."""
    images = [IMAGE, ROOT / "examples" / "portrait_grace_hopper.jpg"]
    with one_torch_thread():
        dev = dev_pipe.converse(images, [wave, None], tmp_path / "dev.mp4", layout="speaker", nfe=1, seed=2)
        cpu = cpu_pipe.converse(images, [wave, None], tmp_path / "cpu.mp4", layout="speaker", nfe=1, seed=2)
    assert dev.num_frames == 15 and all(isinstance(m, DeviceTensor) for m in dev.motion)
    assert all(torch.equal(d.cpu(), c) for d, c in zip(dev.motion, cpu.motion))
    np.testing.assert_array_equal(dev.speaking, cpu.speaking)


def test_full_generate_with_crop_paste_back_and_edits(acc, dev_pipe, wave, tmp_path):
    edits = np.zeros(dev_pipe.config.motion_dim, np.float32)
    edits[0] = 0.5
    result = dev_pipe.generate(IMAGE, wave, tmp_path / "out.mp4", paste_back=True, edits=edits,
                               nfe=1, seed=0, progress=False)
    assert result.path.is_file() and result.num_frames == 15


def test_render_with_per_frame_edits_equals_cpu_and_copies_once_per_batch(acc, cpu_pipe, dev_pipe, prepared):
    cpu, dev = prepared
    motion = cpu_pipe.sample_motion(cpu, nfe=1, seed=0)
    edits = np.linspace(-1, 1, motion.shape[0] * cpu_pipe.config.motion_dim, dtype=np.float32)
    edits = edits.reshape(motion.shape[0], -1)
    expected = np.concatenate(list(cpu_pipe.render(cpu, motion, edits=edits, batch_size=4)))
    dev_motion = motion.to(acc.device)
    before, mark = acc.transfers["to_host"], acc.mark()
    frames = np.concatenate(list(dev_pipe.render(dev, dev_motion, edits=edits, batch_size=4)))
    np.testing.assert_array_equal(frames, expected)
    assert acc.transfers["to_host"] - before == 4  # ceil(15 / 4) batches, each copied explicitly once
    assert [s.kind for s in acc.since(mark)] == ["__bool__"]  # the one finiteness check of the motion


def test_render_keeps_one_batch_in_flight_when_copies_are_asynchronous(monkeypatch, cpu_pipe, prepared):
    """render's CUDA schedule, run here with a stand-in asynchronous copier: batch k is taken
    only after batch k+1 is queued, with the same frames and progress as the CPU schedule."""
    import float_core.transfer as transfer

    events: list[tuple[str, int]] = []

    class DeferredCopies:
        asynchronous = True

        def __init__(self, device: torch.device):
            pass

        def start(self, x: torch.Tensor) -> transfer.PendingCopy:
            k = sum(e[0] == "start" for e in events)
            events.append(("start", k))
            host = x.cpu().numpy()
            return transfer.PendingCopy(lambda: events.append(("result", k)) or host)

    cpu, _ = prepared
    motion = cpu_pipe.sample_motion(cpu, nfe=1, seed=0)
    expected = list(cpu_pipe.render(cpu, motion, batch_size=4))
    monkeypatch.setattr(transfer, "HostCopies", DeferredCopies)
    done: list[int] = []
    got = list(cpu_pipe.render(cpu, motion, batch_size=4, progress=lambda stage, d, total: done.append(d)))
    assert events == [("start", 0), ("start", 1), ("result", 0), ("start", 2), ("result", 1),
                      ("start", 3), ("result", 2), ("result", 3)]
    assert done == [4, 8, 12, 15]
    assert len(got) == len(expected) == 4
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_no_sync_per_window_or_batch(acc, dev_pipe, prepared):
    """After the first window / batch (validation), sampling and decoding make no device sync."""
    _, dev = prepared
    windows = dev_pipe.iter_motion(dev, nfe=2, seed=0)
    motion = [next(windows)]
    mark = acc.mark()
    motion += list(windows)
    assert len(motion) == 2 and acc.since(mark) == [], [str(s) for s in acc.since(mark)]
    batches = dev_pipe.render(dev, torch.cat(motion), batch_size=4)
    next(batches)
    mark = acc.mark()
    assert len(list(batches)) == 3 and acc.since(mark) == [], [str(s) for s in acc.since(mark)]


def test_stream_on_accelerator_equals_cpu(acc, cpu_pipe, dev_pipe, prepared):
    """The streaming engine's worker threads run on the device too, with the CPU's frames."""
    cpu, dev = prepared
    got = list(dev_pipe.stream(dev.source, dev.speech, nfe=1, seed=2))
    want = list(cpu_pipe.stream(cpu.source, cpu.speech, nfe=1, seed=2))
    frames = np.concatenate([c.frames for c in got])
    assert frames.shape[0] == 15
    np.testing.assert_array_equal(frames, np.concatenate([c.frames for c in want]))


def test_training_logs_come_to_the_host_in_one_copy(acc):
    """A training step's scalar logs: one explicit transfer, no .item() or float() per value."""
    from float_core.train.loop import host_scalars

    before, mark = acc.transfers["to_host"], acc.mark()
    logs = host_scalars({"loss": acc.tensor(0.25), "grad_norm": acc.tensor([3.0, 4.0]).norm(), "lr": 1e-4})
    assert logs == {"loss": 0.25, "grad_norm": 5.0, "lr": pytest.approx(1e-4)}
    assert acc.transfers["to_host"] - before == 1 and acc.since(mark) == []


def test_stage2_sample_video_on_accelerator(acc, tmp_path):
    """The training stage-2 sample video (float_core/train/stage2.py) on the device."""
    from float_core.train.stage2 import Stage2Config, sample_video

    model = acc.to_device(FloatPipeline.tiny_random().model.train())
    config = Stage2Config(data="unused", sample_image=str(IMAGE), sample_audio=str(AUDIO),
                          sample_seconds=0.5, sample_nfe=1)
    path = sample_video(model, config, tmp_path / "sample.mp4", acc.device)
    assert path is not None and path.stat().st_size > 0
    assert model.training  # restored after the inference view


# ---------------------------------------------------------------------------- the app
def test_app_handlers_on_accelerator(acc, cpu_pipe, dev_pipe, wave, tmp_path):
    """float_studio.handlers (generate, preview, render with a time-varying edit and paste-back)
    on the device: the same motion, lambdas, emotion and preview frame as on the CPU."""
    import wave as wav

    from float_core.config import SamplingConfig
    from float_core.editing import EditCurve
    from float_core.media.image import load_image
    from float_studio import handlers
    from float_studio.model import PipelineHolder
    from float_studio.state import Session

    image = load_image(IMAGE)
    audio = tmp_path / "speech.wav"
    with wav.open(str(audio), "wb") as f:  # the first second as 16-bit PCM, as an upload would be
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes((np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes())
    sampling = SamplingConfig(nfe=1, seed=5, emotion="sad")
    sliders = np.zeros(dev_pipe.config.motion_dim, np.float32)
    sliders[1] = -0.7
    edits = handlers.Edits(sliders, curves=(EditCurve(direction=0, kind="ramp", value=1.0, start=3, end=20),))
    results = {}
    for name, pipe in (("dev", dev_pipe), ("cpu", cpu_pipe)):
        holder, session = PipelineHolder(lambda pipe=pipe: pipe), Session()
        generation = list(handlers.generate(holder, session, image, str(audio), True, sampling))[-1]
        results[name] = (generation, handlers.preview(holder, session, 7, edits, paste_back=True))
        if name == "dev":
            rendered = handlers.render_video(holder, session, edits, paste_back=True, batch_size=4)
            assert Path(rendered.path).stat().st_size > 0 and rendered.warnings == []
            assert "frames" in handlers.summary_markdown(rendered.generation, rendered.seconds, edited=True)
        session.cleanup()
    (dev_gen, dev_frame), (cpu_gen, cpu_frame) = results["dev"], results["cpu"]
    assert torch.equal(dev_gen.motion, cpu_gen.motion)
    np.testing.assert_array_equal(dev_gen.lambdas, cpu_gen.lambdas)
    np.testing.assert_array_equal(dev_gen.emotion, cpu_gen.emotion)
    np.testing.assert_array_equal(dev_frame, cpu_frame)


def test_float16_pipeline_on_accelerator_equals_cpu_without_syncs(acc, cpu_pipe, wave):
    """Every stage under float16 autocast (float_core.precision) keeps the device discipline:
    the same frames as the CPU's float16 pipeline, no sync per window."""
    cpu16 = FloatPipeline(cpu_pipe.model, device="cpu", dtype="float16")
    dev16 = acc.pipeline(cpu16)
    assert dev16.precision == cpu16.precision and dev16.precision.fmt == torch.float16
    cpu, dev = cpu16.prepare(IMAGE, wave), dev16.prepare(IMAGE, wave)
    assert torch.equal(dev.audio_features.cpu(), cpu.audio_features)
    windows = dev16.iter_motion(dev, nfe=2, seed=1)
    motion = [next(windows)]
    mark = acc.mark()
    motion += list(windows)
    assert acc.since(mark) == [], [str(s) for s in acc.since(mark)]
    motion = torch.cat(motion)
    assert torch.equal(motion.cpu(), cpu16.sample_motion(cpu, nfe=2, seed=1))
    assert not torch.equal(motion.cpu(), cpu_pipe.sample_motion(cpu, nfe=2, seed=1))  # float16 really ran
    got = np.concatenate(list(dev16.render(dev, motion, batch_size=8)))
    np.testing.assert_array_equal(got, np.concatenate(list(cpu16.render(cpu, motion.cpu(), batch_size=8))))
