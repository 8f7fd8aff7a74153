"""Subject-wise k-fold cross-validation over the training subjects of a time-series config (model selection).

The test subjects are never read: each fold trains ``vidrec fit`` on the other training subjects and validates on
its own fold of subjects (``--data.init_args.split.val_subjects``), so settings such as the context length are chosen on
validation folds before the one test run. Variants are compared on the same folds, run fold by fold, so a partial
run already compares them. Prints a table of validation accuracy and macro-F1 per variant and fold (mean and
standard deviation) and writes it as JSON.

Usage::

    python tools/cross_validate.py --config configs/har/hapt_resnet1d_context.yaml --folds 3 --out runs/cv \\
        --variant "context 0: --data.init_args.windows.context 0 --data.init_args.windows.context_truncation 0" \\
        --variant "context 640:" -- --trainer.max_epochs 12 --trainer.check_val_every_n_epoch 12
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.timeseries.schema import read_recordings  # noqa: E402


def has_official_split(path: str) -> bool:
    """Whether every recording of a schema file carries an official split ("train" / "test")."""
    _, recordings = read_recordings(path)
    return all(r.split is not None for r in recordings)


def training_subject_folds(path: str, folds: int, seed: int) -> list[list[int]]:
    """The training subjects of a schema file, shuffled with ``seed`` and dealt into ``folds`` folds.

    Training subjects: those of the official "train" split; every subject when the file has no official split.
    """
    _, recordings = read_recordings(path)
    official = all(r.split is not None for r in recordings)
    subjects = sorted({r.subject for r in recordings if r.split == "train" or not official})
    if len(subjects) < folds:
        kind = "training subjects" if official else "subjects (the file has no official split)"
        raise ValueError(f"{path}: {len(subjects)} {kind} cannot make {folds} folds")
    order = np.random.default_rng(seed).permutation(subjects)
    return [sorted(int(s) for s in part) for part in np.array_split(order, folds)]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name: --key value ..."`` -> (name, overrides)."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"--variant {text!r}: expected 'NAME: --key value ...'")
    return name.strip(), shlex.split(rest)


def run_fold(
    config: str, overrides: list[str], val_subjects: list[int], out: Path, official: bool = True
) -> dict[str, float]:
    """Fit one fold in this process; returns the last validation metrics.

    ``official``: the file has an official split (the fold's training subjects are the other official training
    subjects); else the others of all subjects (split_mode SUBJECTS without test subjects).
    """
    from vidrec.cli import _lightning_main

    args = ["fit", "--config", config, "--data.init_args.split.mode", "OFFICIAL" if official else "SUBJECTS"]
    args += ["--data.init_args.split.val_subjects", json.dumps(val_subjects)]
    args += ["--data.init_args.split.val_fraction", "0"]
    # the whole logger list: a `--trainer.logger.init_args...` override would reach only its last entry, and the
    # checkpoints follow the first logger's folder
    loggers = [
        {"class_path": f"lightning.pytorch.loggers.{kind}", "init_args": {"save_dir": str(out), "name": "fold"}}
        for kind in ("TensorBoardLogger", "CSVLogger")
    ]
    args += ["--trainer.logger", json.dumps(loggers), "--trainer.enable_progress_bar", "false", *overrides]
    cli = _lightning_main(args)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    if "val/acc" not in metrics:
        raise RuntimeError(f"fold with validation subjects {val_subjects} logged no val/acc (did validation run?)")
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="LightningCLI config (time-series datamodule)")
    parser.add_argument("--data", default=None, help="schema file (default: the config's data.init_args.path)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the subject shuffle")
    parser.add_argument("--only-folds", type=int, nargs="*", default=None, help="run these fold indices only")
    parser.add_argument("--variant", action="append", default=None, help="'NAME: --key value ...' (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out", default="runs/cross_validation")
    parser.add_argument("overrides", nargs="*", help="after --: overrides for every variant")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.data or (yaml.safe_load(Path(args.config).read_text()) or {}).get("data", {}).get("init_args", {}).get(
        "path"
    )
    if not path:
        parser.error(f"{args.config} has no key data.init_args.path (expected the schema file); pass --data PATH")
    folds = training_subject_folds(path, args.folds, args.seed)
    official = has_official_split(path)
    variants = [parse_variant(v) for v in args.variant or ["config:"]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = list(args.overrides) + (["--data.init_args.path", args.data] if args.data else [])
    results: dict[str, dict[int, dict[str, float]]] = {name: {} for name, _ in variants}
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI parses the fold's args, not this script's
    try:
        for k, val_subjects in enumerate(folds):
            if args.only_folds is not None and k not in args.only_folds:
                continue
            for name, overrides in variants:
                start = time.perf_counter()
                slug = "".join(c if c.isalnum() else "_" for c in name)
                metrics = run_fold(args.config, common + overrides, val_subjects, out / f"fold{k}_{slug}", official)
                metrics["seconds"] = time.perf_counter() - start
                results[name][k] = metrics
                print(
                    f"[cv] fold {k} (val subjects {val_subjects}) {name}: acc {metrics['val/acc']:.4f}"
                    f" f1 {metrics.get('val/f1_macro', float('nan')):.4f} ({metrics['seconds']:.0f} s)",
                    flush=True,
                )
                (out / "cross_validation.json").write_text(
                    json.dumps({"config": args.config, "folds": folds, "results": results}, indent=2)
                )
    finally:
        sys.argv = argv
    print(f"\n{'variant':<24} " + " ".join(f"fold {k:<5}" for k in range(len(folds))) + "   mean acc (sd)   mean F1")
    for name, per in results.items():
        accs = [per[k]["val/acc"] for k in sorted(per)]
        f1s = [per[k].get("val/f1_macro", float("nan")) for k in sorted(per)]
        if not accs:
            print(f"{name:<24} -")
            continue
        cells = " ".join(f"{per[k]['val/acc']:.4f}    " if k in per else "   -      " for k in range(len(folds)))
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{name:<24} {cells}  {statistics.mean(accs):.4f} ({sd:.4f})   {statistics.mean(f1s):.4f}")
    print(f"\nwrote {out / 'cross_validation.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
