"""A notebook executed as a user runs it (nbclient, a fresh ipykernel): a fit shows a live progress bar (tqdm's
notebook widget; before: nothing, the kernel's stderr being no TTY), and results display as short reprs and HTML
tables (before: tensor dumps of up to 31,688 characters)."""

import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytestmark = pytest.mark.slow  # a kernel start and a fit: about 30 s

CELLS = [
    "import ppvae, torch\nfrom ppvae.models.gmm import GMM\ndata = ppvae.load_dataset('faithful')\ndata",
    "fit = ppvae.fit(GMM(K=2), data, steps=40, seed=0, check_convergence=False)\nfit",
    "fit.summary(data, num_draws=200)",
    "ppvae.log_marginal(fit, data, num_particles=50)",
]


def _outputs(cell, kind):
    return [o for o in cell.outputs if o.output_type == kind]


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class HereKernels(KernelSpecManager):  # the kernel runs this interpreter (the venv), whatever is installed
        def get_kernel_spec(self, name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="Python 3", language="python", env=env)

    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_spec_manager=HereKernels(), kernel_name="python3")
    try:
        nbclient.NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": os.getcwd()}}).execute()
    finally:  # the kernel process ends here, not after the test (the session checks that no process is left)
        if km.has_kernel:
            km.shutdown_kernel(now=True)
        if km.provisioner is not None and km.provisioner.process is not None:
            km.provisioner.process.wait(timeout=30)
    return nb


def test_a_fit_shows_a_live_progress_bar(executed):
    cell = executed.cells[1]
    widgets = [o for o in _outputs(cell, "display_data") if "application/vnd.jupyter.widget-view+json" in o.data]
    text = "".join(o.get("text", "") for o in _outputs(cell, "stream"))
    assert widgets or "40/40" in text, cell.outputs
    if widgets:  # tqdm.notebook: the widget's text shows at first; its updates live in the stored widget state
        assert widgets[0].data["text/plain"].startswith("fit:   0%") and "0/40" in widgets[0].data["text/plain"]
        state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        values = [m["state"].get("value") for m in state.values()]
        assert 40 in values and any(isinstance(v, str) and "40/40" in v for v in values), values


def test_results_display_as_short_reprs_and_html_tables(executed):
    data_out, fit_out, summary_out, lm_out = (_outputs(c, "execute_result")[0].data for c in executed.cells)
    assert data_out["text/plain"].startswith("Dataset(name='faithful', kind='real', points=272")
    assert "<table>" in data_out["text/html"] and "(272, 2) float32" in data_out["text/html"]
    assert fit_out["text/plain"].startswith("Fit(gmm, svi:auto_normal, final loss ")
    assert "<td>svi:auto_normal</td>" in fit_out["text/html"]
    assert summary_out["text/plain"].startswith("Summary(svi:auto_normal, 1 chain(s) x 200 draw(s), ")
    assert "<td>locs[0,0]</td>" in summary_out["text/html"] and "<th>q95</th>" in summary_out["text/html"]
    assert lm_out["text/plain"].startswith("LogMarginal(is, 272 points: mean ")
    assert "<td>mean log p(x_i) (nats)</td>" in lm_out["text/html"]
    for out in (data_out, fit_out, summary_out, lm_out):
        assert len(out["text/plain"]) < 300 and "tensor(" not in out["text/plain"] + out["text/html"]
