"""`merclip serve`: every role of one machine (WebRTC ingest + inference), embedded Redis by
default. Open the printed address in a browser to join."""

from __future__ import annotations

import argparse

from merclip.settings import Settings
from workers.serve_options import add_service_arguments, apply_service_arguments, run_service

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_service_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_service(apply_service_arguments(settings, args), ("ingest", "infer"))
