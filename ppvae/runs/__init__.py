"""What outlives a process: run directories (config, metrics, tensors, figures), atomic checkpoints with exact
resume, and the training callbacks that write them."""

from ppvae.runs.callbacks import Callback, EarlyStopping

__all__ = ["Callback", "EarlyStopping"]
