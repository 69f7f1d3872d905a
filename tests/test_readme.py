"""Every command in README.md's ```bash blocks runs and exits 0, so a README command cannot rot.

The commands run in README order, one subprocess each, in one fresh working directory with the repository's
examples/ and benchmarks/ linked in (a command such as
`ppvae evaluate runs/vae` needs the `ppvae fit ... --out runs/vae` before it), with the ppvae and torchrun
of this interpreter's environment on PATH. Each command runs as written except for the OVERRIDES below,
which only shorten how long it runs (the values the README gives are the ones its numbers were measured
with; here the point is that the command works):

  --epochs N -> 1, --steps N -> 20, --num-particles N -> 10, --num-draws N -> 50, --num-mcmc-draws N -> 50,
  --warmup N -> 10, --samples N -> 50 (examples/evidence_schools.py's own option)
  (50 MCMC draws: bridge sampling needs 2 D + 2 draws in each half)

Some commands' outputs are checked beyond the exit code (CHECKS below: files written, numbers in range), for
the user-model examples of "Your own models from the command line".

Skipped parts of a command line (split on `&&`): `pip install ...` (this environment is already the one the
README's set-up command builds, and the test must not change it or reach a network) and `python -m pytest`
(this is that test run; running the suite inside itself would recurse).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
OVERRIDES = {"--epochs": "1", "--steps": "20", "--num-particles": "10", "--samples": "50", "--warmup": "10",
             "--num-draws": "50", "--num-mcmc-draws": "50"}
SKIPPED = ("pip install ", "python -m pytest")
TIMEOUT_S = 600  # per command: generous for a busy 2-core machine (torchrun starts 2 processes)


def readme_commands(text: str) -> list[str]:
    """The shell commands of every ```bash block, in order: one per non-empty line, `&&` chains split,
    the SKIPPED parts left out, the OVERRIDES applied."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part and not part.startswith("#") and not part.startswith(SKIPPED):
                    commands.append(shorten(part))
    return commands


def shorten(command: str) -> str:
    for flag, value in OVERRIDES.items():
        command = re.sub(rf"(?<!\S){re.escape(flag)}(=|\s+)\S+", rf"{flag}\g<1>{value}", command)
    return command


def test_readme_parsing_and_overrides():
    text = "x\n```bash\npip install -e . && ppvae fit vae --epochs 50 --out r  # c\n```\n```python\nno\n```\n" \
           "```bash\npython -m pytest -q\nppvae mcmc m --num-draws=1000 --warmup 5 --num-particles 7\n```\n"
    assert readme_commands(text) == ["ppvae fit vae --epochs 1 --out r  # c",
                                     "ppvae mcmc m --num-draws=50 --warmup 10 --num-particles 10"]


COMMANDS = readme_commands(README.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A fresh directory that looks like the repository root to the commands (examples/ and benchmarks/
    linked in, as `python examples/x.py` needs) while their outputs (runs/...) land outside the checkout."""
    path = tmp_path_factory.mktemp("readme")
    for name in ("examples", "benchmarks"):
        (path / name).symlink_to(README.parent / name, target_is_directory=True)
    return path


def test_readme_has_the_commands_it_promises():
    assert any(c.startswith("ppvae fit gmm K=2 --data faithful") for c in COMMANDS)
    assert any(c.startswith("torchrun ") for c in COMMANDS)
    assert any("evaluate runs/vae --data mnist5k:split=test" in c for c in COMMANDS)
    assert len(COMMANDS) >= 10


EXAMPLES = README.parent / "examples" / "data"


def _records(run):
    """compare's records by method; each must have finished ("ok")."""
    records = {r["method"]: r for r in json.loads((run / "comparison.json").read_text())["records"]}
    assert all(r["status"] == "ok" for r in records.values()), records
    return records


def _check_mixreg_predict(workdir, stdout):
    """Posterior predictive draws of y at the 300 training covariates (--num-draws 50): their mean over draws
    and points within 0.5 of the data's mean response (-0.218; sd 1.94), even after the test's 20 SVI steps."""
    draws = np.load(workdir / "runs/mixreg/predict.npz")
    y = np.loadtxt(EXAMPLES / "mixreg.csv", delimiter=",", skiprows=1)[:, 1]
    assert draws["y"].shape == (50, 300) and draws["z"].shape == (50, 300) and np.isfinite(draws["y"]).all()
    assert abs(draws["y"].mean() - y.mean()) < 0.5, draws["y"].mean()


def _check_mixreg_compare(workdir, stdout):
    """Both guides finish; the held-out log-likelihood per point (60 of 300 points) is that of a fit: above
    -3 (a single line through both components: about -2.1 per point; the mixture at convergence: -0.8)."""
    records = _records(workdir / "runs/mixreg-compare")
    assert set(records) == {"svi:auto_normal", "svi:auto_mvn"}
    for r in records.values():
        assert -3 < r["test_loglik"] / 60 < 0, r["test_loglik"]


# the closed-form bound for factor analysis on examples/data/fa.csv: the full-covariance Gaussian's maximum
# likelihood, mean log N(x_i; mean, covariance of the data) = -6.041 per point; FA (a constrained covariance) is
# at most that, and an average over posterior draws can exceed it by about (parameters / N) = 20 / 300 nats
FA_GAUSSIAN_MLE = -6.041


def _check_fa_mcmc(workdir, stdout):
    """The marginal FA's NUTS run writes its samples and figures; the posterior mean of mu is within 0.15 of
    the data's column means (mu's posterior sd about 0.05-0.1)."""
    run = workdir / "runs/fa-nuts"
    assert all((run / f).exists() for f in ("samples.pt", "trace.png", "rank.png", "summary.csv", "config.json"))
    x = np.loadtxt(EXAMPLES / "fa.csv", delimiter=",", skiprows=1)
    rows = {r.split(",")[0]: r.split(",") for r in (run / "summary.csv").read_text().splitlines()[1:]}
    mu = np.array([float(rows[f"mu[f{j}]"][1]) for j in range(5)])
    assert np.abs(mu - x.mean(0)).max() < 0.15, (mu, x.mean(0))


def _check_fa_evaluate(workdir, stdout):
    """lppd_i of the NUTS draws, mean over points: at most the Gaussian bound + 0.15, at least the bound - 0.5
    (measured -6.049 after the test's 10 warm-up steps)."""
    lm = json.loads((workdir / "runs/fa-nuts/metrics.json").read_text())["log_marginal"]
    assert FA_GAUSSIAN_MLE - 0.5 < lm["mean"] < FA_GAUSSIAN_MLE + 0.15, lm["mean"]


def _check_fa_predict(workdir, stdout):
    """Posterior predictive draws of the 300 x 5 data (--num-draws 50): every column's mean within 0.2 and its
    sd within 25% of the data's (each column's predictive is N(mu, W^T W + psi) at a posterior draw)."""
    draws = np.load(workdir / "runs/fa-nuts/predict.npz")
    x = np.loadtxt(EXAMPLES / "fa.csv", delimiter=",", skiprows=1)
    assert draws["x"].shape == (50, 300, 5) and draws["mu"].shape == (50, 5)
    flat = draws["x"].reshape(-1, 5)
    assert np.abs(flat.mean(0) - x.mean(0)).max() < 0.2
    assert np.abs(flat.std(0) / x.std(0) - 1).max() < 0.25


def _check_fa_compare(workdir, stdout):
    """SVI and NUTS on the marginal FA both finish. NUTS's held-out log-likelihood per point (60 points) is within
    0.5 nats of the Gaussian bound (measured -6.10 after 10 warm-up steps); SVI's, after the test's 20 steps far
    from converged (measured -6.81), within 3 nats."""
    records = _records(workdir / "runs/fa-compare")
    per_point = {m: r["test_loglik"] / 60 for m, r in records.items()}
    assert set(per_point) == {"svi:auto_normal", "nuts"}
    assert abs(per_point["nuts"] - FA_GAUSSIAN_MLE) < 0.5, per_point
    assert abs(per_point["svi:auto_normal"] - FA_GAUSSIAN_MLE) < 3, per_point


CHECKS = {  # a command containing the key (after the OVERRIDES) -> the check of its outputs
    "ppvae predict runs/mixreg ": _check_mixreg_predict,
    "ppvae compare examples/mixreg.py": _check_mixreg_compare,
    "ppvae mcmc examples/factor_analysis.py": _check_fa_mcmc,
    "ppvae evaluate runs/fa-nuts ": _check_fa_evaluate,
    "ppvae predict runs/fa-nuts ": _check_fa_predict,
    "ppvae compare examples/factor_analysis.py": _check_fa_compare,
}


def test_every_check_has_its_command():
    for key in CHECKS:
        assert sum(key in c for c in COMMANDS) == 1, key


@pytest.mark.parametrize("command", COMMANDS, ids=[c.split(" --")[0][:60] for c in COMMANDS])
def test_readme_command_runs(command, workdir):
    bindir = os.path.dirname(sys.executable)  # ppvae and torchrun of this environment
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    proc = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    err = proc.stderr if len(proc.stderr) < 6000 else proc.stderr[:3000] + "\n...\n" + proc.stderr[-3000:]
    assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{err}"
    for key, check in CHECKS.items():
        if key in command:
            check(workdir, proc.stdout)
