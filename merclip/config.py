"""Named MER-CLIP architectures: `merclip/model_configs/<name>.json` read into `MerClipConfig`.

Like open_clip's model_configs/: one JSON file per architecture, a frozen dataclass, and a new
option is a config field (never a `force_*` argument). Everything the paper leaves open (widths,
layer counts, the emotion normalisation, the query pooling) is a field with a documented default.
`add_model_config(path)` registers JSON files outside the package (open_clip has the same call).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from merclip.batch import MODALITIES
from merclip.errors import ConfigError
from merclip.labels import EMOTION_LABELS, EMOTION_THRESHOLD, SENTIMENT_LABELS
from merclip.typed_config import check, coerce

__all__ = [
    "FEATURE_SPACES",
    "TASKS",
    "MerClipConfig",
    "add_model_config",
    "config_from_dict",
    "list_model_configs",
    "load_model_config",
]

TASKS: tuple[str, ...] = ("emotion", "sentiment")
FEATURE_SPACES: tuple[str, ...] = ("live", "live-pretrained", "benchmark")
_CONFIG_DIR = Path(__file__).with_name("model_configs")
_config_paths: list[Path] = [_CONFIG_DIR]
"""Where named configs are found: the package's directory, then `add_model_config` paths."""


@dataclass(frozen=True)
class MerClipConfig:
    name: str = "custom"
    """Architecture name (the JSON file's stem for named configs)."""
    clip_model: str = "ViT-B-32"
    """open_clip model whose text tower encodes labels and queries (and, in the live feature
    space, produced the language and visual features)."""
    feature_space: str = "live"
    """"live" (the service's CLIP features), "live-pretrained" (the service's features from
    pretrained parts that ship in packages: MiniLM text, FER expression net on YuNet faces,
    log-mel audio) or "benchmark" (MMSA pre-extracted features)."""
    text_tower: str = "clip"
    """Text encoder of the label and query prompts: "clip" (CLIP `clip_model`'s text tower) or
    "minilm" (all-MiniLM-L6-v2, pretrained, for machines without CLIP weights)."""
    dims: dict[str, int] = field(
        default_factory=lambda: {"language": 512, "visual": 512, "audio": 64}
    )
    """Input feature width of each modality."""
    width: int = 256
    """Decoder width (adapters project every modality and the query to it)."""
    heads: int = 8
    layers: int = 1
    """Decoder blocks per modality stage."""
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    adapter_hidden: int = 0
    """Modality adapters: 0 = Linear + LayerNorm; > 0 = a GELU MLP with this hidden width, then
    LayerNorm (per-position non-linear features, e.g. energies whose mean is a variance)."""
    summary_rows: bool = False
    """Give each modality's cross-attention three more rows: the masked mean, standard deviation
    and maximum of its feature rows over time. Attention pools by weighted averages, which
    cannot form a spread or a peak, and those carry much of what a short clip's voice says."""
    n_ctx: int = 4
    """Learnable context vectors before each label word (CoOp) and in the query prompt."""
    ctx_init: str = "a photo of a"
    """Template whose token embeddings initialise the label context when it has exactly n_ctx
    tokens; otherwise the context starts from N(0, 0.02)."""
    order: tuple[str, ...] = ("language", "visual", "audio")
    """Modality order of the cross-modal decoder stages (paper: L, V, A)."""
    emotion_labels: tuple[str, ...] = EMOTION_LABELS
    sentiment_labels: tuple[str, ...] = SENTIMENT_LABELS
    emotion_query_word: str = "Emotion"
    sentiment_query_word: str = "Sentiment"
    """Query words ("" = learnable prompts only)."""
    emotion_norm: str = "batch"
    """"Standard normalisation" of the emotion similarities before the sigmoid. "batch": per-label
    standardisation (BatchNorm1d without affine; running statistics at inference). "sample":
    z-score across the labels of each sample (no state). "pattern": "batch" with one set of
    statistics per evidence pattern (heads.py)."""
    emotion_threshold: float = EMOTION_THRESHOLD
    """Probability at or above which an emotion is predicted (`EmotionHead`, training and
    evaluation); when serving, the setting `model.emotion_threshold` wins and the Predictor
    applies it to the loaded model."""
    logit_scale_init: float = 1.0 / 0.07
    """Initial exp(logit scale) of the sentiment head (CLIP's value)."""
    pooling: str = "eot"
    """How Z^[3] becomes one vector: "eot" = the query's end-of-text token (it attends to every
    prompt token in the text encoder, like CLIP's pooled output) or "mean" over query tokens."""
    freeze_clip: bool = True
    tasks: tuple[str, ...] = TASKS

    def __post_init__(self) -> None:
        # Copy so that a frozen config never shares a mutable dict with its caller.
        object.__setattr__(self, "dims", {m: int(self.dims[m]) for m in self.dims})
        self.validate()

    def validate(self) -> None:
        check(set(self.dims) == set(MODALITIES), "dims", f"must have exactly {MODALITIES}")
        check(all(d >= 1 for d in self.dims.values()), "dims", "must be >= 1")
        check(
            self.feature_space in FEATURE_SPACES,
            "feature_space",
            "|".join(FEATURE_SPACES),
        )
        check(self.text_tower in ("clip", "minilm"), "text_tower", "clip|minilm")
        check(self.adapter_hidden >= 0, "adapter_hidden", "must be >= 0")
        check(self.width >= 1 and self.heads >= 1, "width/heads", "must be >= 1")
        check(self.width % self.heads == 0, "width", f"must be divisible by heads={self.heads}")
        check(self.layers >= 1, "layers", "must be >= 1")
        check(self.mlp_ratio > 0, "mlp_ratio", "must be > 0")
        check(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        check(self.n_ctx >= 0, "n_ctx", "must be >= 0")
        check(sorted(self.order) == sorted(MODALITIES), "order", f"a permutation of {MODALITIES}")
        check(len(self.emotion_labels) >= 1, "emotion_labels", "must not be empty")
        check(len(self.sentiment_labels) >= 2, "sentiment_labels", "needs >= 2 classes")
        for key in ("emotion_labels", "sentiment_labels"):
            words = getattr(self, key)
            check(all(w.strip() for w in words), key, "words must be non-empty")
            check(len(set(words)) == len(words), key, "words must be distinct")
        check(
            self.emotion_norm in ("batch", "sample", "pattern"),
            "emotion_norm",
            "batch|sample|pattern",
        )
        check(0.0 < self.emotion_threshold < 1.0, "emotion_threshold", "must be in (0, 1)")
        check(self.logit_scale_init > 0, "logit_scale_init", "must be > 0")
        check(self.pooling in ("eot", "mean"), "pooling", "eot|mean")
        check(len(self.tasks) >= 1 and set(self.tasks) <= set(TASKS), "tasks", f"subset of {TASKS}")

    def labels(self, task: str) -> tuple[str, ...]:
        return self.emotion_labels if task == "emotion" else self.sentiment_labels

    def query_word(self, task: str) -> str:
        return self.emotion_query_word if task == "emotion" else self.sentiment_query_word

    def replace(self, **overrides: Any) -> MerClipConfig:
        """A copy with some fields changed; an unknown field is a ConfigError naming it."""
        return config_from_dict({**self.to_dict(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists); `config_from_dict` reverses it."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def config_from_dict(values: dict[str, Any], source: str = "model config") -> MerClipConfig:
    """Build a config from a dict (JSON types); unknown keys and bad types name the key."""
    hints = get_type_hints(MerClipConfig)
    known = {f.name for f in dataclasses.fields(MerClipConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        kwargs[key] = coerce(value, hints[key], f"{source}: {key}")
    try:
        return MerClipConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_model_config(name: str) -> MerClipConfig:
    """The named config `<name>.json` (its `name` is the file stem): from merclip/model_configs/
    or a path given to `add_model_config`."""
    path = _config_files().get(name)
    if path is None:
        raise ConfigError(
            f"unknown MER-CLIP model config {name!r} (known: {', '.join(list_model_configs())}; "
            "register your own JSON with merclip.config.add_model_config(path))"
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from exc
    return config_from_dict({**values, "name": name}, source=str(path.name))


def list_model_configs() -> list[str]:
    return sorted(_config_files())


def add_model_config(path: str | Path) -> None:
    """Register named configs outside the package: a `<name>.json` file, or a directory of them.

    Like `open_clip.add_model_config`: the configs are then known to `load_model_config`,
    `list_model_configs` and `create_model` by their file stems; a later path's config wins over
    an earlier one of the same name. Files are read (and checked) when a config is loaded.
    """
    path = Path(path)
    if path.is_file() and path.suffix != ".json":
        raise ConfigError(f"model config {path} must be a .json file")
    if not path.exists():
        raise ConfigError(f"model config path {path} does not exist")
    _config_paths.append(path)


def _config_files() -> dict[str, Path]:
    """{name: file} over every registered path, later paths winning."""
    files: dict[str, Path] = {}
    for path in _config_paths:
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            files[file.stem] = file
    return files
