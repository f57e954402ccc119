"""The `merclip` command. Each subcommand lives in its own module, imported only when used.

A subcommand module provides `add_arguments(parser)` and `run(args, settings) -> int`.
Logging is configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from merclip.errors import MerClipError
from merclip.settings import Settings, load_settings

__all__ = ["main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("workers.serve", "run every role of one machine (embedded Redis by default)"),
    "ingest": ("workers.ingest_command", "WebRTC server + feature extraction only"),
    "infer": ("workers.infer_command", "MER-CLIP inference worker (consumer group)"),
    "subscribe": ("workers.subscribe_command", "print events as JSON lines"),
    "stream-file": ("stream.file_client", "stream a media file to a server over WebRTC"),
    "dashboard": ("workers.dashboard_command", "serve the monitoring dashboard for a shared Redis"),
    "capture": ("stream.capture", "send the local camera and microphone to a server"),
    "extract": ("workers.extract", "extract live-space features from a folder of videos"),
    "train": ("merclip.training.train", "train MER-CLIP"),
    "evaluate": ("merclip.training.evaluate", "evaluate a checkpoint: JSON report + plots"),
    "ablate-query": ("merclip.training.ablate", "train/evaluate once per query word"),
}

DEFAULT_CONFIG = Path("config.toml")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Per-candidate ICE and per-request access lines drown what matters at INFO.
    for chatty in ("aioice", "aiortc", "aiohttp.access", "faster_whisper"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def _base_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merclip", description="MER-CLIP Live")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config.toml to read (default: ./config.toml if present, else built-in defaults)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _base_parser()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.log_level, args.log_json)
    try:
        config_path = args.config
        if config_path is None and DEFAULT_CONFIG.exists():
            config_path = DEFAULT_CONFIG
        settings: Settings = load_settings(config_path)
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args, settings) or 0)
    except MerClipError as exc:
        print(f"merclip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
