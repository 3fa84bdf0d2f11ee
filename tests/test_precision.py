"""dtype="auto": bfloat16 exactly where the device has native bf16, and its image error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from float_core.bench import frame_psnr, scale_flow_offsets_
from float_core.generate_cli import add_subparser
from float_core.models.decoder_inference import InferenceDecoder
from float_core.pipeline import FloatPipeline
from float_core.precision import Precision, native_bf16, select_dtype


def _fake_cpu(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.delenv("FLOAT_DTYPE", raising=False)  # the suite pins auto to float32 (conftest)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, torch.bfloat16), (False, True, torch.bfloat16), (True, True, torch.bfloat16),
    (False, False, torch.float32),
])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, amx, avx512_bf16, expected):
    _fake_cpu(monkeypatch, amx, avx512_bf16)
    assert select_dtype("auto", "cpu") == expected
    assert select_dtype(None, "cpu") == expected  # the default is auto
    assert select_dtype("AUTO", torch.device("cpu")) == expected


@pytest.mark.parametrize("capability, expected", [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16),
                                                  ((7, 5), torch.float32), ((6, 1), torch.float32)])
def test_auto_on_cuda_needs_sm80(monkeypatch, capability, expected):
    _fake_cpu(monkeypatch, True, True)  # the CPU's abilities must not matter for a CUDA device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert select_dtype("auto", "cuda") == expected
    assert native_bf16(torch.device("cuda:0")) == (expected == torch.bfloat16)


def test_explicit_dtypes_are_kept_and_bad_ones_refused(monkeypatch):
    _fake_cpu(monkeypatch, True, True)
    assert select_dtype("float32", "cpu") == torch.float32  # reference parity stays available
    assert select_dtype(torch.float32) == torch.float32
    _fake_cpu(monkeypatch, False, False)
    assert select_dtype("bfloat16", "cpu") == torch.bfloat16  # forced, even where emulated
    assert select_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="'auto' or one of"):
        select_dtype("float8")
    assert not native_bf16(torch.device("meta"))


def test_pipeline_exposes_the_resolved_dtype_and_device(monkeypatch):
    _fake_cpu(monkeypatch, True, False)
    pipe = FloatPipeline.tiny_random(device="cpu")
    assert pipe.dtype == torch.bfloat16 and pipe.decoder.dtype == torch.bfloat16
    assert pipe.device == torch.device("cpu")
    assert pipe.describe() == "cpu, bfloat16 decoder, float32 FMT and encoders (auto: native bf16 on cpu)"
    _fake_cpu(monkeypatch, False, False)
    pipe = FloatPipeline.tiny_random(device="cpu")
    assert pipe.dtype == torch.float32
    assert pipe.describe() == "cpu, float32 (auto: no native bf16 on cpu)"
    assert FloatPipeline.tiny_random(device="cpu", dtype="float32").describe() == "cpu, float32"
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    assert FloatPipeline.tiny_random(device="cpu", dtype="float16").describe() == (
        "cpu, float16 (emulated on this cpu: slower than float32)")
    assert FloatPipeline.tiny_random(device="cpu", dtype="bfloat16").describe() == (
        "cpu, bfloat16 decoder, float32 FMT and encoders (emulated on this cpu: slower than float32)")
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)
    assert FloatPipeline.tiny_random(device="cpu", dtype="float16").describe() == "cpu, float16"


def test_cli_dtype_defaults_to_auto():
    import argparse

    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers())
    args = parser.parse_args(["generate", "--image", "a.png", "--audio", "a.wav", "--output", "o.mp4"])
    assert args.dtype == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--dtype", "int8"])


def test_frame_psnr_known_values():
    ref = torch.zeros(2, 3, 4, 4)
    frames = ref.clone()
    frames[0] += 0.02  # mse 4e-4 -> 10 log10(4 / 4e-4) = 40 dB
    frames[1, :, :2] = 2.0  # clamped to 1: half the pixels off by 1 -> mse 0.5 -> 9.03 dB
    assert frame_psnr(frames, ref).tolist() == pytest.approx([40.0, 10 * torch.log10(torch.tensor(8.0)).item()],
                                                             abs=1e-4)


def _flow_scaled_case():
    """The tiny decoder in the benchmark's regime (smooth source, flow offsets scaled by 0.03)."""
    pipe = FloatPipeline.tiny_random(device="cpu", dtype="float32")
    ae = pipe.model.motion_autoencoder
    scale_flow_offsets_(ae.dec, 0.03)  # the pipeline's model is its own copy: nothing else sees this
    size = pipe.config.image_size
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        source = F.interpolate(torch.rand(1, 3, 8, 8) * 2 - 1, size=(size, size), mode="bilinear",
                               align_corners=False)
        identity, lam, feats = ae.encode(source)
        latents = identity + ae.lambda_to_motion(lam + 0.5 * torch.randn(4, lam.shape[1]))
    return ae.dec, latents, feats


def test_precision_per_stage_follows_the_measured_rule(monkeypatch):
    """bf16: the decoder low, the FMT and wav2vec2 encoders float32 (with them in bf16 the whole
    pipeline misses 45 dB, precision.py); fp16: every stage low; float32: nothing low."""
    assert Precision.for_dtype(torch.float32) == Precision()
    bf16 = Precision.for_dtype(torch.bfloat16)
    assert (bf16.decoder, bf16.fmt, bf16.encoders) == (torch.bfloat16, torch.float32, torch.float32)
    fp16 = Precision.for_dtype(torch.float16)
    assert (fp16.decoder, fp16.fmt, fp16.encoders) == (torch.float16,) * 3
    assert bf16.describe() == "bfloat16 decoder, float32 FMT and encoders"
    mixed = Precision(decoder=torch.bfloat16, fmt=torch.bfloat16)
    assert mixed.describe() == "bfloat16 decoder and FMT, float32 encoders"
    assert fp16.describe() == "float16" and Precision().describe() == "float32"
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        Precision.for_dtype(torch.float64)
    with pytest.raises(ValueError, match="Precision.fmt must be"):
        Precision(fmt=torch.float64)
    pipe = FloatPipeline.tiny_random(device="cpu", dtype="bfloat16")
    assert pipe.precision == bf16 and pipe.decoder.dtype == torch.bfloat16
    _fake_cpu(monkeypatch, True, True)  # native bf16: no "emulated" note in describe()
    custom = FloatPipeline(pipe.model, device="cpu", precision=mixed)
    assert custom.precision == mixed and custom.dtype == torch.bfloat16
    assert custom.describe() == "cpu, bfloat16 decoder and FMT, float32 encoders"
    with pytest.raises(ValueError, match="dtype or precision, not both"):
        FloatPipeline(pipe.model, device="cpu", dtype="float32", precision=mixed)


def test_low_precision_decoder_keeps_its_low_levels_float32():
    """Levels up to float32_max_resolution run float32: with every level there, a bf16 decoder
    is the float32 decoder bit for bit; by default conv1 and the 8 and 16 px levels are float32."""
    dec, latents, feats = _flow_scaled_case()
    exact = InferenceDecoder(dec, torch.float32)(latents, feats)
    all_fp32 = InferenceDecoder(dec, torch.bfloat16, float32_max_resolution=dec.size)
    assert torch.equal(all_fp32(latents, feats), exact)
    default = InferenceDecoder(dec, torch.bfloat16)
    assert default.float32_max_resolution == 16
    assert default.conv1.dtype == torch.float32
    assert [c.dtype for c in default.convs] == [torch.float32] * 4 + [torch.bfloat16] * (len(default.convs) - 4)
    assert not torch.equal(default(latents, feats), exact)


def test_float16_frames_psnr_against_float32():
    """float16 (10 mantissa bits against bf16's 7): official size measured 60-65 dB."""
    dec, latents, feats = _flow_scaled_case()
    exact = InferenceDecoder(dec, torch.float32)(latents, feats)
    low = InferenceDecoder(dec, torch.float16)(latents, feats)
    assert low.dtype == torch.float32
    psnr = frame_psnr(low, exact)
    assert psnr.min() >= 70.0, psnr
    assert psnr.max() < 110.0, psnr  # float16 really ran


def _speech(seconds: float = 2.5):
    t = torch.arange(int(16000 * seconds)) / 16000
    return (0.3 * torch.sin(2 * torch.pi * 220 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))).numpy()


def test_fmt_low_precision_runs_under_autocast_with_float32_embedders():
    """With a bf16 FMT its blocks run bf16 matmuls, its embedders and final layer float32, and
    the sampled motion stays float32, close to the float32 motion but not equal to it."""
    ref = FloatPipeline.tiny_random(device="cpu", dtype="float32")
    low = FloatPipeline(FloatPipeline.tiny_random(device="cpu").model, device="cpu",
                        precision=Precision(fmt=torch.bfloat16))
    image = torch.full((64, 64, 3), 128, dtype=torch.uint8).numpy()
    prepared = ref.prepare(image, _speech(), crop=False)
    seen: dict[str, torch.dtype] = {}
    fmt = low.model.fmt
    def record(name):
        def hook(_module, _inputs, output):
            seen.setdefault(name, output.dtype)  # returns None: the output is kept
        return hook

    hooks = [module.register_forward_hook(record(name))
             for name, module in (("c_embedder", fmt.c_embedder), ("x_embedder", fmt.x_embedder.proj),
                                  ("qkv", fmt.blocks[0].attn.qkv), ("final", fmt.decoder.linear))]
    try:
        motion = low.sample_motion(prepared, nfe=4, seed=0)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"c_embedder": torch.float32, "x_embedder": torch.float32, "qkv": torch.bfloat16,
                    "final": torch.float32}
    exact = ref.sample_motion(prepared, nfe=4, seed=0)
    assert motion.dtype == torch.float32 and not torch.equal(motion, exact)
    assert (motion - exact).abs().max() < 0.05 * exact.abs().max()


def test_encoders_follow_the_precision():
    """bf16 keeps the wav2vec2 encoders float32 (bit-equal features); fp16 runs them in fp16."""
    wave = _speech()
    ref = FloatPipeline.tiny_random(device="cpu", dtype="float32").prepare_audio(wave)
    bf16 = FloatPipeline.tiny_random(device="cpu", dtype="bfloat16").prepare_audio(wave)
    fp16 = FloatPipeline.tiny_random(device="cpu", dtype="float16").prepare_audio(wave)
    assert torch.equal(bf16.audio_features, ref.audio_features)
    assert torch.equal(bf16.emotion_probs, ref.emotion_probs)
    assert fp16.audio_features.dtype == torch.float32 and not torch.equal(fp16.audio_features, ref.audio_features)
    rel = (fp16.audio_features - ref.audio_features).norm() / ref.audio_features.norm()
    assert rel < 0.01, rel
    assert (fp16.emotion_probs - ref.emotion_probs).abs().max() < 0.01


def test_bfloat16_frames_psnr_against_float32():
    """The image error auto's bf16 accepts (bar: PSNR >= 45 dB on every frame), on the tiny
    decoder in the benchmark's regime. Measured: 66-69 dB on these 4 frames; fully random
    flows give 39-46 dB (warps amplify rounding)."""
    dec, latents, feats = _flow_scaled_case()
    exact = InferenceDecoder(dec, torch.float32)(latents, feats)
    low = InferenceDecoder(dec, torch.bfloat16)(latents, feats)
    psnr = frame_psnr(low, exact)
    assert psnr.min() >= 60.0, psnr
    assert psnr.max() < 90.0, psnr  # bf16 really ran: not bit-equal to float32


def test_keep_freed_memory_reuses_big_blocks(monkeypatch):
    """A freed 64 MiB tensor's pages are reused by the next one: no fresh page faults
    (glibc's default mmaps every block above 32 MiB anew: ~16k faults for 64 MiB)."""
    import platform
    import resource

    from float_core.models import decoder_inference

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert decoder_inference.keep_freed_memory()
    n = 16 * 2 ** 20  # float32 elements: 64 MiB
    faults = []
    for _ in range(6):  # the first rounds may fault until the heap holds a free block that size
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(n).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert min(faults[2:]) < 2000, faults  # untuned: 16385 every round
    monkeypatch.setattr(decoder_inference, "_malloc_tuned", False)
    monkeypatch.setenv(decoder_inference.MALLOC_TUNING_ENV, "0")
    assert not decoder_inference.keep_freed_memory()  # the opt-out


def test_app_banner_names_device_and_precision(monkeypatch):
    from float_studio.model import PipelineHolder

    monkeypatch.setenv("FLOAT_TEST_MODEL", "tiny-random")
    monkeypatch.setenv("FLOAT_DTYPE", "float16")
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    holder = PipelineHolder()
    assert holder.get().precision == Precision.for_dtype(torch.float16)
    assert holder.status_markdown().endswith("on cpu, float16 (emulated on this cpu: slower than float32).")
