"""The ``ppvae`` commands of the annealing layer: the AIS summary of ``evaluate --method ais``, ``bdmc``
(Grosse et al. 2015 bounds on simulated points) and ``evidence`` (log p(X) by every estimator a directory
allows). Kept beside ``ppvae.cli`` so each command module stays parse, call, print."""

from __future__ import annotations

import os
import sys

from ppvae._util.validation import PPVAEError
from ppvae._util.warning_format import warning_line
from ppvae.cli.ais import bdmc_run
from ppvae.cli.evidence_run import evidence_run
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.infer.svi.fit import Fit
from ppvae.results.kinds import load
from ppvae.runs import directory as runs


def print_ais(args, entry) -> int:
    """Print `ppvae evaluate --method ais`'s summary beside the importance sampler's."""
    s, ref = entry["settings"], entry["is"]
    se = entry["stderr"] if entry["stderr"] is not None else float("nan")
    print(f"log p(x) by AIS: mean {entry['mean']:.4f} +- {se:.4f} over {entry['num_points']} points "
          f"(T={s['num_steps']}, C={s['num_chains']}, L={s['num_leapfrog']}, {s['schedule']} schedule, "
          f"{entry['proposal']} proposal); "
          f"Monte Carlo s.e. {entry['mc_stderr']:.4f}; HMC acceptance {entry['accept_rate_mean']:.2f}")
    khat = "n/a (C < 25 chains)" if entry["khat_max"] is None else f"{entry['khat_max']:.3f}"
    print(f"chain weights: ESS mean {entry['ess_mean']:.1f} of {s['num_chains']}; k-hat max {khat}")
    ik = "n/a" if ref["khat_max"] is None else f"{ref['khat_max']:.3f}"
    print(f"IS at K={ref['num_particles']}: mean {ref['mean']:.4f}, k-hat max {ik}, {ref['num_khat_over_0_7']} "
          f"points with k-hat > 0.7; AIS - IS {entry['ais_minus_is_mean']:+.4f} nats on average, AIS higher on "
          f"{entry['ais_above_is']} of {entry['num_points']}")
    for warning in entry["warnings"]:
        print(warning_line(warning), file=sys.stderr)
    print(f"wrote {os.path.join(args.run_dir, 'metrics.json')}, log_marginal.png and ais_vs_is.png")
    return 0


def cmd_bdmc(args) -> int:
    """BDMC bounds of log p(x) on points simulated from a run, for each T in --steps."""
    if not os.path.isdir(args.run_dir):
        raise PPVAEError(f"run_dir: expected a run directory written by `ppvae fit`; got {args.run_dir}")
    try:
        steps = [int(t) for t in args.steps.split(",")]
    except ValueError:
        raise PPVAEError(f"--steps: expected comma-separated integers, e.g. 50,100,200; got '{args.steps}'") from None
    result, _ = bdmc_run(args.run_dir, args.data, seed=args.seed, num_points=args.points, num_steps=steps,
                         num_chains=args.chains, num_leapfrog=args.num_leapfrog, proposal=args.proposal,
                         schedule=args.schedule, chunk_size=args.chunk_size, progress=False if args.quiet else None)
    print(f"BDMC on {result.lower.shape[-1]} points simulated from the run, C={result.num_chains}, "
          f"{result.proposal} proposal: mean bounds of log p(x)")
    print(result.table())
    print(f"wrote {os.path.join(args.run_dir, 'metrics.json')} and bdmc.png")
    return 0


def cmd_evidence(args) -> int:
    """Every log p(X) estimate a run or MCMC directory allows, with standard errors and their agreement."""
    for flag, value, what in (("--chains", args.chains, "AIS chains"),
                              ("--num-particles", args.num_particles, "importance samples")):
        if value < 2:  # one draw has no spread: its standard error would print as 0 and every pair "agree"
            raise PPVAEError(f"{flag}: expected at least 2 {what} (the standard error needs two); got {value}")
    kind = runs.run_kind(args.run_dir) if os.path.isfile(os.path.join(args.run_dir, runs.CONFIG)) else None
    if not isinstance(load(args.run_dir) if kind else None, (Fit, MCMCResult)):  # say so of run_dir itself
        held = f"holds a run of kind '{kind}'" if kind else "is not a run directory (no config.json)"
        raise PPVAEError(f"run_dir: expected a directory written by `ppvae fit` or `ppvae mcmc`; {args.run_dir} {held}")
    entry = evidence_run(args.run_dir, args.data, mcmc_dir=args.mcmc, standardize=args.standardize,
                         num_particles=args.num_particles, num_steps=args.steps, num_chains=args.chains, seed=args.seed,
                         progress=False if args.quiet else None)
    print(f"log p(X) on {entry['data']} ({entry['num_data']} points):")
    for e in entry["estimates"]:
        if e["value"] is None:
            print(f"  {e['method']:7s} n/a: {e['skipped']}")
            continue
        extra = {"is": f"S={e['num_particles']}", "bridge": f"N1=N2={e['info'].get('num_posterior')}",
                 "ais": f"T={e['info'].get('num_steps')}, C={e['info'].get('num_chains')}"}[e["method"]]
        print(f"  {e['method']:7s} {e['value']:.4f} +- {e['stderr']:.4f}  ({extra}; ESS {e['ess']:.1f})")
    if entry["agree"] is None:
        print("  fewer than two estimates: nothing to compare")
    else:
        worst = max(entry["pairs"], key=lambda q: q["z"])
        verdict = "agree" if entry["agree"] else "DISAGREE"
        print(f"  the estimates {verdict} within {entry['threshold_z']:g} standard errors (largest: "
              f"{' vs '.join(worst['methods'])}, z = {worst['z']:.2f})")
    print(f"wrote the evidence object to {os.path.join(args.run_dir, 'metrics.json')}")
    return 0
