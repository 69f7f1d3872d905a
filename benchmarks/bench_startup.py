"""Wall time of the ``ppvae`` commands that should start at once (issue 31: under 1.5 s), beside the floor.

Each command runs as a fresh process (``python -m ppvae.cli ...``, stdout discarded), REPEATS times; the median
wall time (spawn to exit) is printed beside ``python -c "import torch"``, the cost every engine command pays and
the fast ones must not, ``python -c "import ppvae"`` and ``python -c "pass"`` (the interpreter alone), and one
engine command for scale: ``ppvae models`` through :func:`ppvae.cli.app.main`, the path every command took before
issue 31, and ``ppvae models --import examples/blr.py``, which needs the live registry. The load
average is printed with the numbers: on a shared machine they move with it, the ratios less.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_S = 1.5

COMMANDS = [
    ("python -c pass (interpreter)", [sys.executable, "-c", "pass"]),
    ("python -c 'import torch' (floor)", [sys.executable, "-c", "import torch"]),
    ("python -c 'import ppvae'", [sys.executable, "-c", "import ppvae"]),
    ("ppvae --help", [sys.executable, "-m", "ppvae.cli", "--help"]),
    ("ppvae --version", [sys.executable, "-m", "ppvae.cli", "--version"]),
    ("ppvae models", [sys.executable, "-m", "ppvae.cli", "models"]),
    ("ppvae datasets", [sys.executable, "-m", "ppvae.cli", "datasets"]),
    ("ppvae fit --help", [sys.executable, "-m", "ppvae.cli", "fit", "--help"]),
    ("ppvae models by the engine (the path before)",
     [sys.executable, "-c", "import sys; from ppvae.cli.app import main; sys.exit(main(['models']))"]),
    ("ppvae models --import examples/blr.py (engine)",
     [sys.executable, "-m", "ppvae.cli", "models", "--import", os.path.join(ROOT, "examples", "blr.py")]),
]
FAST = {"ppvae --help", "ppvae --version", "ppvae models", "ppvae datasets"}


def wall_time(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command; the median is printed")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; cores: {os.cpu_count()}; "
          f"median of {args.repeats} runs each")
    medians = {}
    for name, argv in COMMANDS:
        wall_time(argv)  # once to warm the file cache: the median is of warm starts
        times = [wall_time(argv) for _ in range(args.repeats)]
        medians[name] = statistics.median(times)
        print(f"{name:50s} {medians[name]:6.3f} s  (min {min(times):.3f}, max {max(times):.3f})")
    floor = medians["python -c 'import torch' (floor)"]
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in sorted(FAST):
        verdict = "ok" if medians[name] < TARGET_S else f"over the {TARGET_S} s target"
        print(f"{name:16s} {medians[name]:.3f} s = {medians[name] / floor:.2f} x import torch; {verdict}")


if __name__ == "__main__":
    main()
