"""The ``ppvae`` command line: ``ppvae COMMAND ...`` (``python -m ppvae.cli``). :func:`main` is the entry point."""

from ppvae.cli.app import main

__all__ = ["main"]
