"""How results look in a console and a notebook: a one-line ``__repr__`` (kind, shape, headline numbers; never a
tensor's values) and a ``_repr_html_`` table (Jupyter shows it in place of the repr) for ``Dataset``, ``Fit``,
``MCMCResult``, ``LogMarginal``, ``Summary`` and ``Comparison``. Each class's methods call the functions here."""

from __future__ import annotations

import html
import math

__all__ = ["dataset_repr", "dataset_html", "fit_html", "mcmc_repr", "mcmc_html", "log_marginal_repr",
           "log_marginal_html", "summary_repr", "summary_html", "comparison_repr", "comparison_html", "table_html"]

MAX_HTML_ROWS = 60  # a Summary of a 784-pixel model's weights stays readable: the rest is named, not shown


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def _shape(t) -> str:
    return str(tuple(int(n) for n in t.shape))


def table_html(headers, rows, caption: str = "", note: str = "") -> str:
    """An HTML table (every cell escaped; numbers to 4 significant digits) with a caption and a note below."""
    out = ["<table>"]
    if caption:
        out.append(f"<caption style=\"text-align:left\">{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(_num(v))}</td>" for v in row) + "</tr>")
    out.append("</tbody></table>")
    if note:
        out.append(f"<p>{html.escape(note)}</p>")
    return "".join(out)


# -- Dataset ----------------------------------------------------------------------------------------------------
def _dataset_fields(ds) -> list[tuple[str, str]]:
    fields = [("name", ds.name), ("kind", ds.kind), ("points", str(len(ds))),
              ("x", f"{_shape(ds.x)} {str(ds.x.dtype).replace('torch.', '')}")]
    if ds.y is not None:
        what = "response" if ds.has_response else "labels"
        fields.append(("y", f"{_shape(ds.y)} {what}"))
    columns = ds.meta.get("columns")
    if columns:
        shown = ", ".join(map(str, columns[:6])) + (f", ... ({len(columns)} in all)" if len(columns) > 6 else "")
        fields.append(("columns", shown))
    return fields


def dataset_repr(ds) -> str:
    return "Dataset(" + ", ".join(f"{k}={v!r}" if k in ("name", "kind") else f"{k}={v}"
                                  for k, v in _dataset_fields(ds)) + ")"


def dataset_html(ds) -> str:
    return table_html(("", ""), _dataset_fields(ds), caption="ppvae.Dataset")


# -- Fit --------------------------------------------------------------------------------------------------------
def fit_html(fit) -> str:
    h = fit.history or {}
    loss = h.get("loss") or []
    info = fit.data_info or {}
    rows = [("model", fit.model.name or type(fit.model).__name__),
            ("hyperparameters", ", ".join(f"{k}={v}" for k, v in (fit.model.hparams or {}).items()) or "-"),
            ("method", fit.method), ("ELBO", fit.elbo_name), ("steps", h.get("steps", len(loss))),
            ("final loss (negative ELBO, nats)", float(loss[-1]) if loss else None),
            ("time (s)", h.get("time_s")), ("data", f"{info.get('name', '?')}: {info.get('num_data', '?')} points")]
    return table_html(("", ""), rows, caption="ppvae.Fit")


# -- MCMCResult -------------------------------------------------------------------------------------------------
def mcmc_repr(r) -> str:
    name = getattr(r.model, "name", None) or type(r.model).__name__
    sites = ", ".join(f"{k}{list(v.shape[2:])}" for k, v in list(r.samples.items())[:6])
    more = f", ... ({len(r.samples)} sites)" if len(r.samples) > 6 else ""
    return (f"MCMCResult({name}, {r.method}, {r.num_chains} chains x {r.num_draws} draws, "
            f"{r.num_divergences} divergences, {r.time_s:.1f} s; sites {sites}{more})")


def mcmc_html(r) -> str:
    rows = [(k, "x".join(str(n) for n in v.shape[2:]) or "scalar", float(v.double().mean()), float(v.double().std()))
            for k, v in r.samples.items()]
    name = getattr(r.model, "name", None) or type(r.model).__name__
    caption = (f"ppvae.MCMCResult: {name} by {r.method}, {r.num_chains} chains x {r.num_draws} draws, "
               f"{r.num_divergences} divergences, {r.time_s:.1f} s")
    return table_html(("site", "shape per draw", "mean of all entries", "sd of all entries"), rows, caption,
                      note="per-entry means, quantiles, bulk ESS and R-hat: result.summary(data)")


# -- LogMarginal ------------------------------------------------------------------------------------------------
def _lm_fields(lm) -> list[tuple[str, object]]:
    k = "chains per point" if lm.method == "ais" else "importance samples per point"
    khat = lm.khat_max
    return [("method", lm.method), ("points", len(lm.values)), ("mean log p(x_i) (nats)", lm.mean),
            ("standard error over points", lm.stderr), ("Monte Carlo error of the mean", lm.mc_stderr_mean),
            ("total log p(x) (nats)", lm.total), (k, lm.num_particles), ("proposal", lm.proposal),
            ("mean ELBO (nats)", lm.elbo_mean), ("mean ESS", lm.ess_mean),
            ("max Pareto k-hat", khat if math.isfinite(khat) else "n/a (weights exact or too few samples)"),
            ("points with k-hat > 0.7", lm.num_khat_over_0_7)]


def log_marginal_repr(lm) -> str:
    return (f"LogMarginal({lm.method}, {len(lm.values)} points: mean {lm.mean:.4f} +- {lm.stderr:.4f} "
            f"(Monte Carlo {lm.mc_stderr_mean:.2g}), total {lm.total:.2f}, {lm.num_particles} "
            f"{'chains' if lm.method == 'ais' else 'samples'}/point, {lm.proposal} proposal, "
            f"k-hat max {_num(lm.khat_max, 3)})")


def log_marginal_html(lm) -> str:
    return table_html(("", ""), _lm_fields(lm), caption="ppvae.LogMarginal: per-point log p(x_i)",
                      note="per-point values: .values, .ess, .khat, .elbo, .mc_stderr")


# -- Summary ----------------------------------------------------------------------------------------------------
def _summary_head(s) -> str:
    return "point estimate" if s.point else f"{s.num_chains} chain(s) x {s.num_draws} draw(s)"


def summary_repr(s) -> str:
    first = ", ".join(f"{r['name']} {_num(r['mean'])}" for r in s.rows[:3])
    more = ", ..." if len(s.rows) > 3 else ""
    return f"Summary({s.method}, {_summary_head(s)}, {len(s.rows)} entries: {first}{more})"


def summary_html(s) -> str:
    rows = [[r["name"]] + [r[c] for c in s.columns] for r in s.rows[:MAX_HTML_ROWS]]
    notes = list(s.notes)
    if len(s.rows) > MAX_HTML_ROWS:
        notes.insert(0, f"first {MAX_HTML_ROWS} of {len(s.rows)} entries shown; all of them: .rows or .to_text()")
    return table_html(("entry",) + tuple(s.columns), rows, f"ppvae.Summary: {s.method}, {_summary_head(s)}",
                      " ".join(notes))


# -- Comparison -------------------------------------------------------------------------------------------------
HTML_COLUMNS = ("method", "status", "time_s", "train_loglik", "test_loglik", "elpd_loo", "khat_max", "ess_bulk_min",
                "rhat_max", "num_divergences")


def comparison_repr(c) -> str:
    methods = ", ".join(f"{r['method']} {r['status']}" for r in c.records)
    return f"Comparison({c.model} on {c.data}: {len(c.records)} methods: {methods})"


def comparison_html(c) -> str:
    rows = [[r.get(col) for col in HTML_COLUMNS] for r in c.records]
    return table_html(HTML_COLUMNS, rows, f"ppvae.Comparison: {c.model} on {c.data}",
                      "log-likelihoods are sums of log predictive densities (nats); every column: .to_markdown()")
