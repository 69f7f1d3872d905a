"""The canvas every figure draws on: a matplotlib Figure on its own Agg canvas (no pyplot, the caller's backend
left alone), saved tight; and the colour maps and tick locators the figures share."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["cmap", "figure", "max_n_locator", "save"]


def cmap(name: str):
    import matplotlib  # heavy: loaded when the first figure is drawn, not at import ppvae

    return matplotlib.colormaps[name]


def max_n_locator(**options):
    from matplotlib.ticker import MaxNLocator  # heavy: loaded when a figure is drawn

    return MaxNLocator(**options)


def figure(figsize, nrows: int = 1, ncols: int = 1, **kw):
    """A Figure on its own Agg canvas (no pyplot) and its axes (an array when ``squeeze=False``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: loaded when a figure is drawn
    from matplotlib.figure import Figure  # heavy: loaded when a figure is drawn

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def save(fig, path: str, dpi: int = 110, rect=None) -> Figure:
    if rect is None:
        fig.tight_layout()
    else:
        fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=dpi)
    return fig
