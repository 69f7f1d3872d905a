"""The ``ppvae`` command line: ``ppvae COMMAND ...`` (``python -m ppvae.cli``). :func:`main` is the entry point.

``import ppvae.cli`` loads neither torch nor the engine (:mod:`ppvae.cli.entry`); the commands that do work load
them when they run (:mod:`ppvae.cli.app`)."""

from ppvae.cli.entry import main

__all__ = ["main"]
