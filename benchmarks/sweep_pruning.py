"""Wall time and best result of a random search with and without median pruning.

Runs the ``breastmnist_random`` search twice on the same configurations: once with
``hydra/sweeper/pruner=nop`` and once with ``median``. The unpruned search samples them (random
sampler, ``--seed``); the pruned one is given the same list (Optuna's enqueued trials), so the two
arms match even when one was interrupted and resumed. Full size (20 trials of up to 30 epochs
each, the defaults) takes hours on a CPU; shrink it with the flags:

    python benchmarks/sweep_pruning.py --n-trials 4 --max-epochs 3 --limit-train-batches 2

``--replay`` trains nothing: it passes the unpruned search's learning curves through
``MedianPruner`` for every ``--n-startup-trials`` x ``--n-warmup-steps`` pair, to choose a setting
before paying for a pruned run. Training is seeded and deterministic on the CPU, so a pruned
trial's curve is the start of its unpruned one; a pruned trial is charged its epochs at the
unpruned trial's seconds per epoch. ``--save-curves FILE`` writes those curves to a CSV that
``--replay FILE`` reads, so a finished search can be replayed without its study.

Time is the sum of the trials' own durations (Optuna's start and end stamps), so an interrupted
benchmark resumes where it stopped: rerun the same command (``--arm`` runs one search only). A
trial cut off mid-way is retried from scratch as a new trial; the cut-off attempt is not timed.
``--retime 5 7`` runs unpruned trials 5 and 7 again, alone, when other work shared the CPU while
they ran: their learning curves must come out identical, and their new durations replace the old.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from breastcls.analysis.sweep_summary import attempt_seconds

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"nop": "bench_nop", "median": "bench_median"}
RETIME = "bench_nop_retime"
RETIMED_ATTR = "retimed_seconds"  # unpruned study: {trial number: duration of a clean re-run}
TARGET_RATIO, TARGET_GAP = 0.5, 0.01  # pruned time <= 0.5x, best value within 0.01


@dataclass(frozen=True)
class Curve:
    """One finished unpruned trial: its configuration, the monitored value after each epoch,
    its duration and its result (the best checkpoint's value)."""

    number: int
    params: dict
    values: dict[int, float]
    seconds: float
    value: float


@dataclass(frozen=True)
class Replay:
    seconds: float
    best: float
    pruned: dict[int, int]  # trial number: epochs it ran before the pruner stopped it


def storage_url(args: argparse.Namespace, name: str) -> str:
    return f"sqlite:///{(args.out / name / 'optuna.db').resolve()}"


def load(args: argparse.Namespace, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_url(args, name))


def enqueue_configurations(source: optuna.Study, url: str, name: str,
                           numbers: list[int] | None = None) -> int:
    """Queue ``source``'s configurations (those of trials ``numbers``, or all), in trial order,
    at the front of study ``name`` (created if new); configurations it already holds are
    skipped, so resuming is safe."""
    study = optuna.create_study(study_name=name, storage=url, direction=source.direction,
                                load_if_exists=True)
    before = len(study.trials)
    for trial in source.get_trials(deepcopy=False):
        if trial.state.is_finished() and trial.params and (numbers is None
                                                           or trial.number in numbers):
            study.enqueue_trial(trial.params, skip_if_exists=True)
    return len(study.trials) - before


def run_search(name: str, pruner: str, args: argparse.Namespace, n_trials: int,
               queue_from: optuna.Study | None = None) -> optuna.Study:
    """The search, resumed when its folder exists (finished trials are kept); ``queue_from``'s
    configurations run first."""
    url, sweep_dir = storage_url(args, name), (args.out / name).resolve()
    overrides = [
        "hparams_search=breastmnist_random", f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.study_name={name}", f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.sampler.seed={args.seed}", f"hydra/sweeper/pruner={pruner}",
        f"trainer.max_epochs={args.max_epochs}", "extras.print_config=false",
        "~callbacks.rich_progress_bar",
    ]
    if pruner == "median":
        overrides += [f"hydra.sweeper.pruner.n_startup_trials={args.n_startup_trials[0]}",
                      f"hydra.sweeper.pruner.n_warmup_steps={args.n_warmup_steps[0]}"]
    if queue_from is not None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        queued = enqueue_configurations(queue_from, url, name)
        print(f"{name}: {queued} configurations of {queue_from.study_name} queued", flush=True)
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
    return optuna.load_study(study_name=name, storage=url)


def run_arm(arm: str, args: argparse.Namespace) -> optuna.Study:
    """The unpruned search samples its configurations; the pruned one runs the same ones."""
    nop_db = args.out / ARMS["nop"] / "optuna.db"
    queue_from = load(args, ARMS["nop"]) if arm == "median" and nop_db.is_file() else None
    return run_search(ARMS[arm], arm, args, args.n_trials, queue_from)


def retime(args: argparse.Namespace, numbers: list[int]) -> dict[int, float]:
    """Run unpruned trials ``numbers`` again, alone, and record their durations in the
    unpruned study; refuses if a re-run's learning curve differs from the original's."""
    nop = load(args, ARMS["nop"])
    (args.out / RETIME).mkdir(parents=True, exist_ok=True)
    url = storage_url(args, RETIME)
    queued = enqueue_configurations(nop, url, RETIME, numbers)
    held = sum(t.state != TrialState.WAITING
               for t in optuna.load_study(study_name=RETIME, storage=url).trials)
    # Only the queued configurations: not the study's own first trial (enqueue_trials).
    args.overrides = [*args.overrides, "hydra.sweeper.enqueue_trials=[]"]
    rerun = run_search(RETIME, "nop", args, held + queued)
    seconds = {int(k): v for k, v in nop.user_attrs.get(RETIMED_ATTR, {}).items()}
    for number in numbers:
        original = nop.trials[number]
        again = next(t for t in rerun.get_trials(states=(TrialState.COMPLETE,))
                     if t.params == original.params)
        if again.intermediate_values != original.intermediate_values:
            raise SystemExit(f"trial {number}: the re-run's curve differs from the original's "
                             "(training is not deterministic here): not retimed")
        seconds[number] = attempt_seconds(again)
        print(f"trial {number}: {attempt_seconds(original):.1f} s, alone {seconds[number]:.1f} s")
    nop.set_user_attr(RETIMED_ATTR, {str(k): v for k, v in sorted(seconds.items())})
    return seconds


def seconds_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> float | None:
    """The trial's duration, or that of its clean re-run (``--retime``)."""
    retimed = study.user_attrs.get(RETIMED_ATTR, {})
    return retimed.get(str(trial.number)) or attempt_seconds(trial)


def trial_seconds(study: optuna.Study) -> float:
    """Summed durations of the finished trials (run one after another, so the search's time)."""
    return sum(filter(None, (seconds_of(study, t) for t in study.trials)))


def shared_trials(nop: optuna.Study, median: optuna.Study) -> list[int]:
    """Trial numbers that ran the same configuration in both searches and finished in both."""
    return [a.number for a, b in zip(nop.trials, median.trials, strict=False)
            if a.params == b.params and attempt_seconds(a) and attempt_seconds(b)]


def best_of(study: optuna.Study, numbers: list[int]) -> float:
    values = [study.trials[n].value for n in numbers
              if study.trials[n].state == TrialState.COMPLETE]
    return max(values, default=float("nan"))


def study_curves(study: optuna.Study) -> list[Curve]:
    """The completed trials with reported epochs, each configuration once."""
    curves: list[Curve] = []
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        seconds = seconds_of(study, trial)
        if trial.intermediate_values and seconds and all(c.params != trial.params
                                                         for c in curves):
            curves.append(Curve(trial.number, trial.params, dict(trial.intermediate_values),
                                seconds, trial.value))
    return curves


def write_curves(curves: list[Curve], path: Path) -> None:
    """One row per trial and epoch (long format), the trial's columns repeated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "epoch", "epoch_value", "trial_value", "trial_seconds",
                         "params"])
        for c in curves:
            for epoch, value in sorted(c.values.items()):
                writer.writerow([c.number, epoch, f"{value:.6f}", f"{c.value:.6f}",
                                 f"{c.seconds:.1f}", json.dumps(c.params, sort_keys=True)])


def read_curves(path: Path) -> list[Curve]:
    rows: dict[int, list[dict[str, str]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(int(row["trial"]), []).append(row)
    return [Curve(number, json.loads(r[0]["params"]),
                  {int(x["epoch"]): float(x["epoch_value"]) for x in r},
                  float(r[0]["trial_seconds"]), float(r[0]["trial_value"]))
            for number, r in sorted(rows.items())]


def replay(curves: list[Curve], pruner: optuna.pruners.BasePruner,
           direction: str = "maximize") -> Replay:
    """Seconds, best value and pruned trials had ``pruner`` judged these unpruned trials, in
    their order."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    seconds, pruned = 0.0, {}
    for curve in curves:
        trial, per_epoch = study.ask(), curve.seconds / len(curve.values)
        for epochs, (step, value) in enumerate(sorted(curve.values.items()), 1):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                seconds += per_epoch * epochs
                pruned[curve.number] = epochs
                break
        else:
            study.tell(trial, curve.value)
            seconds += curve.seconds
    return Replay(seconds, study.best_value, pruned)


def replay_table(curves: list[Curve], startups: list[int], warmups: list[int]) -> Table:
    full = replay(curves, optuna.pruners.NopPruner())
    table = Table(title=f"MedianPruner replayed on {len(curves)} unpruned trials "
                        f"({full.seconds:.0f} s, best {full.best:.4f})")
    for column in ("n_startup_trials", "n_warmup_steps", "seconds", "ratio", "best",
                   "target", "pruned {trial: epochs}"):
        table.add_column(column, justify="left" if column.startswith("pruned") else "right")
    for startup in startups:
        for warmup in warmups:
            pruner = optuna.pruners.MedianPruner(n_startup_trials=startup,
                                                 n_warmup_steps=warmup)
            r = replay(curves, pruner)
            ratio = r.seconds / full.seconds
            met = ratio <= TARGET_RATIO and r.best >= full.best - TARGET_GAP
            table.add_row(str(startup), str(warmup), f"{r.seconds:.0f}", f"{ratio:.2f}",
                          f"{r.best:.4f}", "met" if met else "", str(r.pruned))
    return table


def describe(study: optuna.Study) -> str:
    counts = {s.name.lower(): len(study.get_trials(states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "no completed trial"
    return f"{best}; {counts}; {epochs} epochs trained"


def compare(nop: optuna.Study, median: optuna.Study) -> None:
    ratio = trial_seconds(median) / trial_seconds(nop)
    gap = nop.best_value - median.best_value
    met = ratio <= TARGET_RATIO and gap <= TARGET_GAP
    print(f"wall-time ratio (median / none): {ratio:.2f}; best value lower by {gap:.4f}; "
          f"target (<= {TARGET_RATIO}x, within {TARGET_GAP}): {'met' if met else 'not met'}")
    # Like for like: a search resumed under another seed, or trials cut off, make the arms
    # diverge; compare the trials that ran the same configuration in both.
    shared = shared_trials(nop, median)
    if shared and len(shared) < len(nop.trials):
        seconds = {name: sum(seconds_of(study, study.trials[n]) or 0.0 for n in shared)
                   for name, study in (("nop", nop), ("median", median))}
        print(f"same configuration in both ({len(shared)} trials: {shared}): none "
              f"{seconds['nop']:.1f} s, best {best_of(nop, shared):.4f}; median "
              f"{seconds['median']:.1f} s, best {best_of(median, shared):.4f}; ratio "
              f"{seconds['median'] / seconds['nop']:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--limit-train-batches", type=float, default=None,
                        help="batches (int) or fraction of the train split per epoch")
    parser.add_argument("--limit-val-batches", type=float, default=None)
    parser.add_argument("--n-startup-trials", type=int, nargs="+", default=[5],
                        help="median pruner: finished trials before pruning starts "
                             "(several values with --replay)")
    parser.add_argument("--n-warmup-steps", type=int, nargs="+", default=[5],
                        help="median pruner: epochs every trial runs (several with --replay)")
    parser.add_argument("--seed", type=int, default=0, help="random sampler seed")
    parser.add_argument("--data-dir", default=None, help="folder with breastmnist.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "multirun_sweeps" / "bench_pruning")
    parser.add_argument("--quiet", action="store_true", help="hide the training output")
    parser.add_argument("--arm", choices=tuple(ARMS), default=None,
                        help="run (or resume) only this search")
    parser.add_argument("--replay", nargs="?", const="study", default=None, metavar="CSV",
                        help="train nothing: replay the unpruned search (its study, or curves "
                             "saved with --save-curves) through MedianPruner")
    parser.add_argument("--save-curves", type=Path, default=None, metavar="CSV",
                        help="write the unpruned search's learning curves to this CSV")
    parser.add_argument("--retime", type=int, nargs="+", default=None, metavar="TRIAL",
                        help="run these unpruned trials again, alone, and use their durations")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both searches")
    args = parser.parse_args(argv)
    for attr in ("limit_train_batches", "limit_val_batches"):
        value = getattr(args, attr)
        if value is not None and value >= 1:
            setattr(args, attr, int(value))

    if args.replay or args.save_curves:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if args.replay and args.replay != "study":
            curves = read_curves(Path(args.replay))
        else:
            curves = study_curves(load(args, ARMS["nop"]))
        if args.save_curves:
            write_curves(curves, args.save_curves)
            print(f"{len(curves)} learning curves written to {args.save_curves}")
        if args.replay:
            Console(width=200).print(replay_table(curves, args.n_startup_trials,
                                                  args.n_warmup_steps))
        return
    if len(args.n_startup_trials) > 1 or len(args.n_warmup_steps) > 1:
        parser.error("several --n-startup-trials / --n-warmup-steps only go with --replay")

    if args.retime:
        retime(args, args.retime)
        return
    studies = {arm: run_arm(arm, args) for arm in ARMS if args.arm in (None, arm)}
    print(f"\n{args.n_trials} trials, <= {args.max_epochs} epochs each (time: summed trials)")
    for arm, label in (("nop", "no pruning:    "), ("median", "median pruning:")):
        if arm in studies:
            print(f"{label} {trial_seconds(studies[arm]):8.1f} s  {describe(studies[arm])}")
    if len(studies) == 2:
        compare(studies["nop"], studies["median"])


if __name__ == "__main__":
    main()
