"""Foundation utilities shared by every layer: argument validation and errors, module-local parameters,
progress display, the process pool for parallel chains, atomic file writes and the SVI convergence check.

Nothing here knows about models or inference. Private to ppvae: its public names (``PPVAEError``,
``check_int``, ...) are re-exported by :mod:`ppvae`."""
