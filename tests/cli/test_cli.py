"""The command line: fit, em, models, datasets; one-line errors with exit 2 and nothing written."""

import json
import subprocess
import sys

import pytest
from _helpers import cli, finish, kill_group, start, wait_until

from ppvae.cli.app import main

FIT_KEYS = {"model", "method", "num_data", "time_s", "loss_final", "log_likelihood", "log_likelihood_exact", "config"}


def test_fit_gmm_on_faithful_writes_metrics_and_plots(tmp_path, capsys):
    out = tmp_path / "gmm"
    rc = main(["fit", "gmm", "K=2", "--data", "faithful", "--guide", "auto_delta", "--steps", "300", "--lr", "0.05",
               "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert FIT_KEYS <= set(metrics)
    assert metrics["method"] == "svi:auto_delta" and metrics["num_data"] == 272
    assert metrics["log_likelihood_exact"] is True
    assert metrics["log_likelihood"] == pytest.approx(-1130.26, abs=6.0)  # within 0.5% of the EM maximum
    assert {"loss.png", "mixture.png", "params.pt", "config.json"} <= {p.name for p in out.iterdir()}
    assert "log-likelihood" in capsys.readouterr().out


def test_em_command(tmp_path):
    out = tmp_path / "em"
    assert main(["em", "gmm", "K=2", "--data", "faithful", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "em" and metrics["log_likelihood"] == pytest.approx(-1130.264, abs=1e-3)
    assert (out / "mixture.png").exists() and (out / "em_trace.png").exists()


def test_list_commands(capsys):
    assert main(["models"]) == 0
    assert "gmm" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "faithful" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "gmm", "K=0", "--data", "faithful"], "K: expected an integer >= 1; got 0"),
        (["fit", "gmm", "K=300", "--data", "faithful"], "K: expected at most N = 272"),
        (["fit", "gmm", "K=two", "--data", "faithful"], "K: model 'gmm' expects int"),
        (["fit", "gmm", "bogus=1", "--data", "faithful"], "got unknown bogus"),
        (["fit", "nope", "--data", "faithful"], "model: expected one of"),
        (["fit", "gmm", "--data", "no-such-data"], "data: expected a data set name"),
        (["fit", "gmm", "--data", "faithful", "--guide", "bad"], "guide: expected one of"),
        (["fit", "gmm", "--data", "faithful", "--elbo", "trace"], "cannot sum out"),
        (["fit", "gmm", "--data", "faithful", "--steps", "x"], "argument --steps: expected an integer >= 1; got 'x'"),
        (["fit", "gmm", "--data", "faithful", "--betas", "0.9"], "--betas: expected two numbers B1,B2"),
        (["em", "three_coin", "--data", "faithful"], "three_coin expects one 0/1 toss per row"),
        (["mcmc", "gmm", "--data", "faithful", "--compile"], "compile: the compiled potential is the vectorized"),
    ],
)
def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    rc = main(argv + ["--out", str(out), "--steps" if argv[0] == "fit" and "--steps" not in argv else "--seed", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary directory left behind


def test_nan_in_user_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\nnan,3\n")
    rc = main(["fit", "gmm", "K=1", "--data", str(bad), "--steps", "2", "--out", str(tmp_path / "r")])
    assert rc == 2 and "has missing values: model 'gmm' has no conditioning on observed subsets" in \
        capsys.readouterr().err  # NaN cells are missing values; gmm does not declare ppvae.ConditionsOnSubset
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_console_script_runs_as_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ppvae.cli", "fit", "gmm", "K=0", "--data", "faithful", "--out",
                           str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("ppvae: error: K:") and proc.stdout == ""


def test_evaluate_accepts_data_options_like_fit(tmp_path, capsys):
    # before: `evaluate --data faithful:standardize=true` exited 2 ("cannot load ...") and `fit` raised a TypeError
    out = tmp_path / "std"
    assert main(["fit", "gmm", "K=2", "--data", "faithful:standardize=true", "--guide", "auto_delta", "--steps", "50",
                 "--quiet", "--out", str(out)]) == 0
    fitted = json.loads((out / "metrics.json").read_text())["log_likelihood"]
    assert main(["evaluate", str(out), "--data", "faithful:standardize=true", "--num-particles", "4"]) == 0
    entry = json.loads((out / "metrics.json").read_text())["log_marginal"]
    # no continuous local latent: every importance weight is the exact enumerated sum, so the totals agree
    assert entry["total"] == pytest.approx(fitted, abs=1e-6)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", "faithful:standardize=false"]) == 2
    assert "fitted on standardized data" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["/dev/null/run", "/proc/xx/run"])
def test_out_that_cannot_be_created_is_one_line_exit_2(out, capsys):
    # before: FileExistsError / FileNotFoundError tracebacks with exit 1
    for argv in (["fit", "gmm", "K=2", "--data", "faithful", "--steps", "2"], ["em", "gmm", "--data", "faithful"]):
        assert main(argv + ["--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ppvae: error: --out:") and err.count("\n") == 1 and "Traceback" not in err


def _start_fit(tmp_path, *extra):
    """A checkpointed `ppvae fit` in its own process group (killed whole by the caller's finally); 20000 steps
    end by themselves if no signal ever came (--no-compile: the first checkpoint comes at once, not after compiling)."""
    argv = ["fit", "gmm", "K=2", "--data", "faithful", "--steps", "20000", "--checkpoint-every", "10", "--quiet",
            "--no-compile", "--out", "r", *extra]
    return argv, start(cli(*argv), cwd=tmp_path, stdout=subprocess.DEVNULL)


def _stop_after_checkpoint(proc, ckpt_dir, sig, known=()):
    """Send ``sig`` once a new checkpoint exists (the event), then wait for the process to end by itself."""
    import signal

    wait_until(lambda: set(p.name for p in ckpt_dir.glob("checkpoint-*.pt")) - set(known), proc, "a checkpoint")
    proc.send_signal(getattr(signal, sig))
    _, _, err = finish(proc)
    return proc.returncode, err.strip().splitlines()[-1]


@pytest.mark.slow
def test_sigterm_and_ctrl_c_clean_up_and_say_how_to_resume(tmp_path):
    # before: SIGTERM left .ppvae-XXXXXXXX beside --out, and Ctrl-C said "nothing was written" beside kept checkpoints
    ckpts = tmp_path / "r" / "checkpoints"
    argv, proc = _start_fit(tmp_path)
    try:
        rc, last = _stop_after_checkpoint(proc, ckpts, "SIGTERM")
    finally:
        kill_group(proc)
    assert rc == 143 and last.startswith("ppvae: terminated after")
    resume = "ppvae " + " ".join(argv) + " --resume r"
    assert f"kept {len(list(ckpts.iterdir()))} checkpoint(s) in {ckpts}" in last and last.endswith(resume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [".ppvae-run", "checkpoints"]
    # the resume command itself, interrupted by Ctrl-C: it names one --resume, not two
    known = [p.name for p in ckpts.iterdir()]
    _, proc = _start_fit(tmp_path, "--resume", "r")
    try:
        rc, last = _stop_after_checkpoint(proc, ckpts, "SIGINT", known)
    finally:
        kill_group(proc)
    assert rc == 130 and last.startswith("ppvae: interrupted after") and last.endswith(resume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_stale_temporary_directories_of_dead_runs_are_removed(tmp_path, capsys):
    import os

    from ppvae.runs.building import host as _host

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    names = {f".ppvae-{_host()}-{pid}-abc": False,  # dead here: removed
             f".ppvae-{_host()}-{os.getppid()}-abc": True,  # a live process: kept
             f".ppvae-otherhost-{pid}-abc": True,  # another host's (shared file system): kept
             ".ppvae-oldstyle1": True}  # no pid recorded: kept
    for name in names:
        (tmp_path / name).mkdir()
    assert main(["em", "gmm", "K=2", "--data", "faithful", "--restarts", "1", "--out", str(tmp_path / "em")]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"em"} | {n for n, keep in names.items() if keep}


def test_compare_skips_a_method_that_does_not_apply_with_its_reason(tmp_path, capsys):
    # before: `exact` on a model without a closed-form posterior failed (exit 1); issue 29: it is skipped, with
    # the reason in the table and no column of empty cells, and the command succeeds
    out = tmp_path / "cmp"
    assert main(["compare", "gmm", "K=2", "--data", "faithful", "--methods", "em,exact", "--quiet",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    table = (out / "comparison.md").read_text()
    assert "| em | ok |" in captured.out and "| exact | skipped |" in table
    assert "**exact skipped:** the model does not declare ExactPosterior (needs posterior_guide)" in table
    assert "| parameter | em |\n" in table and captured.err == ""


@pytest.mark.slow
def test_cavi_warning_is_one_clean_line(tmp_path, capsys):
    # before: "/.../ppvae/topics.py:279: ImportanceWarning: ..." followed by the source line that raised it
    pytest.importorskip("lda")
    assert main(["cavi", "lda", "topics=3", "--data", "reuters:split=train", "--max-iter", "1",
                 "--out", str(tmp_path / "cv")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith("ppvae: warning: ") for line in err)
    assert any("k-hat > 0.7" in line for line in err) and not any(".py:" in line for line in err)


def test_evaluate_names_both_errors(tmp_path, capsys):
    # before: "mean -1.9479 +- 0.0223" without saying which error that is
    out = tmp_path / "g"
    assert main(["fit", "gmm", "K=2", "--data", "faithful", "--steps", "5", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-particles", "3"]) == 0
    entry = json.loads((out / "metrics.json").read_text())["log_marginal"]
    first = capsys.readouterr().out.splitlines()[0]
    assert (f"(standard error over points {entry['stderr']:.4f}; Monte Carlo error {entry['mc_stderr']:.4f})"
            in first) and "+-" not in first


def test_help_shows_every_default(capsys):
    # before: `ppvae mcmc --help` said nothing of --samples 1000, --chains 4, ...
    import argparse

    from ppvae.cli.app import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name, parser in sub.choices.items():
        text = " ".join(parser.format_help().split())  # what `ppvae NAME --help` prints
        for action in parser._actions:
            if not action.option_strings or action.default is None or action.default in (False, argparse.SUPPRESS):
                continue
            shown = " ".join((action.help or "").split())
            assert f"(default: {action.default})" in text or "default" in shown.lower(), (name, action.dest)
            checked += 1
    assert checked >= 25  # every subcommand: fit, em, cavi, compare, mcmc, evaluate


def test_models_lists_hyperparameters_with_defaults(capsys):
    # before: only names and descriptions; gmm's K and covariance were found only from an error message
    import inspect

    from ppvae.model.base import get_model_class, list_models

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "K=2 (int), covariance=full (str), concentration=1.0 (float), reg_covar=1e-06 (float)" in out
    assert "no hyperparameters" in out.split("three_coin", 1)[1].splitlines()[1]
    for name in list_models():
        params = list(inspect.signature(get_model_class(name).__init__).parameters.values())[1:]
        block = out.split(f"\n{name} ", 1)[1] if not out.startswith(name) else out
        assert all(f"{p.name}={p.default} " in block.splitlines()[1] + " " for p in params), name


@pytest.mark.slow
def test_output_into_a_closed_pipe_is_quiet(tmp_path):
    # `ppvae models | head -1` used to end in a BrokenPipeError traceback
    proc = subprocess.run(["bash", "-c", f"'{sys.executable}' -m ppvae.cli models | true; "
                           "exit ${PIPESTATUS[0]}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""


def _subcommands() -> list[str]:
    import argparse

    from ppvae.cli.app import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


@pytest.mark.parametrize("argv", [["--help"], ["-h"]] + [[cmd, "--help"] for cmd in _subcommands()])
def test_help_exits_0_on_the_program_and_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr()
    assert out.out.startswith("usage: ppvae") and "Traceback" not in out.err


def test_version_and_no_arguments(capsys):
    import ppvae

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"ppvae {ppvae.__version__}"
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppvae: error: the following arguments are required: COMMAND")
    assert main(["fit", "gmm", "--data", "faithful"]) == 2  # a subcommand's usage error names it once
    assert capsys.readouterr().err.startswith("ppvae: error: fit: the following arguments are required: --out")


def test_threads_beyond_the_machine_is_one_line(tmp_path, capsys):
    from ppvae.cli.parser import machine_cores

    argv = ["em", "gmm", "K=2", "--data", "faithful", "--threads", "100000", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"ppvae: error: --threads: expected an integer <= {machine_cores()} (the cores this process may " \
                  "use); got 100000\n"
    assert not (tmp_path / "r").exists()


def test_unknown_fit_option_names_the_public_list_and_a_close_spelling():
    import torch

    import ppvae
    from ppvae.models import PPCA

    with pytest.raises(ppvae.PPVAEError, match=r"fit: unknown option 'step' \(did you mean 'steps'\?\); expected "
                       r"one of .*; see help\(ppvae.fit\)"):
        ppvae.fit(PPCA(latent_dim=1), torch.randn(10, 2), step=10)
