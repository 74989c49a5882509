"""Command-line parts every pretraining stage shares: its common arguments and the per-rank start-up."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from cxrmim.cli import parse_json_arg, setup_logging
from cxrmim.train.loop import STOP_ENV

log = logging.getLogger("cxrmim.pretrain")


def add_run_arguments(parser: argparse.ArgumentParser, settings_help: str) -> None:
    """--encoder, --settings, --seed, --out, --log/--log-file and --stop-after-epochs."""
    parser.add_argument("--encoder", required=True, help="JSON (inline or file) of one `encoders:` config entry")
    parser.add_argument("--settings", required=True, help=settings_help)
    parser.add_argument(
        "--seed", type=int, default=None, help="pretraining seed (one of pretrain.seeds; default: settings' seed or 0)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    # --log-file: torchrun's own parser claims `--log` (ambiguous prefix of its --log-dir options).
    parser.add_argument("--log", "--log-file", dest="log", default=None, help="also write the log to this file")
    parser.add_argument(
        "--stop-after-epochs",
        type=int,
        default=None,
        help=f"stop once this many epochs are done (tests; or {STOP_ENV})",
    )


def start_run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up this rank's logging and return the run's settings with the --seed given on the command line."""
    # Only rank 0 logs progress and owns the log file; the other ranks report warnings to stderr.
    is_main = int(os.environ.get("RANK", "0")) == 0
    setup_logging(args.log if is_main else None, logging.INFO if is_main else logging.WARNING)
    settings = parse_json_arg(args.settings)
    if args.seed is not None:
        settings["seed"] = args.seed
    return settings


def report_unfinished(finished: bool) -> None:
    """Say how to resume when a run stopped before its last epoch."""
    if not finished:
        log.warning("pretraining stopped early; rerun the same command to resume from the checkpoint")
