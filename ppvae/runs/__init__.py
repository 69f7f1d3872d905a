"""What outlives a process: run directories (config, metrics, tensors, figures), atomic checkpoints with exact
resume, and the training callbacks that write them; the rules that keep a user's files safe from them (a run
directory's marker, one writer per directory, whole replacement: docs/guide/runs.md)."""

from ppvae.runs.callbacks import Callback, EarlyStopping
from ppvae.runs.lock import DirectoryLock

__all__ = ["Callback", "DirectoryLock", "EarlyStopping"]
