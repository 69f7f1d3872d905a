"""Write the small CSVs the user-model examples read (seeded; run from the repository root).

    python examples/make_example_data.py

* ``data/regression.csv``: 100 rows of covariates x0, x1 ~ N(0, 1) and a response
  y = 0.3 + 1.5 x0 - 0.7 x1 + N(0, 0.5^2) (for ``examples/blr.py``; noise sd 0.5 is known to the model).
* ``data/mixreg.csv``: 300 rows, x ~ U(-2, 2), y from one of two lines chosen with probability 0.4 / 0.6:
  y = 1 + 2 x or y = -1 - x, plus N(0, 0.3^2) (for ``examples/mixreg.py``).
* ``data/fa.csv``: 300 rows of 5 features from a 2-factor model x = mu + W^T z + N(0, diag psi)
  (for ``examples/factor_analysis.py``); simulated, not a real data set.
* ``data/hier_logistic.csv``: 8 groups x 15 rows (group, x, y): x ~ N(0, 1), group effects (intercept, slope)
  b_g ~ N((-0.5, 1), diag(0.8, 0.5) [[1, 0.6], [0.6, 1]] diag(0.8, 0.5)), y ~ Bernoulli(logit^-1(b_g0 + b_g1 x))
  (for ``examples/hier_logistic.py``).
* ``data/ordinal.csv``: 150 rows, x0, x1 ~ N(0, 1), y = #{k: c_k < 1.2 x0 - 0.8 x1 + Logistic(0, 1)} with cutpoints
  (-1, 1), so y in {0, 1, 2} (for ``examples/ordinal.py``).
* ``data/hmm.csv``: one sequence of 60 steps of a two-state chain, s_0 uniform, A = [[0.9, 0.1], [0.2, 0.8]],
  x_t ~ N((-1, 1.5)[s_t], 1) (for ``examples/hmm.py``).
* ``data/annotation.csv``: 40 items with true classes from (0.5, 0.3, 0.2), each labelled by 4 annotators who give
  the true class with probability (0.9, 0.8, 0.7, 0.5) and else a uniformly drawn other class
  (for ``examples/annotation.py``).
"""

import os

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _write(name, header, rows, fmt="{:.6f}"):
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, name), "w") as fh:
        fh.write(",".join(header) + "\n")
        for r in rows:
            fh.write(",".join(fmt.format(v) for v in r) + "\n")


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
    _structured(rng)


def _structured(rng):
    """The data of the four structured examples (hierarchical, ordinal, one sequence, annotation)."""
    group = np.repeat(np.arange(8), 15)
    scale = np.diag([0.8, 0.5]) @ np.linalg.cholesky(np.array([[1.0, 0.6], [0.6, 1.0]]))
    b = np.array([-0.5, 1.0]) + rng.standard_normal((8, 2)) @ scale.T
    x = rng.standard_normal(120)
    y = rng.uniform(size=120) < 1 / (1 + np.exp(-(b[group, 0] + b[group, 1] * x)))
    _write("hier_logistic.csv", ["group", "x", "y"], np.column_stack([group, x, y]), "{:.6g}")

    x = rng.standard_normal((150, 2))
    latent = x @ np.array([1.2, -0.8]) + rng.logistic(size=150)
    y = (latent[:, None] > np.array([-1.0, 1.0])).sum(1)
    _write("ordinal.csv", ["x0", "x1", "y"], np.column_stack([x, y]), "{:.6g}")

    trans, s, seq = np.array([[0.9, 0.1], [0.2, 0.8]]), rng.integers(2), []
    for _ in range(60):
        s = rng.choice(2, p=trans[s])
        seq.append(rng.normal((-1.0, 1.5)[s], 1.0))
    _write("hmm.csv", ["x"], np.array(seq)[:, None])

    truth = rng.choice(3, size=40, p=[0.5, 0.3, 0.2])
    labels = np.empty((40, 4), dtype=int)
    for a, acc in enumerate([0.9, 0.8, 0.7, 0.5]):
        right = rng.uniform(size=40) < acc
        other = (truth + rng.integers(1, 3, size=40)) % 3
        labels[:, a] = np.where(right, truth, other)
    _write("annotation.csv", [f"a{j}" for j in range(4)], labels, "{:d}")


if __name__ == "__main__":
    main()
