"""Imported first by the multiprocessing forkserver (``ppvae._parallel._PRELOAD``): the server is killed by the
kernel when the process that started it ends, however it ends (SIGKILL included), and its workers follow it
(:func:`ppvae._util.procs.die_with_parent`, armed again in each worker)."""

from ppvae._util.procs import die_with_parent

die_with_parent()
