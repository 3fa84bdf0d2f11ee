"""Batch runs (float_core.batch, ``float-studio batch``): job files validated line by line,
results.jsonl, resume by settings hash, and the same videos locally and on a real local Ray
(with an actor that dies mid-job), tiny random model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import one_torch_thread
import soundfile as sf

from float_core.batch import (CRASH_ENV, BatchError, JobSettings, ModelSpec, ResultsLog, load_jobs, run_batch,
                              settings_hash)
from float_core.cli import main
from float_core.config import SAMPLE_RATE, SamplingConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PORTRAIT = str(EXAMPLES / "portrait_astronaut.png")
CLIP = str(EXAMPLES / "driving_grace_hopper.mp4")  #: 74 frames (2.96 s), 256x256, with sound
CLIP_FRAMES = 15  #: the video jobs' clip: the example clip's first 0.6 s
#: The must-show file: 4 good jobs, one bad image, one missing audio.
STATUSES = {"a": "ok", "b": "ok", "c": "failed", "d": "failed", "e": "ok", "f": "ok"}
#: 1 thread in both runners: the same computation, so the videos must be identical.
MODEL = ModelSpec("tiny-random", threads=1)


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """0.4 s of speech (one tiny-model window), a file that is not an image, and the 6-job file."""
    root = tmp_path_factory.mktemp("batch_media")
    t = np.arange(int(0.4 * SAMPLE_RATE)) / SAMPLE_RATE
    speech = root / "speech.wav"
    sf.write(speech, (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32),
             SAMPLE_RATE)
    bad = root / "bad.png"
    bad.write_text("not an image")
    jobs = _write_jsonl(root / "jobs.jsonl", [
        {"id": "a", "image": PORTRAIT, "audio": str(speech), "seed": 0},
        {"id": "b", "image": PORTRAIT, "audio": str(speech), "seed": 1, "emotion": "happy", "a_cfg": 1.5},
        {"id": "c", "image": str(bad), "audio": str(speech), "seed": 2},
        {"id": "d", "image": PORTRAIT, "audio": str(root / "missing.wav"), "seed": 3},
        {"id": "e", "image": PORTRAIT, "audio": str(speech), "seed": 4, "crop": False},
        {"id": "f", "image": PORTRAIT, "audio": str(speech), "seed": 5, "solver": "midpoint"},
    ])
    return {"root": root, "speech": speech, "bad": bad, "jobs": jobs}


@pytest.fixture(scope="module")
def local_run(media):
    """The 6-job file run locally (one process, 1 thread), NFE 1 from the 'command line'."""
    import torch

    out = media["root"] / "local"
    threads = torch.get_num_threads()
    summary = run_batch(media["jobs"], out, MODEL, defaults=JobSettings(SamplingConfig(nfe=1)))
    assert torch.get_num_threads() == threads  # MODEL's one thread applied only while the jobs ran
    return out, summary


@pytest.fixture(scope="module")
def generate_one_thread():
    """``FloatPipeline.generate`` of the tiny model on one torch thread, as MODEL's jobs run (the
    same computation, so the same frames); the thread count is restored after each call."""
    import torch

    pipe = dataclasses.replace(MODEL, threads=None).load()

    def generate(*args, **kwargs):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return pipe.generate(*args, progress=False, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return generate


def test_local_run_records_every_job_and_equals_generate(media, local_run, generate_one_thread):
    out, summary = local_run
    assert (summary.ok, summary.failed, summary.skipped, summary.exit_code) == (4, 2, 0, 1)
    records = {r["id"]: r for r in _records(out)}
    assert {k: r["status"] for k, r in records.items()} == STATUSES
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "e.mp4", "f.mp4", "results.jsonl"]
    assert records["c"]["error"].startswith(f"image {media['bad']}: bad.png is not an image")
    assert records["d"]["error"] == f"line 4: audio: no such file: {media['root'] / 'missing.wav'}"
    for key in ("a", "b", "e", "f"):
        r = records[key]
        assert r["output"] == str(out / f"{key}.mp4") and r["error"] is None and r["attempts"] == 1
        assert r["frames"] == 10 and len(r["settings_hash"]) == 16 and r["seconds"] > 0
    # the same settings through FloatPipeline.generate give the same video
    generate_one_thread(PORTRAIT, media["speech"], media["root"] / "direct.mp4", nfe=1, seed=1, emotion="happy",
                        a_cfg=1.5)
    np.testing.assert_array_equal(_frames(out / "b.mp4"), _frames(media["root"] / "direct.mp4"))


def test_a_second_run_skips_what_is_done_and_a_changed_setting_runs_again(media, local_run, tmp_path):
    out, _ = local_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    made = {p.name: p.stat().st_mtime_ns for p in again.glob("[!.]*.mp4")}
    for stale in (".a.k2x9_q1z.partial.mp4", ".c.k2x9_q1z.partial.mp4"):  # left by a killed run
        (again / stale).write_bytes(b"half a video")
    (again / ".other.k2x9_q1z.partial.mp4").write_bytes(b"not one of these jobs")
    summary = run_batch(media["jobs"], again, MODEL, defaults=JobSettings(SamplingConfig(nfe=1)))
    assert (summary.ok, summary.failed, summary.skipped) == (0, 2, 4)
    assert {p.name: p.stat().st_mtime_ns for p in again.glob("[!.]*.mp4")} == made
    assert [p.name for p in again.glob(".*")] == [".other.k2x9_q1z.partial.mp4"]
    assert [r["status"] for r in _records(again)[6:]].count("skipped") == 4
    # the command line's NFE is part of every job's settings: NFE 2 makes every video again
    changed = load_jobs(media["jobs"], JobSettings(SamplingConfig(nfe=2)))
    first = load_jobs(media["jobs"], JobSettings(SamplingConfig(nfe=1)))
    key = MODEL.key()
    assert settings_hash(changed.jobs[0], key) != settings_hash(first.jobs[0], key)
    # the hash follows the inputs' contents, not their paths
    moved = tmp_path / "moved.wav"
    shutil.copy(media["speech"], moved)
    job = first.jobs[0]
    assert settings_hash(dataclasses.replace(job, audio=str(moved)), key) == settings_hash(job, key)
    sf.write(moved, np.zeros(4000, np.float32), SAMPLE_RATE)
    assert settings_hash(dataclasses.replace(job, audio=str(moved)), key) != settings_hash(job, key)


def test_malformed_lines_are_reported_by_line_number_and_the_others_run(media, tmp_path, capsys):
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", [
        {"id": "one", "image": PORTRAIT, "audio": str(media["speech"]), "seed": 0},
        '{"id": "two", "image": ',
        {"id": "three", "image": PORTRAIT, "audio": str(media["speech"]), "colour": "red"},
        "",
        {"id": "ONE", "image": PORTRAIT, "audio": str(media["speech"])},
        {"id": "../up", "image": PORTRAIT, "audio": str(media["speech"])},
        {"id": "six", "image": PORTRAIT, "audio": str(media["speech"]), "output": "x.mp4"},
        {"id": "seven", "image": PORTRAIT, "audio": str(media["speech"]), "mode": "dub", "video": CLIP},
        {"id": "eight", "image": PORTRAIT, "audio": str(media["speech"]), "e_cfg": "lots"},
    ])
    out = tmp_path / "out"
    code = main(["batch", str(jobs), "-o", str(out), "--checkpoint", "tiny-random", "--nfe", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    for line, message in ((2, "not valid JSON"), (3, "unknown field 'colour'"),
                          (5, "id: 'ONE' is already used on line 1"), (6, "id: '../up' cannot name a file"),
                          (7, "'output' is not a job field"), (8, "image: not a field of dub jobs"),
                          (9, "e_cfg: expected a number, got 'lots'")):
        assert f"{jobs} line {line}: {message}" in err, err
    assert [(r["line"], r["status"]) for r in _records(out)] == [(2, "failed"), (3, "failed"), (5, "failed"),
                                                               (6, "failed"), (7, "failed"), (8, "failed"),
                                                               (9, "failed"), (1, "ok")]
    assert sorted(p.name for p in out.iterdir()) == ["one.mp4", "results.jsonl"]


def test_csv_and_json_list_files_name_the_same_lines(media, tmp_path):
    speech, bad_audio = str(media["speech"]), str(tmp_path / "none.wav")
    csv_path = tmp_path / "jobs.csv"
    csv_path.write_text("\n".join([
        "id,image,audio,emotion,face",
        f"x,{PORTRAIT},{speech},happy,",
        "",
        f'"two\nlines",{PORTRAIT},{speech},,',  # one row on lines 4-5
        f"y,{PORTRAIT},{speech},,2",
        f"w,{PORTRAIT},{bad_audio},,",
        f"v,{PORTRAIT},{speech},,,extra",
    ]) + "\n")
    jobs = load_jobs(csv_path)
    assert [(j.id, j.line, j.settings.sampling.emotion, j.settings.face) for j in jobs.jobs] == [
        ("x", 2, "happy", 0), ("y", 6, None, 1)]
    assert [(b.line, b.id) for b in jobs.invalid] == [(4, None), (7, "w"), (8, None)]
    assert "cannot name a file" in jobs.invalid[0].error and "audio: no such file" in jobs.invalid[1].error
    assert "6 cells for the header's 5 columns" in jobs.invalid[2].error
    listed = tmp_path / "jobs.json"
    listed.write_text('[\n  {"id": "x", "image": "%s", "audio": "%s"},\n\n  {"id": "y", "image": "%s",\n'
                      '   "audio": "%s", "nfe": 0}\n]\n' % (PORTRAIT, speech, PORTRAIT, speech))
    jobs = load_jobs(listed)
    assert [j.line for j in jobs.jobs] == [2] and [(b.line, b.id) for b in jobs.invalid] == [(4, "y")]
    assert jobs.invalid[0].error.startswith("nfe: must be a whole number >= 1")
    listed.write_text('[{"id": "x"},\n {"id": "y"}\n {"id": "z"}]')
    with pytest.raises(BatchError, match="line 3 column 2: not valid JSON"):
        load_jobs(listed)
    csv_path.write_text("id,image,audio,output\n")
    with pytest.raises(BatchError, match="line 1 \\(header\\): 'output' is not a job field"):
        load_jobs(csv_path)
    # a results log torn by a crash mid-line is read past, and the next record starts a fresh line
    log = ResultsLog(tmp_path / "results.jsonl")
    log.path.write_text('{"id": "x", "status": "ok", "settings_hash": "1"}\n{"id": "y", "sta')
    from float_core.batch import JobResult

    log.append(JobResult(id="y", status="ok", settings_hash="2"))
    assert log.finished_hashes() == {"x": "1", "y": "2"}


def test_text_jobs_are_spoken_by_their_voice_and_equal_generate_of_that_speech(media, tmp_path,
                                                                                generate_one_thread):
    """A text job's video is generate() of tts.synthesize(text, voice); a voice espeak-ng lacks
    fails its line before any work; text and the resolved voice are in the settings hash."""
    from float_core.tts import check_voice, synthesize

    voice, words = "espeak:en-us+f3", "Hello there."
    jobs = _write_jsonl(tmp_path / "text.jsonl", [
        {"id": "hello", "image": PORTRAIT, "text": words, "voice": voice, "seed": 0},
        {"id": "plain", "image": PORTRAIT, "text": words, "seed": 0},
        {"id": "nowhere", "image": PORTRAIT, "text": words, "voice": "espeak:xx-nowhere"},
        {"id": "odd", "image": PORTRAIT, "text": words, "voice": "espeak:en-us+nosuchvariant"},
        {"id": "both", "image": PORTRAIT, "text": words, "audio": str(media["speech"])},
        {"id": "lone", "image": PORTRAIT, "audio": str(media["speech"]), "voice": voice},
    ])
    loaded = load_jobs(jobs, JobSettings(SamplingConfig(nfe=1)))
    assert [(j.id, j.text, j.voice) for j in loaded.jobs] == [("hello", words, voice),
                                                             ("plain", words, str(check_voice(None)))]
    assert [(b.line, b.id) for b in loaded.invalid] == [(3, "nowhere"), (4, "odd"), (5, "both"), (6, "lone")]
    for bad, message in zip(loaded.invalid, ("espeak-ng has no voice 'xx-nowhere'",
                                             "espeak-ng has no variant 'nosuchvariant'",
                                             "give either audio", "voice: only for text jobs")):
        assert message in bad.error, bad.error
    summary = run_batch(loaded, tmp_path / "out", MODEL)
    assert (summary.ok, summary.failed) == (2, 4)
    generate_one_thread(PORTRAIT, synthesize(words, voice), tmp_path / "direct.mp4", nfe=1, seed=0)
    np.testing.assert_array_equal(_frames(tmp_path / "out" / "hello.mp4"), _frames(tmp_path / "direct.mp4"))
    key, (hello, plain) = MODEL.key(), loaded.jobs
    hashes = {r["id"]: r["settings_hash"] for r in _records(tmp_path / "out") if r["status"] == "ok"}
    assert hashes == {"hello": settings_hash(hello, key), "plain": settings_hash(plain, key)}
    assert hashes["hello"] != hashes["plain"]  # only the voice differs
    assert settings_hash(dataclasses.replace(hello, text="Hello there!"), key) != hashes["hello"]
    again = run_batch(loaded, tmp_path / "out", MODEL)
    assert (again.skipped, again.ok) == (2, 0)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for this module: 2 CPUs, no dashboard, no usage stats, a short temp dir
    (Ray's socket paths must stay short); shut down and removed afterwards."""
    ray = pytest.importorskip("ray")
    saved = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = saved


def test_ray_run_equals_the_local_run_and_retries_a_job_whose_actor_died(media, local_run, ray_session, tmp_path,
                                                                          monkeypatch):
    """2 actors of 1 thread; the actor that takes job "b" exits mid-job (as an OOM kill would):
    it is replaced, "b" is retried and ends ok, nothing else is lost."""
    local_out, _ = local_run
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(CRASH_ENV, f"b:{marker}")  # forwarded to the actors with the other FLOAT_* variables
    out = tmp_path / "ray"
    summary = run_batch(media["jobs"], out, ModelSpec("tiny-random"), defaults=JobSettings(SamplingConfig(nfe=1)),
                        ray=True, workers=2, cpus_per_worker=1, retries=1)
    assert marker.exists()  # the crash happened
    records = _records(out)
    assert len(records) == 6 and {r["id"]: r["status"] for r in records} == STATUSES
    local = {r["id"]: r for r in _records(local_out)}
    for r in records:
        assert r["error"] == local[r["id"]]["error"] and r["settings_hash"] == local[r["id"]]["settings_hash"]
        assert r["attempts"] == {"b": 2, "c": 1, "d": 0}.get(r["id"], 1)
    assert summary.replaced == 1 and len(summary.workers) >= 2 and all(" pid " in w for w in summary.workers)
    for key in ("a", "b", "e", "f"):
        np.testing.assert_array_equal(_frames(out / f"{key}.mp4"), _frames(local_out / f"{key}.mp4"))
    assert not list(out.glob(".*"))  # no temporary file left behind


# ---------------------------------------------------------------------------- video-input modes
@pytest.fixture(scope="module")
def video_run(media, tmp_path_factory):
    """A generate job with the head and eyes from a short clip, a drive job (absolute) and a dub
    job (head only, reference frame 3) of it, and a drive job whose video is not one, run by the
    ``batch`` command on one thread with ``--nfe 1``, with 0.4 s of speech. The clip is the
    example clip's first CLIP_FRAMES frames with their sound (analysing all 74 frames would
    triple the cost)."""
    import av

    from float_core.media.video import VideoWriter
    from float_core.video_in import video_audio

    root = tmp_path_factory.mktemp("video_jobs")
    clip = root / "clip.mp4"
    with av.open(CLIP) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(CLIP_FRAMES), container.decode(video=0))]
    with VideoWriter(clip, audio=(video_audio(CLIP, SAMPLE_RATE, CLIP_FRAMES), SAMPLE_RATE),
                     preset="ultrafast") as writer:
        for frame in frames:
            writer.write(frame)
    speech = str(media["speech"])
    jobs = _write_jsonl(root / "video.jsonl", [
        {"id": "hybrid", "image": PORTRAIT, "audio": speech, "drive": str(clip), "drive_groups": "head,eyes",
         "seed": 0},
        {"id": "reenact", "mode": "drive", "image": PORTRAIT, "video": str(clip), "relative": False},
        {"id": "dubbed", "mode": "dub", "video": str(clip), "audio": speech, "groups_from_video": ["head"],
         "reference_frame": 3, "seed": 0},
        {"id": "notavideo", "mode": "drive", "image": PORTRAIT, "video": speech},
    ])
    out = root / "out"
    with one_torch_thread():
        code = main(["batch", str(jobs), "-o", str(out), "--checkpoint", "tiny-random", "--nfe", "1", "-q"])
    return {"root": root, "clip": str(clip), "jobs": jobs, "out": out, "code": code}


def test_video_jobs_equal_the_drive_dub_and_generate_drive_commands(media, video_run, capsys):
    out, root = video_run["out"], video_run["root"]
    assert video_run["code"] == 1  # one job failed; the others ran
    records = {r["id"]: r for r in _records(out)}
    assert {k: (r["status"], r["frames"]) for k, r in records.items()} == {
        "hybrid": ("ok", 10), "reenact": ("ok", CLIP_FRAMES), "dubbed": ("ok", 10), "notavideo": ("failed", None)}
    assert records["notavideo"]["error"] == (f"video {media['speech']}: speech.wav has no video stream; give a "
                                             f"video of a face")
    speech, clip, model = str(media["speech"]), video_run["clip"], ["--checkpoint", "tiny-random", "-q"]
    commands = {
        "hybrid": ["generate", "--image", PORTRAIT, "--audio", speech, "--drive", clip, "--drive-groups", "head,eyes",
                   "--nfe", "1", "--seed", "0"],
        "reenact": ["drive", "--image", PORTRAIT, "--video", clip, "--absolute"],
        "dubbed": ["dub", "--video", clip, "--audio", speech, "--groups", "head", "--reference-frame", "3",
                   "--nfe", "1", "--seed", "0"],
    }
    for key, argv in commands.items():
        direct = root / f"direct_{key}.mp4"
        with one_torch_thread():
            assert main([*argv, "-o", str(direct), *model]) == 0, argv
        np.testing.assert_array_equal(_frames(out / f"{key}.mp4"), _frames(direct), err_msg=key)
    capsys.readouterr()


def test_video_jobs_resume_and_their_hash_follows_what_their_mode_takes(media, video_run, tmp_path, capsys):
    jobs, out = video_run["jobs"], video_run["out"]
    with one_torch_thread():
        code = main(["batch", str(jobs), "-o", str(out), "--checkpoint", "tiny-random", "--nfe", "1", "--seed", "7"])
    assert code == 1  # the job whose video is not one fails again
    err = capsys.readouterr().err
    assert "note: --nfe does not apply to drive jobs; they run without it" in err
    assert "note: --seed does not apply to drive jobs" in err
    # the jobs' own seeds stand, and a drive job samples nothing: nothing runs again
    assert [r["status"] for r in _records(out)[4:]] == ["skipped", "skipped", "skipped", "failed"]
    key = ModelSpec("tiny-random").key()

    def hashes(settings: JobSettings) -> dict[str, str]:
        return {j.id: settings_hash(j, key) for j in load_jobs(jobs, settings).jobs}

    base = hashes(JobSettings(SamplingConfig(nfe=1)))
    assert {k: r["settings_hash"] for k, r in ((r["id"], r) for r in _records(out)[:3])} == {
        k: base[k] for k in ("hybrid", "reenact", "dubbed")}
    sampled = hashes(JobSettings(SamplingConfig(nfe=2)))
    assert sampled["reenact"] == base["reenact"] and sampled["hybrid"] != base["hybrid"]
    assert sampled["dubbed"] != base["dubbed"]
    preset = hashes(JobSettings(SamplingConfig(nfe=1), preset="lips only"))  # generate jobs only
    assert (preset["hybrid"] != base["hybrid"], preset["reenact"], preset["dubbed"]) == (
        True, base["reenact"], base["dubbed"])
    assert hashes(JobSettings(SamplingConfig(nfe=1), crop_scale=2.0))["reenact"] != base["reenact"]
    jobs_by_id = {j.id: j for j in load_jobs(jobs, JobSettings(SamplingConfig(nfe=1))).jobs}
    drive = jobs_by_id["reenact"]
    assert settings_hash(dataclasses.replace(drive, settings=dataclasses.replace(drive.settings, relative=True)),
                         key) != base["reenact"]
    # the video's contents count, not its path
    clip = tmp_path / "clip.mp4"
    shutil.copy(video_run["clip"], clip)
    assert settings_hash(dataclasses.replace(drive, video=str(clip)), key) == base["reenact"]
    with open(clip, "ab") as f:
        f.write(b"\0")
    assert settings_hash(dataclasses.replace(drive, video=str(clip)), key) != base["reenact"]
    hybrid = jobs_by_id["hybrid"]
    assert settings_hash(dataclasses.replace(hybrid, settings=dataclasses.replace(
        hybrid.settings, drive_groups=("head",))), key) != base["hybrid"]
    assert settings_hash(dataclasses.replace(hybrid, video=None), key) != base["hybrid"]


def test_each_mode_needs_and_takes_its_own_fields(media, tmp_path):
    speech, bad = str(media["speech"]), str(media["bad"])
    jobs = _write_jsonl(tmp_path / "modes.jsonl", [
        {"id": "d1", "mode": "drive", "image": PORTRAIT, "video": CLIP, "seed": 0},
        {"id": "d2", "mode": "drive", "image": PORTRAIT, "video": CLIP, "audio": speech},
        {"id": "d3", "mode": "drive", "image": PORTRAIT},
        {"id": "d4", "mode": "drive", "image": PORTRAIT, "video": CLIP, "video_face": 0},
        {"id": "d5", "mode": "drive", "image": PORTRAIT, "video": str(tmp_path / "none.mp4")},
        {"id": "u1", "mode": "dub", "video": CLIP, "audio": speech, "image": PORTRAIT},
        {"id": "u2", "mode": "dub", "video": CLIP},
        {"id": "u3", "mode": "dub", "video": CLIP, "audio": speech, "preset": "lips only"},
        {"id": "u4", "mode": "dub", "video": CLIP, "audio": speech, "reference_frame": -1},
        {"id": "u5", "mode": "dub", "video": CLIP, "audio": speech, "groups_from_video": "head,hair"},
        {"id": "g1", "image": PORTRAIT, "audio": speech, "video": CLIP},
        {"id": "g2", "image": PORTRAIT, "audio": speech, "drive_groups": "head"},
        {"id": "g3", "image": PORTRAIT, "audio": speech, "drive": bad + ".mp4"},
        {"id": "p1", "mode": "puppet", "image": PORTRAIT, "video": CLIP},
        {"id": "ok1", "mode": "Drive", "image": PORTRAIT, "video": CLIP, "video_face": 2, "crop": "no"},
        {"id": "ok2", "mode": "dub", "video": CLIP, "text": "Hello.", "reference_frame": 0, "face": 2},
        {"id": "ok3", "image": PORTRAIT, "audio": speech, "drive": CLIP},
    ])
    loaded = load_jobs(jobs)
    errors = {b.line: b.error for b in loaded.invalid}
    expected = {
        1: "seed: not a field of drive jobs: its motion and sound all come from its video",
        2: "audio: not a field of drive jobs",
        3: "video: missing; a drive job needs the video whose face moves the portrait",
        4: "video_face: 1 is the largest face, 2 the next, ...; got 0",
        5: f"video: no such file: {tmp_path / 'none.mp4'}",
        6: "image: not a field of dub jobs: its identity and picture come from its video",
        7: "give either audio (a speech file) or text (spoken by text-to-speech), not neither",
        8: "preset: not a field of dub jobs",
        9: "reference_frame: a frame of the video at 25 fps, 0 = the first",
        10: "groups_from_video: expected names from mouth, eyes, head, other, got 'hair'",
        11: "video: not a field of generate jobs: its video is the drive field",
        12: "drive_groups: needs drive (the video the groups come from)",
        13: f"drive: no such file: {bad}.mp4",
        14: "mode: expected one of generate, drive, dub, got 'puppet'",
    }
    assert set(errors) == set(expected)
    for line, message in expected.items():
        assert errors[line].startswith(message), (line, errors[line])
    assert "(a drive job takes image, video, relative, crop, paste_back, face, video_face, crop_scale)" in errors[1]
    drive, dub, generate = loaded.jobs
    assert (drive.mode, drive.video, drive.image, drive.settings.video_face, drive.settings.crop) == (
        "drive", CLIP, PORTRAIT, 1, False)
    assert (dub.mode, dub.image, dub.text, dub.settings.reference_frame, dub.settings.face,
            dub.settings.groups_from_video) == ("dub", None, "Hello.", 0, 1, ("head", "eyes", "other"))
    assert (generate.video, generate.settings.drive_groups) == (CLIP, ("head",))
    # a CSV cell holds a quoted group list; booleans as words
    csv_path = tmp_path / "modes.csv"
    csv_path.write_text(f'id,mode,video,audio,image,groups_from_video,relative\n'
                        f'a,dub,{CLIP},{speech},,"eyes, head",\n'
                        f'b,drive,{CLIP},,{PORTRAIT},,no\n')
    a, b = load_jobs(csv_path).jobs
    assert (a.settings.groups_from_video, b.settings.relative) == (("eyes", "head"), False)
