"""Which of vidrec MiniRocket's streamable feature groups help, chosen on subject folds of the training subjects.

One model with every group (``minirocket_har(pooling="per_dilation", level_combinations=..., difference=True)``)
is fitted per fold; its thresholds are drawn in a fixed order (convolutions, level subsets, difference branch), so
the raw and level groups are exactly those of the smaller models. The features of the fold's training and
validation windows are computed once, and a ridge classifier (penalty by leave-one-out, as ``fit_closed_form``) is
fitted on each subset of groups: raw convolutions, + level, + first difference, + both; subsets with level features
are fitted once per ``--level-weights`` value (the model's ``level_weight``). The windows are those of
``tools/bench_har_baselines.py`` (same datamodule, same folds as ``tools/cross_validate.py``); the official test
subjects are never read. Prints validation accuracy and macro-F1 per subset and fold, and writes them as JSON.

Usage::

    python tools/screen_minirocket_features.py --data data/hapt.h5 --folds 3 --out runs/screen
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench_har_baselines import score, split_windows  # noqa: E402
from tools.cross_validate import training_subject_folds  # noqa: E402
from vidrec.models.minirocket import MiniRocket, PPVCrop, fit_ridge  # noqa: E402

SUBSETS = {"raw": ("raw",), "raw+level": ("raw", "level"), "raw+diff": ("raw", "diff"), "all": ("raw", "level", "diff")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a vidrec.timeseries/1 file with an official split")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--hop", type=int, default=64)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold shuffle (as tools/cross_validate.py)")
    parser.add_argument("--only-folds", type=int, nargs="*", default=None)
    parser.add_argument("--num-features", type=int, default=10_000)
    parser.add_argument("--threshold-windows", type=int, default=8)
    parser.add_argument("--level-combinations", type=int, default=84)
    parser.add_argument("--level-thresholds", type=int, default=12)
    parser.add_argument("--subsets", nargs="*", default=list(SUBSETS), choices=list(SUBSETS))
    parser.add_argument(
        "--level-weights",
        type=float,
        nargs="*",
        default=[1.0],
        help="level_weight values to screen for the subsets with level features (the model's ridge group weight)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/screen_minirocket")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, object]]] = {}
    runs = [(name, w) for name in args.subsets for w in (args.level_weights if "level" in SUBSETS[name] else [1.0])]
    for k, val_subjects in enumerate(training_subject_folds(args.data, args.folds, args.seed)):
        if args.only_folds is not None and k not in args.only_folds:
            continue
        train, val = split_windows(args.data, args.window, args.hop, val_subjects)
        start = time.perf_counter()
        model = MiniRocket(
            in_channels=train.x.shape[1],
            num_classes=int(train.y.max() + 1),
            window=args.window,
            num_features=args.num_features,
            pooling=PPVCrop.PER_DILATION,
            threshold_windows=args.threshold_windows,
            level_combinations=args.level_combinations,
            level_thresholds=args.level_thresholds,
            difference=True,
        )
        x, xv = torch.from_numpy(train.x), torch.from_numpy(val.x)
        target = torch.from_numpy(train.y)
        model.fit_closed_form(x, target)  # thresholds of every group (and a ridge fit on all of them)
        feats, feats_val = model.transform(x), model.transform(xv)
        n_conv, n_level = model.rocket.num_conv_features, model.rocket.num_level_features
        columns = {
            "raw": slice(0, n_conv),
            "level": slice(n_conv, n_conv + n_level),
            "diff": slice(n_conv + n_level, feats.shape[1]),
        }
        print(f"[screen] fold {k} ({val_subjects}): features {time.perf_counter() - start:.0f} s", flush=True)
        for name, level_weight in runs:
            t0 = time.perf_counter()
            groups = SUBSETS[name]
            pick = torch.cat([feats[:, columns[g]] for g in groups], dim=1)
            pick_val = torch.cat([feats_val[:, columns[g]] for g in groups], dim=1)
            weights = model.ridge_feature_weights(level_weight)  # as a model with this level_weight fits
            fit = fit_ridge(
                pick, target, model.num_classes, model.alphas, torch.cat([weights[columns[g]] for g in groups])
            )
            pred = (pick_val @ fit.weight.T + fit.bias).argmax(1).numpy()
            row = score(pred, val)
            row.update(seconds=time.perf_counter() - t0, alpha=fit.alpha, features=int(pick.shape[1]))
            key = name if "level" not in groups or len(args.level_weights) == 1 else f"{name} lw {level_weight:g}"
            results.setdefault(key, {})[f"fold{k}"] = row
            print(f"[screen] fold {k} {key}: acc {row['acc']:.4f} f1 {row['f1_macro']:.4f} alpha {fit.alpha:.3g}")
            (out / "screen.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"\n{'subset':<12} {'mean acc':>9} {'mean F1':>8}  folds")
    for name, per in results.items():
        accs = [float(per[f]["acc"]) for f in sorted(per)]  # type: ignore[arg-type]
        f1s = [float(per[f]["f1_macro"]) for f in sorted(per)]  # type: ignore[arg-type]
        if accs:
            cells = " ".join(f"{a:.4f}" for a in accs)
            print(f"{name:<12} {statistics.mean(accs):>9.4f} {statistics.mean(f1s):>8.4f}  {cells}")
    print(f"\nwrote {out / 'screen.json'}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
