"""The glimpse command line: train, serve and explain CNN image classifiers.

Each subcommand lives in the package that owns it and is imported only when that subcommand runs, so
``glimpse api`` never imports TensorFlow. A command module exposes ``configure_<name>(parser)`` (adds flags, imports
nothing heavy) and ``run_<name>(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from glimpse import __version__
from glimpse.tf_startup import VERBOSE_ENV, load_tensorflow_quietly

__all__ = ["COMMANDS", "TF_COMMANDS", "build_parser", "main"]

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("training.cli", "Train a classifier and export it through the model contract."),
    "export": ("training.cli", "Wrap an existing Keras classifier into the model contract."),
    "serve": ("serving.cli", "Serve models the way tensorflow_model_server does (gRPC + REST)."),
    "api": ("explain_api.cli", "Run the explain API (HTTP) in front of a served model."),
    "explain-video": ("explain_api.video", "Explain a video frame by frame and write the overlay video."),
    "up": ("glimpse.up", "Run glimpse serve and glimpse api together on this machine."),
    "wit": ("whatif.cli", "Write a What-If Tool notebook for a served model."),
    "report": ("whatif.cli", "Slice and compare served models over an examples TFRecord."),
    "study": ("studies.chapter", "Run one of the chapter's studies."),
    "tune": ("studies.tuning", "Search hyperparameters with Keras Tuner, or architectures with AutoKeras."),
    "spurious": ("studies.spurious", "The snow story: a background shortcut, swapped backgrounds, Grad-CAM."),
    "bench": ("glimpse.bench", "Run the benchmarks and print the ratios."),
}

# Commands whose work imports TensorFlow: it is loaded up front, its start-up chatter filtered (glimpse.tf_startup).
TF_COMMANDS = frozenset({"train", "export", "serve", "wit", "study", "tune", "spurious", "bench"})


def _func_name(command: str) -> str:
    return command.replace("-", "_")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The top-level parser; only the command named in ``argv`` gets its flags (and its module imported)."""
    parser = argparse.ArgumentParser(prog="glimpse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"glimpse {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help=f"keep TensorFlow's start-up log (also: {VERBOSE_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported: flags of the others are not needed to parse argv.
        if name == chosen:
            configure = getattr(importlib.import_module(module), f"configure_{_func_name(name)}")
            configure(p)
            parser.set_defaults(_command_parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: this process's arguments) and run the command; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = build_parser(argv).parse_known_args(argv)
    if unknown:  # said by the command's own parser, so the usage shown is the command's, not the top level's
        args._command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    module, _ = COMMANDS[args.command]
    if args.command in TF_COMMANDS:
        load_tensorflow_quietly(args.verbose)
    run = getattr(importlib.import_module(module), f"run_{_func_name(args.command)}")
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        return 130
