"""The ``ppvae`` command's front door: answer ``--help``, ``--version``, ``models`` and ``datasets`` without the engine.

Importing torch and Pyro takes seconds (``benchmarks/bench_startup.py`` measures it); these commands print text that
:mod:`ppvae.cli.parser` and :mod:`ppvae.cli.catalogue` hold, so they start in a fraction of that. Every other
command, and any command line that imports a user's model (``--import``), goes to :func:`ppvae.cli.app.main`, which
loads the engine when it runs. So does ``models`` when an installed package publishes ``ppvae.models`` entry
points, which only the live registry can list. The output is the same either way (``tests/cli/test_startup.py``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import time

from ppvae._util.procs import forget_handled_interrupt
from ppvae._util.validation import PPVAEError
from ppvae.cli import parser as _cli_parser
from ppvae.cli.catalogue import DATASETS, MODELS, datasets_text, models_text

__all__ = ["main", "ENTRY_POINT_GROUP"]

EXIT_USAGE = 2
ENTRY_POINT_GROUP = "ppvae.models"  # ppvae.model.importing.ENTRY_POINT_GROUP, checked equal by the test


def _engine_main(argv: list[str]) -> int:
    """The full command line (:func:`ppvae.cli.app.main`), imported only now: it loads torch, Pyro and the engine."""
    return importlib.import_module("ppvae.cli.app").main(argv)


def _static(command: str):
    """A command answered from the static catalogue: prints and returns 0."""
    def run(args) -> int:
        print(models_text(MODELS) if command == "models" else datasets_text(DATASETS))
        return 0
    return run


def _needs_engine(argv: list[str]) -> bool:
    """Whether the command line can only be answered by the engine: it imports a user's model (``--import``, or an
    abbreviation argparse would accept), or installed packages publish models the catalogue cannot know."""
    if any(a.startswith("--im") for a in argv):
        return True
    return bool(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def main(argv: list[str] | None = None) -> int:
    """Run the ``ppvae`` command on ``argv`` (default: ``sys.argv[1:]``); exit codes as :func:`ppvae.cli.app.main`.
    ``--help``, ``--version``, ``models`` and ``datasets`` are answered here without importing torch."""
    start = time.perf_counter()
    argv = sys.argv[1:] if argv is None else list(argv)
    if _needs_engine(argv):
        return _engine_main(argv)
    static = {"models": _static("models"), "datasets": _static("datasets")}
    commands = {name: static.get(name) for name in _cli_parser.COMMANDS}
    try:
        args = _cli_parser.build_parser(commands).parse_args(argv)  # --help and --version print and exit here
        if args.func is None:  # a command that does work: the engine parses again and runs it
            return _engine_main(argv)
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except PPVAEError as exc:
        print(f"ppvae: error: {' '.join(str(exc).split())}", file=sys.stderr)  # as ppvae.cli.app.main prints it
        return EXIT_USAGE
    except BrokenPipeError:  # `ppvae models | head`: the reader left; no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # before any work: as ppvae.runs.directory.interrupted_message words it
        print(f"ppvae: interrupted after {time.perf_counter() - start:.1f} s; nothing was written", file=sys.stderr)
        forget_handled_interrupt()  # as ppvae.cli.app.main does (see there)
        return 130
