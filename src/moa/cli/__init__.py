"""The ``moa`` command: a thin root that wires one module per sub-command.

User errors (bad keys, values, paths, run directories, a missing optional extra) print one
line, ``moa: error: …``, and exit with status 2; set ``MOA_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from moa.cli import compare, export, expressivity, ffn, gates, prepare, presets, sample, scale, train, upcycle
from moa.cli import eval as eval_command

COMMANDS = {"train": train, "sample": sample, "presets": presets, "ffn": ffn, "compare": compare,
            "scale": scale, "gates": gates, "expressivity": expressivity, "prepare": prepare,
            "export": export, "upcycle": upcycle, "eval": eval_command}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and the parsed command line (``args.command`` is None for a bare ``moa``)."""
    parser = argparse.ArgumentParser(prog="moa", description="Mixture of Activations: layers and LM research harness")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub)
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may sit between options (argparse takes one positional run only)
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return parser, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return run_guarded(COMMANDS[args.command].run, args)


def run_guarded(fn, args) -> int:
    try:
        return fn(args) or 0
    except KeyboardInterrupt:
        print("moa: interrupted", file=sys.stderr)
        return 130
    # the expected errors: bad values (ValueError and its subclasses: config, data, run-dir
    # errors), files and directories (OSError), a missing optional extra (ImportError naming
    # it), a diverged run; anything else is a bug and keeps its traceback
    except Exception as exc:
        # a diverged run can only come from a loaded trainer: commands that never train
        # (prepare, --help) do not import torch just to name the exception
        loop = sys.modules.get("moa.train.loop")
        diverged = loop is not None and isinstance(exc, loop.TrainingDiverged)
        if not (diverged or isinstance(exc, (ValueError, OSError, ImportError))) or os.environ.get("MOA_DEBUG"):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"moa: error: {msg}", file=sys.stderr)
        return 1 if diverged else 2


if __name__ == "__main__":
    sys.exit(main())
