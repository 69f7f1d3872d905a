"""Write the three small CSVs the user-model examples read (seeded; run from the repository root).

    python examples/make_example_data.py

* ``data/regression.csv``: 100 rows of covariates x0, x1 ~ N(0, 1) and a response
  y = 0.3 + 1.5 x0 - 0.7 x1 + N(0, 0.5^2) (for ``examples/blr.py``; noise sd 0.5 is known to the model).
* ``data/mixreg.csv``: 300 rows, x ~ U(-2, 2), y from one of two lines chosen with probability 0.4 / 0.6:
  y = 1 + 2 x or y = -1 - x, plus N(0, 0.3^2) (for ``examples/mixreg.py``).
* ``data/fa.csv``: 300 rows of 5 features from a 2-factor model x = mu + W^T z + N(0, diag psi)
  (for ``examples/factor_analysis.py``); simulated, not a real data set.
"""

import os

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _write(name, header, rows):
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, name), "w") as fh:
        fh.write(",".join(header) + "\n")
        for r in rows:
            fh.write(",".join(f"{v:.6f}" for v in r) + "\n")


def main():
    rng = np.random.default_rng(20261202)
    x = rng.standard_normal((100, 2))
    y = 0.3 + x @ np.array([1.5, -0.7]) + 0.5 * rng.standard_normal(100)
    _write("regression.csv", ["x0", "x1", "y"], np.column_stack([x, y]))

    x = rng.uniform(-2, 2, 300)
    first = rng.uniform(size=300) < 0.4
    y = np.where(first, 1 + 2 * x, -1 - x) + 0.3 * rng.standard_normal(300)
    _write("mixreg.csv", ["x", "y"], np.column_stack([x, y]))

    W = rng.standard_normal((2, 5))
    mu = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    psi = np.array([0.2, 0.5, 0.3, 0.4, 0.1])
    z = rng.standard_normal((300, 2))
    data = mu + z @ W + np.sqrt(psi) * rng.standard_normal((300, 5))
    _write("fa.csv", [f"f{j}" for j in range(5)], data)


if __name__ == "__main__":
    main()
