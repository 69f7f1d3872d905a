"""NUTS with the chains vectorized: C chains advance in lockstep, every leapfrog step one batched evaluation of
U(theta) and its gradient over a (C, n) tensor, each chain with its own tree, step size and mass matrix.

Per chain the transition is NumPyro's iterative NUTS (Phan, Pradhan & Jankowiak 2019, "Composable effects for
flexible and accelerated probabilistic programming in NumPyro", sec. 3; ``numpyro.infer.hmc_util.build_tree``):
multinomial sampling within a subtree, biased progressive sampling between subtrees (Betancourt 2017, "A
conceptual introduction to Hamiltonian Monte Carlo", appendix A.3), the generalized U-turn criterion on
momentum sums (ibid., A.4.2) checked at every subtree by checkpoints, a divergence when the energy error
exceeds ``max_delta_energy``, and at most ``max_tree_depth`` doublings. Warm-up is Stan's: dual averaging of
the step size towards ``target_accept`` (Hoffman & Gelman 2014, sec. 3.2), a diagonal mass matrix from
Welford variances over doubling windows (75 / 25, 50, ... / 50 iterations), regularized as Stan does.

Why lockstep chains: on a CPU the cost of a small model's gradient is the per-operation overhead of PyTorch,
not arithmetic, so one evaluation over C chains costs about what one chain costs. A chain whose tree is
finished waits (its rows are computed and discarded) until the slowest chain of the iteration is done; the
work per iteration is 2^d - 1 batched steps for the deepest tree d. Chains that wait never move: each chain's
transition is exactly the per-chain algorithm, only its random numbers come from one shared stream (a run is
reproducible bit for bit from its seed and number of chains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

ValueAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Array = np.ndarray


@dataclass
class _Point:
    """Positions z, momenta r, potentials u and gradients g of C chains ((C, n), (C, n), (C,), (C, n))."""

    z: Array
    r: Array
    u: Array
    g: Array

    def where(self, mask: Array, other: "_Point") -> "_Point":
        """Rows of ``other`` where ``mask`` (C,) holds, else this point's."""
        m = mask[..., None]
        return _Point(np.where(m, other.z, self.z), np.where(m, other.r, self.r),
                      np.where(mask, other.u, self.u), np.where(m, other.g, self.g))


class _Tree:
    """The trajectory of each chain: both ends, the proposal, log weight, momentum sum and flags (all (C, ...))."""

    def __init__(self, start: _Point, energy: Array):
        self.left = self.right = self.proposal = start
        self.weight = np.zeros_like(energy)
        self.r_sum = start.r.copy()
        self.turning = np.zeros_like(energy, dtype=bool)
        self.diverging = np.zeros_like(self.turning)
        self.accept_sum = np.zeros_like(energy)
        self.num_proposals = np.zeros_like(energy)


def _is_turning(inv_mass, r_left, r_right, r_sum):
    """Betancourt's criterion on the momentum sum (rho minus half the end momenta), per chain."""
    rho = r_sum - (r_left + r_right) / 2
    return ((inv_mass * r_left * rho).sum(-1) <= 0) | ((inv_mass * r_right * rho).sum(-1) <= 0)


def _checkpoints(leaf: int) -> tuple[int, int]:
    """(lowest, highest) checkpoint index to check at leaf ``leaf`` of a subtree (NumPyro's
    ``_leaf_idx_to_ckpt_idxs``): the subtrees that end at this leaf start at those checkpoints."""
    high = bin(leaf >> 1).count("1")
    trailing_ones = (~leaf & (leaf + 1)).bit_length() - 1
    return high - trailing_ones + 1, high


class VectorizedNUTS:
    """NUTS over C chains at once (module docstring). ``value_and_grad(theta)`` maps (C, n) positions to
    (U (C,), dU/dtheta (C, n)); rows are independent chains."""

    def __init__(self, value_and_grad: ValueAndGrad, *, target_accept: float = 0.8, max_tree_depth: int = 10,
                 max_delta_energy: float = 1000.0, seed: int = 0):
        self._torch_value_and_grad, self.target_accept = value_and_grad, target_accept
        self.max_tree_depth, self.max_delta_energy = max_tree_depth, max_delta_energy
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def value_and_grad(self, z: Array) -> tuple[Array, Array]:
        # the bookkeeping runs in NumPy (a third of PyTorch's per-call overhead on arrays this small); the model in
        # PyTorch, on the same memory
        u, g = self._torch_value_and_grad(torch.from_numpy(z))
        return u.detach().numpy().astype(self.dtype, copy=False), g.detach().numpy().astype(self.dtype, copy=False)

    # -- random numbers (one stream for all chains) -------------------------------------------------
    def _uniform(self, like: Array) -> Array:
        return self.rng.random(like.shape, dtype=self.dtype)

    def _momentum(self, z: Array, inv_mass: Array) -> Array:
        return self.rng.standard_normal(z.shape, dtype=self.dtype) / np.sqrt(inv_mass)

    # -- one leapfrog step of every chain ------------------------------------------------------------
    def _leapfrog(self, p: _Point, half_step: Array, move: Array) -> _Point:
        """Velocity Verlet with per-chain signed step sizes eps (C, 1): ``half_step`` = eps / 2 and ``move`` =
        eps * inverse mass (computed once per subtree: the NumPy calls per step are the sampler's overhead)."""
        r = p.r - half_step * p.g
        z = p.z + move * r
        u, g = self.value_and_grad(z)
        return _Point(z, r - half_step * g, u, g)

    @staticmethod
    def _energy(p: _Point, half_inv_mass: Array) -> Array:
        """U + r' M^-1 r / 2 per chain, from ``half_inv_mass`` = M^-1 / 2 (exact: a product by 1/2 is)."""
        return p.u + (half_inv_mass * p.r * p.r).sum(-1)

    # -- one NUTS transition -----------------------------------------------------------------------
    def transition(self, point: _Point, step: Array, inv_mass: Array):
        """One NUTS iteration of every chain from ``point`` (its momenta are redrawn). Returns the new point,
        the mean acceptance statistic per chain (for adaptation), divergence flags and leapfrog steps taken."""
        start = _Point(point.z, self._momentum(point.z, inv_mass), point.u, point.g)
        energy0 = self._energy(start, 0.5 * inv_mass)
        tree = _Tree(start, energy0)
        active = np.ones_like(tree.turning)
        for depth in range(self.max_tree_depth):
            right = self._uniform(energy0) < 0.5
            self._double(tree, depth, right, active, step, inv_mass, energy0)
            active = active & ~tree.turning & ~tree.diverging
            if not active.any():
                break
        accept = tree.accept_sum / tree.num_proposals.clip(1, None)
        return tree.proposal, accept, tree.diverging, tree.num_proposals

    def _double(self, tree: _Tree, depth: int, right, active, step, inv_mass, energy0) -> None:
        """Grow each active chain's tree by a subtree of 2^depth leaves in its direction ``right`` (C,)
        and combine them (biased progressive sampling: the subtree's proposal is taken with probability
        min(1, w_new / w_old), never from a turning or diverging subtree)."""
        sub = self._subtree(tree, depth, right, active, step, inv_mass, energy0)
        ok = active & ~sub["turning"] & ~sub["diverging"]
        prob = np.minimum(np.exp(sub["weight"] - tree.weight), 1.0)
        take = ok & (self._uniform(prob) < prob)
        tree.proposal = tree.proposal.where(take, sub["proposal"])
        tree.right = tree.right.where(active & right, sub["end"])
        tree.left = tree.left.where(active & ~right, sub["end"])
        m = active[..., None]
        tree.r_sum = np.where(m, tree.r_sum + sub["r_sum"], tree.r_sum)
        tree.weight = np.where(active, np.logaddexp(tree.weight, sub["weight"]), tree.weight)
        turned = sub["turning"] | _is_turning(inv_mass, tree.left.r, tree.right.r, tree.r_sum)
        tree.turning = np.where(active, turned, tree.turning)
        tree.diverging = np.where(active, sub["diverging"], tree.diverging)
        tree.accept_sum = np.where(active, tree.accept_sum + sub["accept_sum"], tree.accept_sum)
        tree.num_proposals = np.where(active, tree.num_proposals + sub["num"], tree.num_proposals)

    def _subtree(self, tree: _Tree, depth: int, right, active, step, inv_mass, energy0) -> dict:
        """Build the subtree leaf by leaf (NumPyro's ``_iterative_build_subtree``), uniform multinomial sampling
        of its proposal, U-turn checks of every sub-subtree ending at each leaf from checkpoints of momenta."""
        end = tree.left.where(right, tree.right)
        signed = np.where(right, step, -step)[..., None]
        half_step, move, half_inv_mass = 0.5 * signed, signed * inv_mass, 0.5 * inv_mass
        n = end.z.shape[-1]
        r_ckpts = np.zeros((end.r.shape[0], max(depth, 1), n))
        sum_ckpts = np.zeros_like(r_ckpts)
        zero = np.zeros_like(energy0)
        sub = {"end": end, "proposal": end, "weight": zero, "r_sum": np.zeros_like(end.r), "accept_sum": zero,
               "num": zero, "turning": np.zeros_like(active), "diverging": np.zeros_like(active)}
        building = active.copy()
        for leaf in range(2 ** depth):
            new = self._leapfrog(sub["end"], half_step, move)
            delta = self._energy(new, half_inv_mass) - energy0
            delta = np.where(np.isnan(delta), np.inf, delta)
            diverging = building & (delta > self.max_delta_energy)
            weight = np.logaddexp(sub["weight"], -delta) if leaf else -delta
            take = building & (self._uniform(delta) < np.exp(-delta - weight)) if leaf else building
            sub["proposal"] = sub["proposal"].where(take, new)
            sub["end"] = sub["end"].where(building & ~diverging, new)  # a diverged point is never stepped from
            sub["weight"] = np.where(building, weight, sub["weight"])
            mb = building[..., None]
            sub["r_sum"] = np.where(mb, sub["r_sum"] + new.r, sub["r_sum"])
            sub["accept_sum"] = np.where(building, sub["accept_sum"] + np.minimum(np.exp(-delta), 1.0),
                                            sub["accept_sum"])
            sub["num"] = sub["num"] + building
            sub["diverging"] = sub["diverging"] | diverging
            low, high = _checkpoints(leaf)
            if leaf % 2 == 0 and depth > 0:
                r_ckpts[:, high] = np.where(mb, new.r, r_ckpts[:, high])
                sum_ckpts[:, high] = np.where(mb, sub["r_sum"], sum_ckpts[:, high])
            if low <= high:
                left_r = r_ckpts[:, low:high + 1]
                sums = sub["r_sum"][:, None] - sum_ckpts[:, low:high + 1] + left_r
                turned = _is_turning(inv_mass[:, None], left_r, new.r[:, None], sums).any(-1)
                sub["turning"] = sub["turning"] | (building & turned)
            building = building & ~sub["turning"] & ~sub["diverging"]
            if not building.any():
                break
        return sub

    # -- warm-up -----------------------------------------------------------------------------------
    def _reasonable_step(self, point: _Point, step: Array, inv_mass: Array) -> Array:
        """Per chain, double or halve the step until one leapfrog step's acceptance crosses 0.8 (Hoffman &
        Gelman 2014, Algorithm 4; NumPyro's ``find_reasonable_step_size``)."""
        target = math.log(0.8)
        last = np.zeros_like(step)
        searching = np.ones_like(step, dtype=bool)
        tiny, huge = np.finfo(step.dtype).tiny, np.finfo(step.dtype).max
        for _ in range(200):  # 2^-200 .. 2^200: beyond any finite step a float can hold
            start = _Point(point.z, self._momentum(point.z, inv_mass), point.u, point.g)
            trial = np.where(searching, step * np.where(last == 0, 1.0, 2.0 ** last), step)
            new = self._leapfrog(start, 0.5 * trial[..., None], trial[..., None] * inv_mass)
            delta = self._energy(new, 0.5 * inv_mass) - self._energy(start, 0.5 * inv_mass)
            direction = np.where(target < -delta, 1.0, -1.0).astype(step.dtype)  # the chains' float type throughout
            step = trial
            done = (last != 0) & (direction != last) | (step <= tiny) & (direction < 0) | (step >= huge)
            searching = searching & ~done
            last = np.where(searching, direction, last)
            if not searching.any():
                break
        return step

    def _window_schedule(self, warmup: int) -> list[tuple[int, int]]:
        """Stan's adaptation windows (NumPyro's ``build_adaptation_schedule``): (start, end) inclusive."""
        if warmup < 20:
            return [(0, warmup - 1)]
        start, end, first = 75, 50, 25
        if start + end + first > warmup:
            start, end = int(0.15 * warmup), int(0.1 * warmup)
            first = warmup - start - end
        windows, size, begin, last_start = [(0, start - 1)], first, start, warmup - end
        while begin < last_start:
            if 3 * size <= last_start - begin:
                nxt = 2 * size
            else:
                size = last_start - begin
                nxt = size
            windows.append((begin, begin + size - 1))
            begin, size = begin + size, nxt
        windows.append((last_start, warmup - 1))
        return windows

    def run(self, theta: torch.Tensor, warmup: int, num_draws: int, hook: Callable[[], None] | None = None) -> dict:
        """``warmup`` adaptation iterations then ``num_draws`` kept draws from the (C, n) starts ``theta``.

        Returns draws (C, num_draws, n), per draw ``diverging`` and ``accept_prob`` (C, num_draws) and
        ``num_steps`` (leapfrog steps, C, num_draws), and the adapted ``step_size`` (C,) and ``inverse_mass``
        (C, n)."""
        with np.errstate(over="ignore", invalid="ignore"):  # an inf or NaN energy is a divergence, counted as such
            return self._run(theta.detach().numpy().copy(), warmup, num_draws, hook)

    def _run(self, theta: Array, warmup: int, num_draws: int, hook) -> dict:
        self.dtype = theta.dtype
        u, g = self.value_and_grad(theta)
        point = _Point(theta, np.zeros_like(theta), u, g)
        inv_mass = np.ones_like(theta)
        step = self._reasonable_step(point, np.ones_like(u), inv_mass)
        adapt = _Adaptation(self, step, theta.shape, self._window_schedule(warmup) if warmup else [])
        keep = {"draws": [], "diverging": [], "accept_prob": [], "num_steps": []}
        for t in range(warmup + num_draws):
            point, accept, diverging, steps = self.transition(point, adapt.step, adapt.inv_mass)
            if t < warmup:
                adapt.update(t, warmup, accept, point)
            else:
                for name, value in zip(keep, (point.z, diverging, accept, steps), strict=True):
                    keep[name].append(value)
            if hook is not None:
                hook()
        out = {name: torch.from_numpy(np.stack(values, 1)) if values else None for name, values in keep.items()}
        return {**out, "step_size": torch.from_numpy(adapt.step), "inverse_mass": torch.from_numpy(adapt.inv_mass)}


class _Adaptation:
    """Per-chain dual averaging of log step size (t0=10, kappa=0.75, gamma=0.05, centered on log(10 eps)) and
    windowed Welford variances for the diagonal inverse mass matrix, regularized as Stan: (n var + 5e-3) / (n + 5)."""

    def __init__(self, nuts: VectorizedNUTS, step: Array, shape, windows):
        self.nuts, self.step, self.windows, self.window = nuts, step, windows, 0
        self.inv_mass = np.ones(shape, dtype=step.dtype)
        self._restart_step()
        self._restart_mass()

    def _restart_step(self):
        self.mu, self.x_avg, self.g_avg, self.t = np.log(10 * self.step), np.zeros_like(self.step), \
            np.zeros_like(self.step), 0

    def _restart_mass(self):
        self.count, self.mean, self.m2 = 0, np.zeros_like(self.inv_mass), np.zeros_like(self.inv_mass)

    def update(self, t: int, warmup: int, accept: Array, point: _Point) -> None:
        self.t += 1
        self.g_avg = (1 - 1 / (self.t + 10)) * self.g_avg + (self.nuts.target_accept - accept) / (self.t + 10)
        x = self.mu - math.sqrt(self.t) / 0.05 * self.g_avg
        w = self.t ** -0.75
        self.x_avg = (1 - w) * self.x_avg + w * x
        finfo = np.finfo(self.step.dtype)
        self.step = np.exp(self.x_avg if t == warmup - 1 else x).clip(finfo.tiny, finfo.max)
        middle = 0 < self.window < len(self.windows) - 1
        if middle:
            self.count += 1
            delta = point.z - self.mean
            self.mean = self.mean + delta / self.count
            self.m2 = self.m2 + delta * (point.z - self.mean)
        if t == self.windows[self.window][1]:
            if middle:
                n = self.count
                var = self.m2 / max(n - 1, 1)
                self.inv_mass = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
                self._restart_mass()
                self.step = self.nuts._reasonable_step(point, self.step, self.inv_mass)
                self._restart_step()
            self.window += 1


def sample_chains(value_and_grad: ValueAndGrad, flat: torch.Tensor, *, warmup: int, num_draws: int, seed: int,
                  target_accept: float = 0.8, max_tree_depth: int = 10,
                  hook: Callable[[], None] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """Run one chain per row of ``flat`` (C, n) on ``value_and_grad`` ((C, n) -> (U, grad U): a
    :class:`ppvae.infer.mcmc.potential.Potential`'s ``chain_value_and_grad`` or its compiled form); ``hook`` is
    called after every iteration (progress). Returns (draws (C, num_draws, n); per chain Pyro's diagnostics:
    divergent draw indices, mean acceptance statistic, adapted step size)."""
    sampler = VectorizedNUTS(value_and_grad, target_accept=target_accept,
                             max_tree_depth=max_tree_depth, seed=seed)
    out = sampler.run(flat.detach(), warmup, num_draws, hook)
    diagnostics = [{"divergences": out["diverging"][c].nonzero().flatten().tolist(),
                    "acceptance rate": float(out["accept_prob"][c].mean()),
                    "step size": float(out["step_size"][c]),
                    "leapfrog steps": int(out["num_steps"][c].sum())} for c in range(len(flat))]
    return out["draws"], diagnostics
