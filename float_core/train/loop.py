"""Training infrastructure shared by both FLOAT stages.

Everything a stage needs around its loss: run configuration (dataclass, YAML, command line),
data parallelism (``torchrun`` -> DDP), bf16 autocast, deterministic step-indexed randomness,
resumable checkpoints, scalar logs (TensorBoard + ``metrics.jsonl``) and exports under the
released checkpoint's key names.

Determinism and resume. Every random draw of a step (the batch, flow times, noise, condition
dropout) is a pure function of ``(seed, step, rank)``: the data sampler hands item indices
``step * global_batch + rank * batch + j`` to datasets that seed themselves per index, and the
stage draws its noise from :func:`step_generator`. A resumed run therefore reproduces the
losses of an uninterrupted one exactly (``tests/test_train_stages.py`` checks it); the global
RNG states are saved as well for anything that still uses them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import FloatConfig

if TYPE_CHECKING:
    from ..models.float_model import FloatModel

log = logging.getLogger("float_core.train")

#: File name of the latest checkpoint pointer inside ``<out>/checkpoints``.
LATEST = "latest.txt"
#: Name of the exported weights (the released checkpoint's name and key layout).
EXPORT_NAME = "float.pth"

C = TypeVar("C", bound="RunConfig")

#: Learning-rate schedules (``RunConfig.lr_schedule``, :func:`lr_factor`).
LR_SCHEDULES = ("constant", "cosine")


# --------------------------------------------------------------------------- configuration
@dataclass
class RunConfig:
    """Options common to both stages (each stage subclasses this with its own fields).

    Attributes:
        data: a folder written by ``python -m float_core.train prepare``.
        out: run folder (checkpoints, logs, samples, exported weights).
        model: model size preset, ``official`` (the released architecture) or ``tiny`` (tests).
        base: weights the run starts from: a released-layout folder or file, ``tiny-random``, or
            ``none`` (random initialisation; stage 1 only).
        finetune: start the trained networks from ``base`` (fine-tuning) instead of a fresh
            random initialisation.
        steps: total optimisation steps (a resumed run continues up to this number).
        batch_size: global batch size, split evenly over the processes (paper: 8).
        lr: Adam learning rate (the peak one under a schedule).
        lr_schedule: ``constant`` (the paper's) or ``cosine`` (from ``lr`` down to ~0 over
            ``steps``; a resumed run keeps it only when ``steps`` is unchanged).
        seed: seeds the data order, the noise and the initialisation.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; under torchrun each process
            takes ``cuda:LOCAL_RANK``.
        mixed_precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``no``.
        num_workers: DataLoader worker processes per training process.
        log_every, save_every, sample_every: intervals in steps (0 = never; a checkpoint and
            the export are always written at the end).
        keep_checkpoints: how many step checkpoints to keep (older ones are deleted).
        resume: ``auto`` (continue from ``<out>/checkpoints`` when present), ``never``, or a
            checkpoint path.
        progress: show a tqdm progress bar (rank 0 only).
        audio_model, emotion_model: Hugging Face ids or folders of the two wav2vec2 models, for
            ``base none`` or a base without them (see :func:`load_base_model`).
    """

    data: str = ""
    out: str = "runs/float"
    model: str = "official"
    base: str = "checkpoints"
    finetune: bool = False
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "constant"
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "auto"
    num_workers: int = 2
    log_every: int = 10
    save_every: int = 1000
    sample_every: int = 0
    keep_checkpoints: int = 3
    resume: str = "auto"
    progress: bool = True
    audio_model: str = ""
    emotion_model: str = ""

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if not self.data:
            raise ValueError("data: pass the folder written by `python -m float_core.train prepare` (--data DIR)")
        FloatConfig.preset(self.model)
        if self.mixed_precision not in ("auto", "bf16", "no"):
            raise ValueError(f"mixed_precision must be auto, bf16 or no, got {self.mixed_precision!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("log_every", "save_every", "sample_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")

    def model_config(self) -> FloatConfig:
        return FloatConfig.preset(self.model)


def config_from_sources(cls: type[C], yaml_file: str | None = None, overrides: Mapping[str, Any] | None = None) -> C:
    """Build a run config from defaults, then a YAML file, then explicit overrides (e.g. CLI flags).

    Unknown keys are errors that list the known ones (a misspelt option must not be ignored).
    """
    values: dict[str, Any] = {}
    if yaml_file:
        import yaml

        try:
            loaded = yaml.safe_load(Path(yaml_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the config file {yaml_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_file} must hold a mapping of option: value")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    config = cls(**values)
    config.validate()
    return config


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[RunConfig]) -> None:
    """One ``--option`` per dataclass field (defaults None so that YAML values are not overridden).

    Help texts come from the "Attributes" section of the class docstrings.
    """
    docs, types = _attribute_docs(cls), typing.get_type_hints(cls)
    parser.add_argument("--config", help="YAML file of options (command-line flags override it)")
    for f in dataclasses.fields(cls):
        kind = types[f.name]
        flags = ["--" + f.name.replace("_", "-")]
        if f.name == "out":
            flags.insert(0, "-o")  # every command spells its output -o/--out
        help_text = f"{docs.get(f.name, '')} (default: {f.default})"
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, action=_BoolAction, default=None, help=help_text)
        else:
            parser.add_argument(*flags, dest=f.name, type=kind if kind in (int, float) else str, default=None,
                                help=help_text)


def _attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> its entry in the "Attributes:" sections of the class docstrings (MRO order)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = klass.__doc__ or ""
        if "Attributes:" not in text:
            continue
        entries: list[tuple[list[str], list[str]]] = []
        for line in text.split("Attributes:", 1)[1].splitlines():
            stripped = line.strip()
            head, sep, rest = stripped.partition(": ")
            if sep and all(part.isidentifier() for part in head.split(", ")):
                entries.append((head.split(", "), [rest]))
            elif stripped and entries:
                entries[-1][1].append(stripped)
        for names, parts in entries:
            for name in names:
                docs[name] = " ".join(parts).replace("%", "%%")
    return docs


class _BoolAction(argparse.Action):
    """``--flag`` (true) or ``--flag true|false`` for boolean options."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        text = "true" if value is None else str(value).lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            parser.error(f"{option_string} expects true or false, got {value!r}")
        setattr(namespace, self.dest, text in ("1", "true", "yes", "on"))


# --------------------------------------------------------------------------- processes and devices
@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> Distributed:
    """Join the torchrun process group when launched by torchrun, else run as one process.

    ``torchrun --nproc_per_node N -m float_core.train stage2 ...`` sets ``WORLD_SIZE``, ``RANK``
    and ``LOCAL_RANK``; each process then drives ``cuda:LOCAL_RANK`` with NCCL (gloo on CPU).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was requested but no CUDA GPU is available; use --device cpu")
    torch_device = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, torch_device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, ctx: Distributed) -> int:
    """Per-process batch; the global batch must split evenly so every process does equal work."""
    if global_batch % ctx.world_size:
        raise ValueError(f"batch_size {global_batch} must be divisible by the number of processes ({ctx.world_size})")
    return global_batch // ctx.world_size


def autocast(ctx: Distributed, mixed_precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on GPU (``auto``/``bf16``) or on CPU (``bf16`` only); fp32 otherwise."""
    use = mixed_precision == "bf16" or (mixed_precision == "auto" and ctx.device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16)


def average_gradients(parameters: Sequence[nn.Parameter], ctx: Distributed) -> None:
    """All-reduce (mean) gradients by hand, for networks not wrapped in DDP (the discriminators:
    they run inside the generator's loss with frozen parameters, which DDP's reducer cannot follow)."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def host_scalars(values: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Scalar logs (0-dim tensors on the training device, or numbers) as Python floats, with
    one explicit device-to-host copy: one sync per step instead of one ``.item()`` per value."""
    keys = list(values)
    scalars = [torch.as_tensor(values[k]).detach().float().reshape(()) for k in keys]
    stacked = torch.stack([s.to(scalars[0].device) for s in scalars])  # stack needs one device
    return dict(zip(keys, stacked.cpu().tolist()))


def all_mean(values: Mapping[str, float], ctx: Distributed) -> dict[str, float]:
    """Average scalar logs over processes (the logged loss is the global batch's)."""
    if not ctx.enabled or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return {k: v / ctx.world_size for k, v in zip(keys, t.cpu().tolist())}


# --------------------------------------------------------------------------- randomness and data
def step_generator(seed: int, step: int, rank: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, rank, stream): see the module docstring."""
    mixed = np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


class StepSampler(torch.utils.data.Sampler[int]):
    """Infinite index stream ``step * global_batch + rank * batch + j`` from ``start_step`` on.

    Datasets seed each item by its index, so item ``i`` is the same on every run: the data of
    step ``k`` does not depend on how many steps ran before (resume) or on worker count.
    """

    def __init__(self, batch_size: int, ctx: Distributed, start_step: int = 0):
        self.batch_size, self.ctx, self.start_step = batch_size, ctx, start_step

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        global_batch = self.batch_size * self.ctx.world_size
        while True:
            base = step * global_batch + self.ctx.rank * self.batch_size
            yield from range(base, base + self.batch_size)
            step += 1


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int, ctx: Distributed, start_step: int,
                num_workers: int) -> Iterator[dict[str, Tensor]]:
    """Batches of ``dataset`` for steps ``start_step, start_step + 1, ...`` (see :class:`StepSampler`)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=StepSampler(batch_size, ctx, start_step),
        num_workers=num_workers, pin_memory=ctx.device.type == "cuda", drop_last=True,
        persistent_workers=num_workers > 0,
    )
    return iter(loader)


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """The factor of the base learning rate at 0-based ``step`` of a ``steps``-step run.

    ``constant``: 1. ``cosine``: ``(1 + cos(pi * step / steps)) / 2``, 1 at the first step and
    ~0 at the last (Loshchilov & Hutter's cosine annealing, without restarts). A pure function of
    the step, so a resumed run follows the same schedule as an uninterrupted one. Decaying to
    ~0 lets the last steps average out Adam's noise: at a constant rate the weights keep
    wandering, and what the model does depends on the step at which the run happens to stop.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / steps))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def set_learning_rates(optimizers: Sequence[torch.optim.Optimizer], factor: float) -> None:
    """Set every parameter group's rate to ``factor`` times its initial one (kept as ``initial_lr``,
    the key torch's schedulers use, so that it is saved and restored with the optimiser's state)."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (initialisation draws from these)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Global RNG states (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- checkpoints
def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class CheckpointManager:
    """Resumable training state under ``<out>/checkpoints/step_XXXXXXXX.pt`` (+ ``latest.txt``).

    A checkpoint holds the networks, the optimisers, the step, the RNG states and the run
    config; :meth:`save` keeps the newest ``keep`` files.
    """

    def __init__(self, out: str | os.PathLike[str], keep: int = 3):
        self.folder = Path(out) / "checkpoints"
        self.keep = keep

    def path_for(self, step: int) -> Path:
        return self.folder / f"step_{step:08d}.pt"

    def save(self, step: int, state: dict[str, Any]) -> Path:
        path = self.path_for(step)
        _atomic_save({**state, "step": step}, path)
        tmp = self.folder / (LATEST + ".tmp")
        tmp.write_text(path.name + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / LATEST)
        for old in sorted(self.folder.glob("step_*.pt"))[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        pointer = self.folder / LATEST
        if not pointer.is_file():
            return None
        path = self.folder / pointer.read_text(encoding="utf-8").strip()
        return path if path.is_file() else None

    def resolve(self, resume: str) -> Path | None:
        """The checkpoint to resume from for the ``resume`` option (None: start fresh)."""
        if resume == "never":
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not path.is_file():
            raise ValueError(f"resume: no checkpoint file at {path}")
        return path

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ValueError(f"cannot read the training checkpoint {path}: {exc}") from exc


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def wrap_ddp(module: nn.Module, ctx: Distributed) -> nn.Module:
    if not ctx.enabled:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


# --------------------------------------------------------------------------- exports
def export_weights(state_dict: Mapping[str, Tensor], config: FloatConfig, folder: str | os.PathLike[str],
                   name: str = EXPORT_NAME) -> Path:
    """Write weights under the released key names (``float.pth``) plus, for a non-official
    size, the ``float_config.json`` that ``FloatPipeline.from_pretrained(folder)`` reads."""
    from ..weights import save_weights

    return save_weights(state_dict, config, Path(folder) / name)


# --------------------------------------------------------------------------- logs
class ScalarLogger:
    """Scalars to TensorBoard (when installed) and to ``metrics.jsonl`` (always); rank 0 only."""

    def __init__(self, out: str | os.PathLike[str], enabled: bool = True):
        self.enabled = enabled
        self.path = Path(out) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is in requirements-dev.txt; training still runs without it
            log.warning("tensorboard is not installed: scalars go to %s only (pip install tensorboard)", self.path)
        else:
            self._tb = SummaryWriter(str(Path(out) / "tensorboard"))

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **{k: float(v) for k, v in values.items()}}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, float(value), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(out: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The rows of ``<out>/metrics.jsonl`` (for tests and plots)."""
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def progress_bar(total: int, initial: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step",
                dynamic_ncols=True, file=sys.stderr)


def should(every: int, step: int) -> bool:
    """True on every ``every``-th step (1-based step counts); ``every == 0`` means never."""
    return every > 0 and step % every == 0


# --------------------------------------------------------------------------- models
def load_base_model(base: str, config: FloatConfig, *, seed: int = 0, audio_model: str = "",
                    emotion_model: str = "") -> "FloatModel":
    """The FLOAT model a run starts from, in float32 on the CPU.

    Args:
        base: ``none`` (random weights, seeded), ``tiny-random`` (the tests' tiny model), or
            weights in any form :func:`float_core.weights.resolve_sources` accepts (the released
            layout, a single file, a training export with its ``float_config.json``).
        config: the run's model size; a checkpoint of another size is an error.
        audio_model, emotion_model: Hugging Face ids or folders of the wav2vec2 models; with
            ``base=none`` they replace the random condition encoders (training from scratch
            without ``float.pth``), otherwise they fill keys the checkpoint lacks.
    """
    from ..models.float_model import FloatModel
    from ..pipeline import TEST_MODEL_NAME, FloatPipeline
    from ..weights import load_model, pretrained_encoder_weights, resolve_sources

    if base == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FloatModel(config)
        if audio_model or emotion_model:
            model.load_state_dict(pretrained_encoder_weights(config, audio_model or None, emotion_model or None),
                                  strict=False)
        return model
    if base == TEST_MODEL_NAME:
        if config != FloatConfig.tiny():
            raise ValueError(f"base {TEST_MODEL_NAME} is the tiny model; use it with --model tiny")
        return FloatPipeline.tiny_random().model.train().requires_grad_(True)
    sources = resolve_sources(base, audio_model or None, emotion_model or None)
    found = FloatConfig.for_checkpoint(sources.checkpoint)
    if found != config:
        raise ValueError(f"base {base} holds a model of another size than --model (its float_config.json "
                         f"{'is absent, i.e. official' if found == FloatConfig.official() else 'differs'}); "
                         f"pass the matching --model")
    return load_model(config, sources, device="cpu").train().requires_grad_(True)


def fresh_init(module: nn.Module, factory: Any, seed: int) -> None:
    """Re-initialise ``module`` in place with the weights of a freshly built ``factory()`` (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = factory()
    module.load_state_dict(fresh.state_dict())


@contextlib.contextmanager
def inference_view(model: nn.Module) -> Iterator[nn.Module]:
    """Use a training model for inference (e.g. through ``FloatPipeline``, which switches it to eval
    mode and freezes it) and restore its train/eval modes and ``requires_grad`` flags afterwards."""
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        with torch.no_grad():
            yield model
    finally:
        for name, m in model.named_modules():
            m.training = modes[name]
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])


# --------------------------------------------------------------------------- the loop
class StageTrainer:
    """The loop shared by both stages; a stage fills in the hooks.

    Hooks: :meth:`build` (networks and optimisers, on ``self.ctx.device``), :meth:`dataset`,
    :meth:`train_step` (one optimisation step; returns scalar logs), :meth:`state_dict` /
    :meth:`load_state_dict` (everything resumable), :meth:`optimizers` (those whose rates
    ``lr_schedule`` sets), :meth:`export` (weights under the released names) and optionally
    :meth:`sample` (a video for eyeballing progress).
    """

    name = "stage"

    def __init__(self, config: RunConfig):
        config.validate()
        self.config = config
        self.model_config = config.model_config()
        self.out = Path(config.out)
        self.ctx = init_distributed(config.device)
        self.batch = local_batch_size(config.batch_size, self.ctx)

    # hooks ------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def train_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def optimizers(self) -> list[torch.optim.Optimizer]:
        raise NotImplementedError

    def export(self) -> Path:
        raise NotImplementedError

    def sample(self, step: int) -> Path | None:
        return None

    # the loop ---------------------------------------------------------------
    def run(self) -> Path:
        """Train to ``config.steps`` (resuming when asked) and return the exported weights' path."""
        cfg, ctx = self.config, self.ctx
        seed_everything(cfg.seed)
        dataset = self.dataset()  # first: a wrong --data fails before minutes of model loading
        self.build()
        checkpoints = CheckpointManager(self.out, cfg.keep_checkpoints)
        start = 0
        resume_from = checkpoints.resolve(cfg.resume)
        if resume_from is not None:
            state = checkpoints.load(resume_from)
            if state.get("stage") != self.name:
                raise ValueError(f"{resume_from} is a {state.get('stage')!r} checkpoint, not {self.name!r}")
            self.load_state_dict(state)
            restore_rng(state["rng"])
            start = int(state["step"])
            if ctx.is_main:
                log.info("resumed from %s at step %d", resume_from, start)
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / f"{self.name}_config.json").write_text(
                json.dumps(dataclasses.asdict(cfg), indent=2) + "\n", encoding="utf-8")
        logger = ScalarLogger(self.out, enabled=ctx.is_main)
        bar = progress_bar(cfg.steps, start, cfg.progress and ctx.is_main, f"{self.name}")
        try:
            if start < cfg.steps:
                batches = make_loader(dataset, self.batch, ctx, start, cfg.num_workers)
                for step in range(start, cfg.steps):
                    batch = {k: v.to(ctx.device, non_blocking=True) for k, v in next(batches).items()}
                    if cfg.lr_schedule != "constant":
                        set_learning_rates(self.optimizers(), lr_factor(cfg.lr_schedule, step, cfg.steps))
                    values = self.train_step(batch, step)
                    done = step + 1
                    bar.update(1)
                    if should(cfg.log_every, done) or done == cfg.steps:
                        values = all_mean(values, ctx)
                        logger.log(done, values)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k.startswith("loss")})
                    if should(cfg.save_every, done) or done == cfg.steps:
                        self._save(checkpoints, done)
                    if should(cfg.sample_every, done) and ctx.is_main:
                        self.sample(done)
            path = self.export() if ctx.is_main else self.out / EXPORT_NAME
            if ctx.enabled:
                dist.barrier()
            return path
        finally:
            bar.close()
            logger.close()

    def _save(self, checkpoints: CheckpointManager, step: int) -> None:
        if self.ctx.is_main:
            checkpoints.save(step, {"stage": self.name, **self.state_dict(), "rng": capture_rng(),
                                    "config": dataclasses.asdict(self.config)})
        if self.ctx.enabled:
            dist.barrier()
