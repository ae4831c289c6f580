"""Wall time and best result of a random search with and without median pruning.

Runs the ``breastmnist_random`` search twice with the same sampler seed (so both propose the same
configurations): once with ``hydra/sweeper/pruner=nop`` and once with ``median``. Full size
(20 trials of up to 30 epochs each, the defaults) takes hours on a CPU; shrink it with the flags:

    python benchmarks/sweep_pruning.py --n-trials 4 --max-epochs 3 --limit-train-batches 2

``--replay-warmup 5 10`` trains nothing: it passes the finished unpruned search's learning curves
through ``MedianPruner`` with each warmup, to choose a setting before paying for a pruned run.
Training is seeded and deterministic on the CPU, so a pruned trial's curve is the start of its
unpruned one; a pruned trial is charged its epochs at the unpruned trial's seconds per epoch.

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


def replay(nop: optuna.Study, pruner: optuna.pruners.BasePruner) -> tuple[float, float, dict]:
    """Seconds, best value and ``{trial: epochs run}`` of the pruned trials, had ``pruner``
    judged the unpruned search's trials (a configuration met before is skipped)."""
    study = optuna.create_study(direction=nop.direction, pruner=pruner)
    seconds, pruned, seen = 0.0, {}, []
    for frozen in nop.get_trials(states=(TrialState.COMPLETE,)):
        if frozen.params in seen or not frozen.intermediate_values:
            continue
        seen.append(frozen.params)
        trial, per_epoch = study.ask(), attempt_seconds(frozen) / len(frozen.intermediate_values)
        for epochs, (step, value) in enumerate(sorted(frozen.intermediate_values.items()), 1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                seconds += per_epoch * epochs
                pruned[frozen.number] = epochs
                break
        else:
            study.tell(trial, frozen.value)
            seconds += attempt_seconds(frozen)
    return seconds, study.best_value, pruned


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
    parser.add_argument("--replay-warmup", type=int, nargs="+", default=None,
                        help="train nothing: replay the unpruned search through MedianPruner "
                             "with these n_warmup_steps")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both searches")
    args = parser.parse_args(argv)
    for attr in ("limit_train_batches", "limit_val_batches"):
        value = getattr(args, attr)
        if value is not None and value >= 1:
            setattr(args, attr, int(value))

    arms = {"nop": "bench_nop", "median": "bench_median"}
    if args.replay_warmup:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        db = args.out.resolve() / arms["nop"] / "optuna.db"
        nop = optuna.load_study(study_name=arms["nop"], storage=f"sqlite:///{db}")
        full = replay(nop, optuna.pruners.NopPruner())[0]
        print(f"unpruned (distinct configurations): {full:.1f} s")
        for warmup in args.replay_warmup:
            pruner = optuna.pruners.MedianPruner(n_startup_trials=args.n_startup_trials,
                                                 n_warmup_steps=warmup)
            seconds, best, pruned = replay(nop, pruner)
            print(f"median, n_warmup_steps={warmup}: {seconds:.1f} s (ratio {seconds / full:.2f}),"
                  f" best {best:.4f}; pruned {{trial: epochs}} {pruned}")
        return
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
