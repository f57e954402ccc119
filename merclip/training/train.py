"""`merclip train`: train MER-CLIP on one dataset, keep the best checkpoint by validation score.

Run directory (`--out`):
- `best.pt`   checkpoint with the best validation score (emotion: micro-F1; sentiment: weighted
              F1, non-0 convention when regression labels exist; both tasks: their mean)
- `last.pt` + `train_state.pt`   the latest epoch and the optimiser/scheduler/RNG state, so
              `--resume` continues exactly where an interrupted run stopped
- `history.json`   per-epoch losses, validation metrics, seconds
- `summary.json`   test metrics of best.pt next to the label-frequency baseline

CPU or GPU automatically (`--device auto`); on CUDA the forward runs under autocast (bfloat16
where supported, else float16 with a gradient scaler).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from merclip.batch import Sample, collate
from merclip.checkpoint import load_checkpoint, save_checkpoint
from merclip.clip_backbone import load_clip
from merclip.config import MerClipConfig, load_model_config
from merclip.data.sources import DataSource, load_sources
from merclip.data.synthetic import SyntheticSpec
from merclip.devices import resolve_device
from merclip.errors import ConfigError, DatasetError
from merclip.minilm import load_minilm
from merclip.model import MerClip
from merclip.settings import MerClipSettings, TrainSettings
from merclip.training.evaluate import baseline_metrics, evaluate_model, has_task_labels
from merclip.training.mixing import epoch_samples, group_of

__all__ = [
    "TrainOptions",
    "TrainResult",
    "add_arguments",
    "build_config",
    "run",
    "metrics_by_dataset",
    "selection_score",
    "train",
]

log = logging.getLogger(__name__)

NO_WORD = "none"
"""Query word meaning "learnable prompts only" (the paper's "(no word)")."""


@dataclass
class TrainOptions:
    data: str | tuple[str, ...] = "synthetic"
    """One `--data` spec, or several trained together (merged split by split)."""
    out_dir: Path = Path("runs/merclip")
    model: str = "merclip-tiny-live"
    tasks: tuple[str, ...] = ("emotion",)
    query_word: str = ""
    """"" = the config's word ("Emotion"/"Sentiment"); "none" = learnable prompts only."""
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    emotion_labels: Path | None = None
    clip_pretrained: str | None = None
    """CLIP weights for the label/query text tower; None = the live dataset's source (or '')."""
    progress: bool = field(default_factory=lambda: sys.stderr.isatty())
    synthetic: SyntheticSpec | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """Extra model config fields (e.g. {"dropout": 0.1})."""
    stop_after_epoch: int | None = None
    """Stop after this epoch (e.g. a time-sliced job); `--resume` continues the same schedule."""
    threads: int | None = None
    """torch CPU threads (None = torch's default). Small models on a busy machine run far faster
    with 1 thread than with oversubscribed ones."""
    min_share: float = 0.0
    """Repeat each dataset to at least this share of the largest (mixing.py); 0 = off."""
    compose: float = 0.0
    """Extra composed multimodal samples per epoch, as a fraction of the epoch (mixing.py)."""
    max_per_dataset: int | None = None
    """A larger dataset contributes a fresh random subset of this size per epoch (mixing.py)."""
    limit_per_class: int | None = None
    """Raw emotion datasets: keep the first N items per class (quick runs, tests)."""

    @classmethod
    def from_settings(cls, train: TrainSettings, **fields: Any) -> TrainOptions:
        """Options whose fields shared with the [train] section (`_FROM_SETTINGS`) come from
        `train`, with the command-line flags already in it (`Settings.replace`); `fields` sets
        the rest."""
        return cls(**{name: getattr(train, name) for name in _FROM_SETTINGS}, **fields)


_FROM_SETTINGS: tuple[str, ...] = (
    "query_word",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "seed",
    "device",
)
"""The TrainOptions fields that are also [train] settings (`TrainSettings`), same names."""


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_score: float
    history: dict[str, Any]
    test: dict[str, Any]
    """{task: {"model": metrics, "baseline": metrics}} on the test split (eval split if none)."""


def selection_score(
    metrics: dict[str, dict[str, Any]],
    by_dataset: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> float:
    """Mean over tasks of emotion micro-F1 / sentiment weighted F1; with `by_dataset` (several
    datasets in the validation split), the mean over every (dataset, task) that has labels, so
    3.6k FER2013 faces do not outvote 240 RAVDESS clips."""
    if by_dataset:
        return float(np.mean([m["f1"] for d in by_dataset.values() for m in d.values()]))
    return float(np.mean([m["f1"] for m in metrics.values()]))


def metrics_by_dataset(
    model: MerClip,
    samples: Sequence[Sample],
    tasks: Sequence[str],
    batch_size: int,
    device: torch.device,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{dataset: {task: metrics}} when `samples` come from several datasets, else {}."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(group_of(s), []).append(s)
    if len(groups) < 2:
        return {}
    return {
        name: {
            t: evaluate_model(model, group, t, batch_size, device)
            for t in tasks
            if any(has_task_labels(s, t) for s in group)
        }
        for name, group in sorted(groups.items())
    }


def build_config(opts: TrainOptions, source: DataSource) -> MerClipConfig:
    """The model config for this run: named config + tasks, query word, data dims."""
    config = load_model_config(opts.model)
    changes: dict[str, Any] = {"tasks": list(opts.tasks), **opts.overrides}
    if opts.query_word:
        word = "" if opts.query_word.lower() == NO_WORD else opts.query_word
        for task in opts.tasks:
            changes[f"{task}_query_word"] = word
    if source.feature_space is not None and source.feature_space != config.feature_space:
        example = "merclip-b32-live" if source.feature_space == "live" else "merclip-b32-mosei"
        raise ConfigError(
            f"--data {source.spec} is in the {source.feature_space!r} feature space but model "
            f"{opts.model!r} expects {config.feature_space!r} features: pick a model of the "
            f"{source.feature_space!r} space (e.g. {example})"
        )
    if source.dims != config.dims:
        if source.feature_space == "live":
            raise ConfigError(
                f"live dataset dims {source.dims} differ from model {opts.model!r} dims "
                f"{config.dims}: the features come from another CLIP model"
            )
        log.info("model dims %s set from the data: %s", config.dims, source.dims)
        changes["dims"] = dict(source.dims)
    if source.feature_space == "live" and source.meta.get("clip_model") != config.clip_model:
        # (live-pretrained has no CLIP: its encoders are fixed by the space itself)
        raise ConfigError(
            f"live dataset was extracted with CLIP {source.meta.get('clip_model')!r}, model "
            f"{opts.model!r} uses {config.clip_model!r}"
        )
    return config.replace(**changes)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _targets(samples: Sequence[Sample], task: str) -> torch.Tensor:
    if task == "emotion":
        return torch.from_numpy(np.stack([np.asarray(s.emotion, np.float32) for s in samples]))
    return torch.tensor([int(s.sentiment) for s in samples], dtype=torch.long)  # type: ignore[arg-type]


def _batch_loss(
    model: MerClip,
    samples: Sequence[Sample],
    tasks: Sequence[str],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor | None:
    """Sum over tasks of the loss on the samples labelled for that task."""
    total: torch.Tensor | None = None
    for task in tasks:
        labelled = [s for s in samples if has_task_labels(s, task)]
        if not labelled:
            continue
        batch = collate(labelled, model.dims).to(device)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            out = model(batch, task, _targets(labelled, task).to(device))
        loss = out.loss.float()  # type: ignore[union-attr]
        total = loss if total is None else total + loss
    return total


@torch.no_grad()
def _valid_loss(
    model: MerClip,
    samples: Sequence[Sample],
    tasks: Sequence[str],
    batch_size: int,
    device: torch.device,
) -> float:
    model.eval()
    losses, weights = [], []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        loss = _batch_loss(model, chunk, tasks, device, None)
        if loss is not None:
            losses.append(float(loss.detach()))
            weights.append(len(chunk))
    return float(np.average(losses, weights=weights)) if losses else math.nan


def train(opts: TrainOptions) -> TrainResult:
    """Train (or resume) a run; returns the best checkpoint and its test metrics."""
    _seed_everything(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device, "--device / train.device")
    out = Path(opts.out_dir)
    splits, config = _load_splits(opts)
    model, state, history = _start_or_resume(opts, config, splits.source, out, device)
    out.mkdir(parents=True, exist_ok=True)
    loop = _make_loop(opts, model, splits.train, device, state)
    for epoch in range(loop.start_epoch, opts.epochs + 1):
        t0 = time.perf_counter()
        losses = _train_epoch(opts, model, splits.train, loop, epoch, device)
        record, metrics = _validate(opts, model, splits, loop, epoch, losses, device, t0)
        history["epochs"].append(record)
        _keep_best(opts, model, out, loop, record, metrics, splits.eval_name, history)
        log.info(
            "epoch %d/%d: train loss %.4f, valid loss %.4f, valid score %.4f%s (%.1fs)",
            epoch,
            opts.epochs,
            record["train_loss"],
            record["valid_loss"],
            record["score"],
            " (best)" if loop.best_epoch == epoch else "",
            record["seconds"],
        )
        if opts.stop_after_epoch is not None and epoch >= opts.stop_after_epoch:
            break
    return _test_best(opts, out, splits, loop, history, device)


@dataclass
class _Splits:
    """The run's data: the samples to train on, validate on (model selection) and test on."""

    source: DataSource
    train: list[Sample]
    """Training samples with labels of at least one of the run's tasks."""
    valid: list[Sample]
    valid_tasks: list[str]
    """Tasks the validation split has labels of: a task without them is trained, not scored."""
    eval_name: str
    test_name: str


def _load_splits(opts: TrainOptions) -> tuple[_Splits, MerClipConfig]:
    """Load the data and build the run's model config from it (dims, feature space)."""
    probe = load_model_config(opts.model)
    source = load_sources(
        opts.data,
        probe.dims,
        opts.emotion_labels,
        opts.seed,
        opts.synthetic,
        limit_per_class=opts.limit_per_class,
    )
    config = build_config(opts, source)
    train_set = [s for s in source.split("train") if any(has_task_labels(s, t) for t in opts.tasks)]
    if not train_set:
        raise DatasetError(f"{opts.data}: no training sample has {'/'.join(opts.tasks)} labels")
    eval_name = source.eval_split()
    valid_set = source.split(eval_name)
    # A task whose labels the validation split lacks is trained but not used for selection.
    valid_tasks = [t for t in opts.tasks if any(has_task_labels(s, t) for s in valid_set)]
    if not valid_tasks:
        raise DatasetError(f"{opts.data}: the {eval_name!r} split has no labels of {opts.tasks}")
    test_name = "test" if source.splits.get("test") else eval_name
    return _Splits(source, train_set, valid_set, valid_tasks, eval_name, test_name), config


def _start_or_resume(
    opts: TrainOptions, config: MerClipConfig, source: DataSource, out: Path, device: torch.device
) -> tuple[MerClip, dict[str, Any] | None, dict[str, Any]]:
    """(model, saved training state or None, history): from OUT/last.pt with --resume, else a
    new model and an empty history."""
    last_path, state_path = out / "last.pt", out / "train_state.pt"
    if opts.resume and last_path.is_file() and state_path.is_file():
        model = load_checkpoint(last_path, device=device)
        if model.config.to_dict() != config.to_dict():
            raise ConfigError(
                f"--resume: {last_path} was trained with another model config/task/query word; "
                "use a new --out or the same options"
            )
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        history = json.loads((out / "history.json").read_text(encoding="utf-8"))
        log.info("resuming %s from epoch %d", out, state["epoch"])
        return model, state, history
    if opts.resume:
        log.warning("--resume: no last.pt/train_state.pt in %s, starting fresh", out)
    pretrained = opts.clip_pretrained
    if pretrained is None:
        pretrained = str(source.meta.get("clip_pretrained", "")) if source.meta else ""
    backbone = (
        load_minilm() if config.text_tower == "minilm" else load_clip(config.clip_model, pretrained)
    )
    model = MerClip(config, backbone).to(device)
    history = {
        "model": config.name,
        "tasks": list(opts.tasks),
        "data": _spec_text(opts.data),
        "query_words": {t: config.query_word(t) for t in opts.tasks},
        "selection_metric": "mean validation F1 ("
        + ", ".join("micro" if t == "emotion" else "weighted" for t in opts.tasks)
        + "; per dataset, then averaged, when several are trained together)",
        "options": _jsonable(asdict(opts)),
        "epochs": [],
    }
    return model, None, history


@dataclass
class _Loop:
    """What carries over from epoch to epoch (and, through train_state.pt, across --resume)."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    """Autocast dtype on CUDA (bfloat16 where supported, else float16); None on the CPU."""
    shuffle: torch.Generator
    start_epoch: int = 1
    best_score: float = -math.inf
    best_epoch: int = 0

    def state(self, epoch: int) -> dict[str, Any]:
        """What train_state.pt holds after `epoch`."""
        return {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])
        torch.set_rng_state(state["torch_rng"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])


def _make_loop(
    opts: TrainOptions,
    model: MerClip,
    train_set: Sequence[Sample],
    device: torch.device,
    state: dict[str, Any] | None,
) -> _Loop:
    """AdamW with a one-cycle schedule over every step of the run, the gradient scaler, the
    shuffle generator; restored from `state` when resuming."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    epoch_size = len(
        epoch_samples(
            train_set, np.random.default_rng(0), opts.min_share, 0.0, opts.max_per_dataset
        )
    )
    epoch_size += int(opts.compose * epoch_size)
    steps_per_epoch = math.ceil(epoch_size / opts.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=opts.lr,
        total_steps=max(1, steps_per_epoch * opts.epochs),
        pct_start=0.1,
        anneal_strategy="cos",
    )
    amp_dtype: torch.dtype | None = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    shuffle = torch.Generator().manual_seed(opts.seed)
    loop = _Loop(params, optimizer, scheduler, scaler, amp_dtype, shuffle)
    if state is not None:
        loop.restore(state)
    return loop


def _train_epoch(
    opts: TrainOptions,
    model: MerClip,
    train_set: Sequence[Sample],
    loop: _Loop,
    epoch: int,
    device: torch.device,
) -> list[float]:
    """One pass over this epoch's mix of the training samples; the per-step losses."""
    model.train()
    pool = epoch_samples(
        train_set,
        np.random.default_rng([opts.seed, epoch]),
        opts.min_share,
        opts.compose,
        opts.max_per_dataset,
    )
    order = torch.randperm(len(pool), generator=loop.shuffle).tolist()
    losses: list[float] = []
    bar = tqdm(
        range(0, len(order), opts.batch_size),
        desc=f"epoch {epoch}/{opts.epochs}",
        disable=not opts.progress,
        leave=False,
        file=sys.stderr,
    )
    for i in bar:
        chunk = [pool[j] for j in order[i : i + opts.batch_size]]
        loss = _batch_loss(model, chunk, opts.tasks, device, loop.amp_dtype)
        if loss is None:
            continue
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.unscale_(loop.optimizer)
        torch.nn.utils.clip_grad_norm_(loop.params, 1.0)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        if loop.scheduler.last_epoch < loop.scheduler.total_steps - 1:
            loop.scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


def _validate(
    opts: TrainOptions,
    model: MerClip,
    splits: _Splits,
    loop: _Loop,
    epoch: int,
    losses: list[float],
    device: torch.device,
    t0: float,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the epoch's history record with its selection score, the validation metrics per task)."""
    valid_set, valid_tasks = splits.valid, splits.valid_tasks
    metrics = {t: evaluate_model(model, valid_set, t, opts.batch_size, device) for t in valid_tasks}
    by_dataset = metrics_by_dataset(model, valid_set, valid_tasks, opts.batch_size, device)
    record = {
        "epoch": epoch,
        "train_loss": float(np.mean(losses)) if losses else math.nan,
        "valid_loss": _valid_loss(model, valid_set, opts.tasks, opts.batch_size, device),
        "score": selection_score(metrics, by_dataset),
        "lr": loop.scheduler.get_last_lr()[0],
        "seconds": round(time.perf_counter() - t0, 3),
        "valid": {t: _headline(m) for t, m in metrics.items()},
    }
    if by_dataset:
        record["valid_by_dataset"] = {
            d: {t: _headline(m) for t, m in ms.items()} for d, ms in by_dataset.items()
        }
    return record, metrics


def _keep_best(
    opts: TrainOptions,
    model: MerClip,
    out: Path,
    loop: _Loop,
    record: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    eval_name: str,
    history: dict[str, Any],
) -> None:
    """Checkpoint selection: best.pt when the score beats every earlier epoch's; last.pt,
    train_state.pt and history.json after every epoch."""
    epoch, score = int(record["epoch"]), float(record["score"])
    extra = _extra(opts, epoch, score, metrics, eval_name)
    if score > loop.best_score:
        loop.best_score, loop.best_epoch = score, epoch
        save_checkpoint(out / "best.pt", model, extra)
    save_checkpoint(out / "last.pt", model, extra)
    torch.save(loop.state(epoch), out / "train_state.pt")
    history["best_epoch"], history["best_score"] = loop.best_epoch, loop.best_score
    (out / "history.json").write_text(json.dumps(history, indent=2), encoding="utf-8")


def _test_best(
    opts: TrainOptions,
    out: Path,
    splits: _Splits,
    loop: _Loop,
    history: dict[str, Any],
    device: torch.device,
) -> TrainResult:
    """Test best.pt next to the label-frequency baseline; writes summary.json."""
    best = load_checkpoint(out / "best.pt", device=device)
    test_set = splits.source.split(splits.test_name)
    test: dict[str, Any] = {}
    for task in opts.tasks:
        if not any(has_task_labels(s, task) for s in test_set):
            continue
        test[task] = {
            "model": evaluate_model(best, test_set, task, opts.batch_size, device),
            "baseline": baseline_metrics(splits.train, test_set, task, best.labels(task)),
        }
    summary = {
        "best_checkpoint": str(out / "best.pt"),
        "best_epoch": loop.best_epoch,
        "best_valid_score": loop.best_score,
        "split": splits.test_name,
        "test": test,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(out, out / "best.pt", loop.best_epoch, loop.best_score, history, test)


def _headline(m: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in m.items() if isinstance(v, float)}


def _extra(
    opts: TrainOptions, epoch: int, score: float, metrics: dict[str, Any], split: str
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "data": _spec_text(opts.data),
        "trained_on": trained_on(opts.data),
        "seed": opts.seed,
        "tasks": list(opts.tasks),
        "valid_split": split,
        "valid_score": score,
        "valid": {t: _headline(m) for t, m in metrics.items()},
    }


_DATA_NAMES = {
    "fer2013": "FER2013 faces",
    "meld": "MELD utterances",
    "ravdess": "RAVDESS speech",
    "mosi": "CMU-MOSI",
    "mosei": "CMU-MOSEI",
    "live": "a live-feature dataset",
    "synthetic": "synthetic data",
}


def trained_on(data: str | Sequence[str]) -> str:
    """Readable data names for events and the page: "FER2013 faces + MELD utterances"."""
    specs = [data] if isinstance(data, str) else list(data)
    kinds = [s.partition(":")[0] for s in specs]
    return " + ".join(_DATA_NAMES.get(k, k) for k in kinds)


def _spec_text(data: str | Sequence[str]) -> str:
    return data if isinstance(data, str) else " + ".join(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# -- command line --------------------------------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `train` and `ablate-query`."""
    parser.add_argument(
        "--data",
        action="append",
        default=None,
        help="synthetic | mosi:PKL | mosei:PKL | live:DIR | fer2013:DIR | meld:DIR | "
        "ravdess:DIR (default synthetic); repeat to train on several together",
    )
    parser.add_argument(
        "--emotion-labels",
        type=Path,
        default=None,
        help="CMU-MOSEI emotion labels (.csd, .pkl or .json) for mosei: data",
    )
    parser.add_argument(
        "--task", choices=("emotion", "sentiment", "both"), default=None, help="default: train.task"
    )
    parser.add_argument("--model", default=None, help="named model config (default: model.name)")
    parser.add_argument("--epochs", type=int, default=None, help="default train.epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="default train.batch_size")
    parser.add_argument("--lr", type=float, default=None, help="AdamW learning rate (train.lr)")
    parser.add_argument(
        "--weight-decay", type=float, default=None, help="AdamW weight decay (train.weight_decay)"
    )
    parser.add_argument("--seed", type=int, default=None, help="default train.seed")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.add_argument(
        "--clip-pretrained", default=None, help="CLIP weights for the text tower (tag or file)"
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--query-word",
        default=None,
        help="query word (default train.query_word; 'none' = prompts only)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument(
        "--min-share",
        type=float,
        default=0.0,
        help="repeat each dataset to at least this share of the largest (default 0: off)",
    )
    parser.add_argument(
        "--compose",
        type=float,
        default=0.0,
        help="extra same-class multimodal samples composed across datasets, as a fraction of "
        "each epoch (default 0: off)",
    )
    parser.add_argument(
        "--limit-per-class",
        type=int,
        default=None,
        help="raw emotion datasets: first N items per class only (quick runs)",
    )
    parser.add_argument(
        "--max-per-dataset",
        type=int,
        default=None,
        help="a larger dataset gives a fresh random subset of N samples to each epoch",
    )
    parser.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        help="stop after this epoch; continue later with --resume",
    )


def options_from_args(args: argparse.Namespace, settings: MerClipSettings) -> TrainOptions:
    """[train] settings, overridden by every flag that was given (a given 0 or "" included:
    `is None` means "not given", never `or`), validated like the file."""
    flags = {name: getattr(args, name, None) for name in _FROM_SETTINGS}
    t = settings.replace("train", **{k: v for k, v in flags.items() if v is not None}).train
    task = t.task if args.task is None else args.task
    tasks = ("emotion", "sentiment") if task == "both" else (task,)
    model = settings.model.name if args.model is None else args.model
    clip_pretrained = args.clip_pretrained
    if clip_pretrained is None and settings.clip.model == load_model_config(model).clip_model:
        clip_pretrained = settings.clip.pretrained or None
    out = Path(t.out_dir) / f"{model}-{task}" if args.out is None else args.out
    data = ["synthetic"] if args.data is None else args.data
    return TrainOptions.from_settings(
        t,
        data=data[0] if len(data) == 1 else tuple(data),
        out_dir=Path(out),
        model=model,
        tasks=tasks,
        resume=getattr(args, "resume", False),
        emotion_labels=args.emotion_labels,
        clip_pretrained=clip_pretrained,
        threads=args.threads,
        stop_after_epoch=getattr(args, "stop_after_epoch", None),
        min_share=getattr(args, "min_share", 0.0),
        compose=getattr(args, "compose", 0.0),
        limit_per_class=getattr(args, "limit_per_class", None),
        max_per_dataset=getattr(args, "max_per_dataset", None),
    )


def run(args: argparse.Namespace, settings: MerClipSettings) -> int:
    result = train(options_from_args(args, settings))
    print(
        f"best checkpoint: {result.best_checkpoint} (epoch {result.best_epoch}, "
        f"valid score {result.best_score:.4f})"
    )
    for task, entry in result.test.items():
        m, b = entry["model"], entry["baseline"]
        print(f"{task} test: model F1 {m['f1']:.4f} vs label-frequency baseline {b['f1']:.4f}")
    return 0
