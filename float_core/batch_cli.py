"""``python -m float_core batch JOBS -o DIR``: many videos from a job file, resumable, locally or on Ray.

Each job of JOBS (CSV with a header, JSON list or JSON Lines; modes and fields in
:mod:`float_core.batch`: generate, optionally with the head from a video, drive and dub) becomes
``DIR/<id>.mp4``, and ``DIR/results.jsonl`` gets one line per job as it ends. Running
the same command again skips the jobs already made with the same settings. Exit status 0 when
every job is ok or skipped, 1 when any failed (after all have run), 2 for a usage error.
``generate --jobs FILE -o DIR`` is this command in local mode.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .cli_options import add_generation_and_model_groups, settings_from_args

__all__ = ["add_subparser", "run", "run_jobs"]


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch", help="make many videos from a job file (resumable; one process or a Ray cluster)",
        description="Make one talking-head MP4 per job of a job file (CSV with a header row, JSON list or "
                    "JSON Lines). A job's mode decides its fields: generate (the default; id, image, audio or "
                    "text with an optional voice such as espeak:en-us+f3, and optionally drive, a video whose "
                    "face gives drive_groups, the head by default), drive (id, image, video: the portrait moves "
                    "as the video's face) or dub (id, video, audio or text: the video's lips follow the speech); "
                    "optional settings as in generate, drive and dub. Writes OUT/<id>.mp4 and OUT/results.jsonl; "
                    "a second run skips the jobs already made with the same settings. A job's own settings "
                    "override the flags below, which apply to the jobs whose mode takes them.",
    )
    p.add_argument("jobs", metavar="JOBS", help="the job file (.csv, .json or .jsonl)")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="output folder for <id>.mp4 and results.jsonl (with Ray: a path every node can write)")
    r = p.add_argument_group("workers")
    r.add_argument("--ray", nargs="?", const=True, default=False, metavar="ADDRESS",
                   help="run on Ray: alone, a local Ray on this machine (or the cluster of $RAY_ADDRESS); "
                        "with an address ('auto', 'ray://head:10001'), that cluster")
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Ray actors, each holding one model (default: one per GPU, or one per node)")
    r.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0: CPU actors)")
    r.add_argument("--cpus-per-worker", type=int, default=None, metavar="C",
                   help="CPUs (torch threads) per actor (default: 1 with GPUs, else a node's CPUs "
                        "shared by its actors)")
    r.add_argument("--retries", type=int, default=2, metavar="R",
                   help="tries more for a job whose worker died or ran out of memory (default: 2)")
    add_generation_and_model_groups(p, "generation defaults (a job's own fields override them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The ``batch`` command."""
    if args.ray is False and any(v is not None for v in (args.workers, args.gpus_per_worker, args.cpus_per_worker)):
        print("error: --workers, --gpus-per-worker and --cpus-per-worker need --ray "
              "(without it one process runs the jobs in order)", file=sys.stderr)
        return 2
    return run_jobs(args, args.jobs, args.out, ray=args.ray)


def run_jobs(args: argparse.Namespace, jobs_path: str, out_dir: str, *, ray: bool | str = False) -> int:
    """Run a job file with the generation and model flags of ``args`` (``batch`` and
    ``generate --jobs``): malformed lines are printed with their line numbers, a progress bar
    counts the jobs, and a summary line ends the run. Returns the exit status."""
    from .batch import RESULTS_FILE, BatchError, JobResult, ModelSpec, load_jobs, parse_settings, run_batch

    try:
        defaults = parse_settings(settings_from_args(args))
        job_file = load_jobs(jobs_path, defaults)
    except ValueError as exc:  # BatchError too: an unusable job file or flag
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for bad in job_file.invalid:
        print(f"{jobs_path} line {bad.line}: {bad.error}", file=sys.stderr)
    _note_flags_not_taken(defaults, job_file.jobs)
    bar = _Bar(job_file.total, quiet=args.quiet)
    model = ModelSpec(args.checkpoint, args.audio_model, args.emotion_model, device=args.device, dtype=args.dtype)

    def report(result: JobResult) -> None:
        if result.status == "failed" and result.attempts:  # invalid lines were printed above
            bar.write(f"{result.id}: failed: {result.error}")
        bar.update(result)

    try:
        summary = run_batch(job_file, out_dir, model, ray=ray, workers=getattr(args, "workers", None),
                            gpus_per_worker=getattr(args, "gpus_per_worker", None),
                            cpus_per_worker=getattr(args, "cpus_per_worker", None),
                            retries=getattr(args, "retries", 2), batch_size=args.batch_size,
                            max_seconds=args.max_seconds, on_result=report)
    except ValueError as exc:  # BatchError: no model (1); a bad --retries, --batch-size, --workers (2)
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, BatchError) else 2
    finally:
        bar.close()
    if not args.quiet and summary.workers:
        replaced = f" ({summary.replaced} died and were replaced)" if summary.replaced else ""
        print(f"workers{replaced}: {'; '.join(summary.workers)}", file=sys.stderr)
    print(f"{summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped of {summary.total} jobs in "
          f"{summary.seconds:.1f} s; results: {Path(out_dir) / RESULTS_FILE}")
    return summary.exit_code


def _note_flags_not_taken(defaults: Any, jobs: Any) -> None:
    """Say which flags given on the command line some jobs' modes do not take (e.g. ``--seed``
    for drive jobs, which sample nothing): they run without them."""
    from .batch import MODE_FIELDS, SETTING_FIELDS, JobSettings

    given, unset = defaults.to_dict(), JobSettings().to_dict()
    for name in SETTING_FIELDS:
        modes = sorted({job.mode for job in jobs if name not in MODE_FIELDS[job.mode]})
        if given[name] != unset[name] and modes:
            flag = "--no-crop" if name == "crop" else f"--{name.replace('_', '-')}"
            print(f"note: {flag} does not apply to {' and '.join(modes)} jobs; they run without it", file=sys.stderr)


class _Bar:
    """A tqdm bar of jobs (done, failed, ETA) on stderr, or nothing with ``quiet``."""

    def __init__(self, total: int, quiet: bool):
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.tqdm: Any = None
        if not quiet:
            from tqdm.auto import tqdm

            self.tqdm = tqdm(total=total, desc="jobs", unit="job", file=sys.stderr)

    def update(self, result: Any) -> None:
        self.counts[result.status] += 1
        if self.tqdm is not None:
            self.tqdm.set_postfix(self.counts, refresh=False)
            self.tqdm.update(1)

    def write(self, text: str) -> None:
        if self.tqdm is not None:
            self.tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
