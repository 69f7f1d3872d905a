"""Every command in README.md's ```bash blocks runs and exits 0, so a README command cannot rot.

The commands run in README order, one subprocess each, in one fresh working directory with the repository's
examples/ and benchmarks/ linked in (a command such as
`ppvae evaluate runs/vae` needs the `ppvae fit ... --out runs/vae` before it), with the ppvae and torchrun
of this interpreter's environment on PATH. Each command runs as written except for the OVERRIDES below,
which only shorten how long it runs (the values the README gives are the ones its numbers were measured
with; here the point is that the command works):

  --epochs N -> 1, --steps N -> 20, --num-samples N -> 10, --samples N -> 50, --num-draws N -> 50,
  --warmup N -> 10, --draws N -> 10
  (50 MCMC draws: bridge sampling needs 2 D + 2 draws in each half)

Skipped parts of a command line (split on `&&`): `pip install ...` (this environment is already the one the
README's set-up command builds, and the test must not change it or reach a network) and `python -m pytest`
(this is that test run; running the suite inside itself would recurse).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
OVERRIDES = {"--epochs": "1", "--steps": "20", "--num-samples": "10", "--samples": "50", "--warmup": "10",
             "--draws": "10", "--num-draws": "50"}
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
           "```bash\npython -m pytest -q\nppvae mcmc m --samples=1000 --warmup 5 --num-samples 7\n```\n"
    assert readme_commands(text) == ["ppvae fit vae --epochs 1 --out r  # c",
                                     "ppvae mcmc m --samples=50 --warmup 10 --num-samples 10"]


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


@pytest.mark.parametrize("command", COMMANDS, ids=[c.split(" --")[0][:60] for c in COMMANDS])
def test_readme_command_runs(command, workdir):
    bindir = os.path.dirname(sys.executable)  # ppvae and torchrun of this environment
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    proc = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    err = proc.stderr if len(proc.stderr) < 6000 else proc.stderr[:3000] + "\n...\n" + proc.stderr[-3000:]
    assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stdout[-2000:]}\n{err}"
