"""The table of :func:`ppvae.compare`: Markdown, CSV, JSON and the marginal-posterior figure."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ppvae._util import display as _display
from ppvae.plots.figures import plot_marginals
from ppvae.runs.building import save_run
from ppvae.runs.directory import atomic_write, write_figure

__all__ = ["Comparison"]


@dataclass
class Comparison:
    """The records of :func:`compare` (``records``: one dict per method) and each method's draws."""

    model: str
    data: str
    records: list[dict]
    draws: dict = field(default_factory=dict)  # method -> {site: (S, ...)} aligned draws
    settings: dict = field(default_factory=dict)

    COLUMNS = ("method", "status", "time_s", "train_loglik", "test_loglik", "elpd_loo", "elpd_loo_se", "p_loo",
               "khat_max", "num_khat_over_0_7", "guide_khat", "guide_khat_reading", "vs_mcmc", "ess_per_s",
               "ess_bulk_min", "rhat_max", "num_divergences", "mcmc_converged", "error")

    def parameters(self) -> list[str]:
        names: list[str] = []
        for r in self.records:
            names += [k for k in r.get("posterior", {}) if k not in names]
        return names

    def to_csv(self) -> str:
        params = self.parameters()
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(list(self.COLUMNS) + [f"mean:{p}" for p in params] + [f"sd:{p}" for p in params])
        for r in self.records:
            post = r.get("posterior", {})
            writer.writerow([_cell(r.get(c)) for c in self.COLUMNS]
                            + [_cell(post.get(p, {}).get("mean")) for p in params]
                            + [_cell(post.get(p, {}).get("sd")) for p in params])
        return buf.getvalue()

    def to_markdown(self) -> str:
        cols = [c for c in self.COLUMNS if c != "error"]
        lines = [f"# {self.model} on {self.data}", "",
                 f"train {self.settings.get('num_train')} points, held-out {self.settings.get('num_test')} "
                 f"(split seed {self.settings.get('seed')}); log-likelihoods are sums of log predictive densities", "",
                 "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.records:
            shown = {**r, "status": "not converged" if r.get("mcmc_converged") is False else r["status"]}
            lines.append("| " + " | ".join(_md(_fmt(shown.get(c))) for c in cols) + " |")
        for r in (r for r in self.records if r["status"] != "ok"):  # failed, or skipped as not applicable
            lines.append(f"\n**{r['method']} {r['status']}:** {r['error']}")
        params = self.parameters()
        if params:
            ran = [r for r in self.records if r["status"] != "skipped"]  # a skipped method has no column
            lines += ["", "## Posterior mean (sd) of the global parameters", "",
                      "| parameter | " + " | ".join(r["method"] for r in ran) + " |", "|---|" + "---|" * len(ran)]
            for p in params:
                cells = []
                for r in ran:
                    s = r.get("posterior", {}).get(p)
                    sd = "" if s is None or s["sd"] is None else f" ({_fmt(s['sd'])})"
                    cells.append("" if s is None else _fmt(s["mean"]) + sd)
                lines.append(f"| {_md(p)} | " + " | ".join(cells) + " |")
        weighted = [r for r in self.records if r.get("posterior_weighted")]
        if weighted:
            lines += ["", "## SVI guides corrected by importance weights (PSIS): posterior mean (sd)", "",
                      "| parameter | " + " | ".join(r["method"] for r in weighted) + " |",
                      "|---|" + "---|" * len(weighted)]
            for p in params:
                cells = [r["posterior_weighted"].get(p) for r in weighted]
                lines.append(f"| {_md(p)} | " + " | ".join("" if c is None else f"{_fmt(c['mean'])} ({_fmt(c['sd'])})"
                                                           for c in cells) + " |")
        lines += _verdict_table(self.records)
        pairs = list(dict.fromkeys(k for r in self.records for k in (r.get("pairs") or {})))
        if pairs:
            with_pairs = [r for r in self.records if r.get("pairs")]
            lines += ["", "## Posterior dependence: corr(a, b) / rank corr(|a - median a|, b)", "",
                      "| pair | " + " | ".join(r["method"] for r in with_pairs) + " |",
                      "|---|" + "---|" * len(with_pairs)]
            for p in pairs:
                stats = [r["pairs"].get(p) for r in with_pairs]
                cells = ["" if c is None else f"{_fmt(c['corr'])} / {_fmt(c['scale_dep'])}" for c in stats]
                lines.append(f"| {_md(p)} | " + " | ".join(cells) + " |")
        for note in self.settings.get("notes", []):
            lines.append(f"\nNote: {note}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "data": self.data, "settings": self.settings,
                           "records": self.records}, indent=2, default=_json_default)

    def save(self, directory: str, overwrite: bool = False) -> dict[str, str]:
        """Write comparison.md, comparison.csv, comparison.json and marginals.png as the run directory
        ``directory``; another ppvae run there is replaced whole only with ``overwrite=True`` (``runs.save_run``)."""
        save_run(self, directory, self._write, overwrite)
        return {ext: os.path.join(os.path.abspath(directory), f"comparison.{ext}") for ext in ("md", "csv", "json")} | {
            "png": os.path.join(os.path.abspath(directory), "marginals.png")}

    def _write(self, directory: str) -> dict[str, str]:
        paths = {ext: os.path.join(directory, f"comparison.{ext}") for ext in ("md", "csv", "json")}
        atomic_write(paths["md"], lambda fh: fh.write(self.to_markdown()))
        atomic_write(paths["csv"], lambda fh: fh.write(self.to_csv()))
        atomic_write(paths["json"], lambda fh: fh.write(self.to_json()))
        paths["png"] = os.path.join(directory, "marginals.png")
        points = {r["method"]: {k: v["mean"] for k, v in r.get("posterior", {}).items()}
                  for r in self.records if r["status"] == "ok" and r.get("point_estimate")}
        write_figure(directory, "marginals.png", lambda path: plot_marginals(
            self.draws, points, path, title=f"{self.model} on {self.data}: marginal posteriors"))
        return paths

    def __repr__(self) -> str:
        return _display.comparison_repr(self)

    def _repr_html_(self) -> str:
        return _display.comparison_html(self)


def _md(text: str) -> str:
    """A Markdown table cell: a ``|`` in a label (the pair ``b|w[0]``) escaped, or it splits the row."""
    return str(text).replace("|", "\\|")


def _verdict_table(records) -> list[str]:
    with_verdict = [r for r in records if r.get("verdict")]
    if not with_verdict:
        return []
    lines = ["", "## Against MCMC: mean difference / MCSE, sd ratio [95%], W1 / W1 between MCMC halves "
                 "(* a real difference)", "",
             "| parameter | " + " | ".join(r["method"] for r in with_verdict) + " |",
             "|---|" + "---|" * len(with_verdict)]
    keys = list(dict.fromkeys(k for r in with_verdict for k in r["verdict"]))
    for k in keys:
        cells = []
        for r in with_verdict:
            v = r["verdict"].get(k)
            if v is None:
                cells.append("")
                continue
            mark = {c: "*" if c in v["real"] else "" for c in ("mean", "sd", "shape")}
            cells.append(f"{v['z_mean']:+.1f}{mark['mean']}, {v['sd_ratio']:.2f} [{v['sd_ratio_low']:.2f}, "
                         f"{v['sd_ratio_high']:.2f}]{mark['sd']}, {v['w1']:.3g} / {v['w1_halves']:.3g}{mark['shape']}")
        lines.append(f"| {_md(k)} | " + " | ".join(cells) + " |")
    return lines


def _cell(v):
    return "" if v is None else v


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _float(v):
    v = float(v)
    return v if math.isfinite(v) else None
