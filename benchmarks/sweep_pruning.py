"""Wall time and best result of a random search with and without median pruning.

Runs the ``breastmnist_random`` search twice with the same sampler seed (so both propose the same
configurations): once with ``hydra/sweeper/pruner=nop`` and once with ``median``. Full size
(20 trials of up to 30 epochs each, the defaults) takes hours on a CPU; shrink it with the flags:

    python benchmarks/sweep_pruning.py --n-trials 4 --max-epochs 3 --limit-train-batches 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


def run_search(name: str, pruner: str, args: argparse.Namespace) -> tuple[float, optuna.Study]:
    sweep_dir = (args.out / name).resolve()
    if sweep_dir.exists():  # the sweep would resume the finished study and time nothing
        sys.exit(f"{sweep_dir} exists: remove it or pass another --out")
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
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    return seconds, study


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
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both searches")
    args = parser.parse_args(argv)
    for attr in ("limit_train_batches", "limit_val_batches"):
        value = getattr(args, attr)
        if value is not None and value >= 1:
            setattr(args, attr, int(value))

    t_plain, plain = run_search("bench_nop", "nop", args)
    t_pruned, pruned = run_search("bench_median", "median", args)
    print(f"\n{args.n_trials} trials, <= {args.max_epochs} epochs each")
    print(f"no pruning:     {t_plain:8.1f} s  {describe(plain)}")
    print(f"median pruning: {t_pruned:8.1f} s  {describe(pruned)}")
    print(f"wall-time ratio (median / none): {t_pruned / t_plain:.2f}")


if __name__ == "__main__":
    main()
