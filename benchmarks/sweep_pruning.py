"""Wall time and best result of a random search with and without median pruning.

Runs the ``breastmnist_random`` search twice with the same sampler seed (so both propose the same
configurations): once with ``hydra/sweeper/pruner=nop`` and once with ``median``. Full size
(20 trials of up to 30 epochs each, the defaults) takes hours on a CPU; shrink it with the flags:

    python benchmarks/sweep_pruning.py --n-trials 4 --max-epochs 3 --limit-train-batches 2

Time is the sum of the trials' own durations (Optuna's start and end stamps), so an interrupted
benchmark resumes where it stopped: rerun the same command (``--arm`` runs one search only). A
trial cut off mid-way is retried from scratch as a new trial; the cut-off attempt is not timed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from breastcls.analysis.sweep_summary import attempt_seconds

ROOT = Path(__file__).resolve().parents[1]


def run_search(name: str, pruner: str, args: argparse.Namespace) -> optuna.Study:
    """The search, resumed when its folder exists (finished trials are kept)."""
    sweep_dir = (args.out / name).resolve()
    overrides = [
        "hparams_search=breastmnist_random", f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.study_name={name}", f"hydra.sweeper.n_trials={args.n_trials}",
        f"hydra.sweeper.sampler.seed={args.seed}", f"hydra/sweeper/pruner={pruner}",
        f"trainer.max_epochs={args.max_epochs}", "extras.print_config=false",
        "~callbacks.rich_progress_bar",
    ]
    if pruner == "median":
        overrides += [f"hydra.sweeper.pruner.n_startup_trials={args.n_startup_trials}",
                      f"hydra.sweeper.pruner.n_warmup_steps={args.n_warmup_steps}"]
    if args.limit_train_batches:
        overrides.append(f"++trainer.limit_train_batches={args.limit_train_batches}")
    if args.limit_val_batches:
        overrides.append(f"++trainer.limit_val_batches={args.limit_val_batches}")
    if args.data_dir:
        overrides.append(f"paths.data_dir={args.data_dir}")
    cmd = [sys.executable, "-m", "breastcls.train", "-m", *overrides, *args.overrides]
    print("$", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL if args.quiet else None)
    print(f"{name}: this invocation took {time.perf_counter() - start:.1f} s", flush=True)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def trial_seconds(study: optuna.Study) -> float:
    """Summed durations of the finished trials (run one after another, so the search's time)."""
    return sum(filter(None, (attempt_seconds(t) for t in study.trials)))


def shared_trials(nop: optuna.Study, median: optuna.Study) -> list[int]:
    """Trial numbers that ran the same configuration in both searches and finished in both."""
    return [a.number for a, b in zip(nop.trials, median.trials, strict=False)
            if a.params == b.params and attempt_seconds(a) and attempt_seconds(b)]


def best_of(study: optuna.Study, numbers: list[int]) -> float:
    values = [study.trials[n].value for n in numbers
              if study.trials[n].state == TrialState.COMPLETE]
    return max(values, default=float("nan"))


def describe(study: optuna.Study) -> str:
    counts = {s.name.lower(): len(study.get_trials(states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "no completed trial"
    return f"{best}; {counts}; {epochs} epochs trained"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--limit-train-batches", type=float, default=None,
                        help="batches (int) or fraction of the train split per epoch")
    parser.add_argument("--limit-val-batches", type=float, default=None)
    parser.add_argument("--n-startup-trials", type=int, default=5,
                        help="median pruner: finished trials before pruning starts")
    parser.add_argument("--n-warmup-steps", type=int, default=5,
                        help="median pruner: epochs every trial runs")
    parser.add_argument("--seed", type=int, default=0, help="random sampler seed (both runs)")
    parser.add_argument("--data-dir", default=None, help="folder with breastmnist.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "multirun_sweeps" / "bench_pruning")
    parser.add_argument("--quiet", action="store_true", help="hide the training output")
    parser.add_argument("--arm", choices=("nop", "median"), default=None,
                        help="run (or resume) only this search")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both searches")
    args = parser.parse_args(argv)
    for attr in ("limit_train_batches", "limit_val_batches"):
        value = getattr(args, attr)
        if value is not None and value >= 1:
            setattr(args, attr, int(value))

    arms = {"nop": "bench_nop", "median": "bench_median"}
    studies = {arm: run_search(name, arm, args) for arm, name in arms.items()
               if args.arm in (None, arm)}
    print(f"\n{args.n_trials} trials, <= {args.max_epochs} epochs each (time: summed trials)")
    for arm, label in (("nop", "no pruning:    "), ("median", "median pruning:")):
        if arm in studies:
            print(f"{label} {trial_seconds(studies[arm]):8.1f} s  {describe(studies[arm])}")
    if len(studies) == 2:
        nop, median = studies["nop"], studies["median"]
        print(f"wall-time ratio (median / none): {trial_seconds(median) / trial_seconds(nop):.2f}")
        # Like for like: a search resumed under another seed, or trials cut off, make the arms
        # diverge; compare the trials that ran the same configuration in both.
        shared = shared_trials(nop, median)
        seconds = {name: sum(attempt_seconds(study.trials[n]) or 0.0 for n in shared)
                   for name, study in (("nop", nop), ("median", median))}
        if shared:
            print(f"same configuration in both ({len(shared)} trials: {shared}): none "
                  f"{seconds['nop']:.1f} s, best {best_of(nop, shared):.4f}; median "
                  f"{seconds['median']:.1f} s, best {best_of(median, shared):.4f}; ratio "
                  f"{seconds['median'] / seconds['nop']:.2f}")


if __name__ == "__main__":
    main()
