"""`merclip ablate-query`: train and test once per query word (Tables 1-3 of the supplement).

Rows are query words ("none" = learnable prompts only), columns Acc/P/R/F1 for emotion and
ACC2/F1 for sentiment, on the test split, with the label-frequency baseline as a last row.
Everything except the query word (data, seed, epochs, model) is the same for every row.
Results: `<out>/ablation.json`, `<out>/ablation.md`, one run directory per word.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merclip.settings import MerClipSettings
from merclip.training.train import (
    NO_WORD,
    TrainOptions,
    add_common_arguments,
    options_from_args,
    train,
)

__all__ = ["DEFAULT_WORDS", "ablate", "add_arguments", "format_table", "run"]

log = logging.getLogger(__name__)

DEFAULT_WORDS: dict[str, tuple[str, ...]] = {
    "emotion": ("Emotion", "Feeling", "Impression", "Mood", "Sensation", NO_WORD),
    "sentiment": ("Sentiment", "Feeling", "Impression", "Mood", "Sensation", NO_WORD),
}

_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "emotion": (("Acc", "accuracy"), ("P", "precision"), ("R", "recall"), ("F1", "f1")),
    "sentiment": (("ACC2", "acc2"), ("F1", "f1")),
}


def ablate(base: TrainOptions, words: Sequence[str]) -> dict[str, Any]:
    """Train once per word (runs under base.out_dir/<word>); returns the table as a dict."""
    if len(base.tasks) != 1:
        raise ValueError("ablate-query needs exactly one task")
    task = base.tasks[0]
    rows: list[dict[str, Any]] = []
    baseline: dict[str, Any] | None = None
    for word in words:
        opts = dataclasses.replace(base, query_word=word, out_dir=Path(base.out_dir) / word)
        log.info("query word %r: training into %s", word, opts.out_dir)
        result = train(opts)
        entry = result.test[task]
        baseline = entry["baseline"]
        rows.append({"word": word, "best_epoch": result.best_epoch, "metrics": entry["model"]})
    table = {
        "task": task,
        "data": base.data,
        "model": base.model,
        "epochs": base.epochs,
        "seed": base.seed,
        "columns": [c for c, _ in _COLUMNS[task]],
        "rows": rows,
        "baseline": baseline,
    }
    out = Path(base.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    (out / "ablation.md").write_text(format_table(table), encoding="utf-8")
    return table


def format_table(table: dict[str, Any]) -> str:
    """Markdown table: one row per query word, values in percent like the paper."""
    cols = _COLUMNS[table["task"]]
    lines = [
        f"Query-word ablation: {table['task']} on {table['data']} ({table['model']}, "
        f"{table['epochs']} epochs, seed {table['seed']})",
        "",
        "| Query word | " + " | ".join(c for c, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]

    def cells(m: dict[str, Any]) -> str:
        return " | ".join(f"{100 * float(m[k]):.1f}" for _, k in cols)

    for row in table["rows"]:
        name = "(no word)" if row["word"] == NO_WORD else row["word"]
        lines.append(f"| {name} | {cells(row['metrics'])} |")
    if table.get("baseline"):
        lines.append(f"| label-frequency baseline | {cells(table['baseline'])} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--words",
        default=None,
        help="comma-separated query words ('none' = prompts only); default: the paper's six",
    )


def run(args: argparse.Namespace, settings: MerClipSettings) -> int:
    if args.task == "both":
        raise SystemExit("ablate-query: --task must be emotion or sentiment")
    base = options_from_args(args, settings)
    if args.out is None:
        base = dataclasses.replace(
            base, out_dir=Path(settings.train.out_dir) / f"ablate-{base.tasks[0]}"
        )
    words = (
        [w.strip() for w in args.words.split(",") if w.strip()]
        if args.words
        else list(DEFAULT_WORDS[base.tasks[0]])
    )
    table = ablate(base, words)
    print(format_table(table))
    print(f"saved: {Path(base.out_dir) / 'ablation.json'}, {Path(base.out_dir) / 'ablation.md'}")
    return 0
