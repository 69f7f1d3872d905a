"""Network building blocks for model authors: :func:`mlp` and the activations by name (:data:`ACTIVATIONS`).

Public API: the bundled VAE and M2 build their encoders and decoders from these, as a user's model can;
the amortized guide uses them too.
"""

from __future__ import annotations

from torch import nn

__all__ = ["mlp", "ACTIVATIONS"]


#: activation name (as the ``activation`` options spell it) -> ``torch.nn`` module class
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "elu": nn.ELU, "gelu": nn.GELU}


def mlp(widths: list[int], activation: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """Linear layers of the given widths with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
