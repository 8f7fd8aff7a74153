"""Peers on exactly vidrec's windows: MiniRocket, MultiRocket, a random forest, and vidrec's models, side by side.

The windows come from ``HDF5WindowDataModule`` (same windowing, label policy and subject split as a vidrec config),
so every method sees the same training and evaluation windows. Splits: the file's official split (train -> test)
and subject-wise k-fold over the training subjects (the folds of ``tools/cross_validate.py``: same seed, same
subjects; the test subjects are never read there). Reports accuracy, macro-F1, per-subject accuracy on the official
test split and fit + predict time, and writes the table as JSON.

Peers (the ``[bench]`` extra: ``pip install -e .[bench]``; aeon with ``--no-deps`` plus numba and scikit-learn):

* ``minirocket``: aeon's MiniRocket (10,000 features, ``random_state=0``) -> ``StandardScaler(with_mean=False)`` ->
  ``RidgeClassifierCV(alphas=logspace(-3, 3, 10))`` (aeon's own MiniRocketClassifier pipeline); raw windows.
* ``multirocket``: the same with aeon's MultiRocket (default 6,250 kernels, 4 pooling operators).
* ``rf``: scikit-learn's random forest (500 trees) on per-channel window statistics.
* ``vidrec_minirocket``: vidrec's streamable MiniRocket (``vidrec.models.minirocket``), fitted in closed form, on the
  same windows with ``--context`` samples of edge-filled left context (default 120 = 8 x the largest dilation);
  ``vidrec_minirocket_norm``: the same on per-channel standardised windows.
* ``vidrec_minirocket_pd``: ``minirocket_har(pooling="per_dilation")`` on the window alone (no context): dilation d
  pools its own ``window - 8 d`` valid outputs (MiniRocket's unpadded features); streams exactly.
  ``vidrec_minirocket_pd8``: the same with each threshold a quantile over 8 random training windows, not 1.
  ``vidrec_minirocket_pd8_lvl``: plus 84 x 12 level features (channel-subset sums against thresholds: the kernels
  sum to zero and cannot see a channel's level); ``..._diff``: plus a MiniRocket of another seed on the first
  difference (MultiRocket's second representation); ``..._lvl_diff``: both. All stream exactly
  (``minirocket_har(level_combinations=..., difference=...)``). ``--num-features`` sets their size (screening).
* ``--vidrec-config CONFIG``: a vidrec training config run through the CLI on the same folds (``vidrec fit``; the
  official split also runs ``vidrec test``); its windows are the config's own (check that they match).

Usage::

    python tools/bench_har_baselines.py --data data/hapt.h5 --folds 3 --out runs/bench_har
    python tools/bench_har_baselines.py --uea GunPoint --peers minirocket rf vidrec_minirocket
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import util
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.timeseries import HDF5WindowDataModule  # noqa: E402
from datamodules.timeseries.converters.uea import basicmotions_paths, convert_uea  # noqa: E402
from datamodules.timeseries.dataset import ContextPadding  # noqa: E402
from datamodules.timeseries.settings import SplitMode, SplitSettings, WindowSettings  # noqa: E402
from tools.cross_validate import training_subject_folds  # noqa: E402

UEA_SETS = ("BasicMotions", "GunPoint", "PickupGestureWiimoteZ")


@dataclass
class Windows:
    """The windows of one split as arrays: inputs (N, C, L) float32 (not normalised), targets (N,), subjects (N,)."""

    x: np.ndarray
    y: np.ndarray
    subjects: np.ndarray


def split_windows(
    path: str, window: int, hop: int, val_subjects: list[int] | None, context: int = 0
) -> tuple[Windows, Windows]:
    """(train, evaluation) windows: the official split, or training subjects minus ``val_subjects`` vs those."""
    padding = ContextPadding.EDGE if context else ContextPadding.DROP
    dm = HDF5WindowDataModule(
        path,
        windows=WindowSettings(window=window, hop=hop, eval_hop=hop, context=context, context_padding=padding),
        split=SplitSettings(mode=SplitMode.OFFICIAL, val_subjects=val_subjects, val_fraction=0.0),
        normalize=False,
    )
    dm.setup("fit")
    subject_of = {g: int(v["subject"]) for g, v in dm.group_info().items()}

    def take(name: str) -> Windows:
        ds = dm.datasets[name]
        x = ds.gather(np.arange(len(ds)))
        return Windows(x, ds.table.targets.copy(), np.array([subject_of[int(g)] for g in ds.table.groups]))

    return take("train"), take("val" if val_subjects else "test")


# ------------------------------------------------------------------------------------------------------ peers
def _ridge_cv() -> object:
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(with_mean=False), RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)))


def _rocket(kind: str) -> Callable[[Windows, Windows], np.ndarray]:
    def run(train: Windows, test: Windows) -> np.ndarray:
        from aeon.transformations.collection.convolution_based import MiniRocket, MultiRocket

        transform = MiniRocket(n_kernels=10_000, random_state=0) if kind == "mini" else MultiRocket(random_state=0)
        features = transform.fit_transform(train.x.astype(np.float32))
        clf = _ridge_cv()
        clf.fit(features, train.y)  # type: ignore[attr-defined]
        return clf.predict(transform.transform(test.x.astype(np.float32)))  # type: ignore[attr-defined,no-any-return]

    return run


def window_statistics(x: np.ndarray) -> np.ndarray:
    """Per channel (and per triplet magnitude for 6 channels): mean, std, min, max, percentiles, mean |diff|."""
    chans = [x]
    if x.shape[1] == 6:
        chans.append(np.linalg.norm(x[:, :3], axis=1, keepdims=True))
        chans.append(np.linalg.norm(x[:, 3:], axis=1, keepdims=True))
    z = np.concatenate(chans, axis=1)  # (N, C', L)
    q = np.percentile(z, [10, 25, 50, 75, 90], axis=2).transpose(1, 2, 0).reshape(len(z), -1)
    stats = [z.mean(2), z.std(2), z.min(2), z.max(2), np.abs(np.diff(z, axis=2)).mean(2), q]
    if x.shape[1] >= 3:
        stats.append(np.stack([np.corrcoef(w[:3])[np.triu_indices(3, 1)] for w in np.nan_to_num(x)]))
    return np.nan_to_num(np.concatenate(stats, axis=1))


def _forest(train: Windows, test: Windows) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=500, random_state=0, n_jobs=1)
    clf.fit(window_statistics(train.x), train.y)
    return clf.predict(window_statistics(test.x))  # type: ignore[no-any-return]


def _vidrec_minirocket(
    context: int,
    normalize: bool = False,
    pooling: str = "common",
    threshold_windows: int = 1,
    num_features: int = 10_000,
    **options: object,
) -> Callable[[Windows, Windows], np.ndarray]:
    """vidrec's MiniRocket fitted in closed form; ``options``: more ``MiniRocket`` arguments (level, difference)."""

    def run(train: Windows, test: Windows) -> np.ndarray:
        from vidrec.models.minirocket import MiniRocket, PPVCrop

        window = train.x.shape[2] - context
        k = int(max(train.y.max(), test.y.max()) + 1)
        model = MiniRocket(
            in_channels=train.x.shape[1],
            num_classes=k,
            window=window,
            pooling=PPVCrop(pooling),
            threshold_windows=threshold_windows,
            num_features=num_features,
            **options,  # type: ignore[arg-type]
        )
        x, xt = torch.from_numpy(train.x), torch.from_numpy(test.x)
        if normalize:  # per-channel statistics of the training windows
            mean, std = x.mean(dim=(0, 2), keepdim=True), x.std(dim=(0, 2), keepdim=True)
            x, xt = (x - mean) / std, (xt - mean) / std
        model.fit_closed_form(x, torch.from_numpy(train.y))
        model.eval()
        with torch.no_grad():
            return torch.cat([model(xt[i : i + 256]) for i in range(0, len(xt), 256)]).argmax(1).numpy()

    return run


def make_peers(context: int, num_features: int = 10_000) -> dict[str, Callable[[Windows, Windows], np.ndarray]]:
    """The methods by name; ``context``: the left context vidrec_minirocket's windows carry; ``num_features``: of
    vidrec's MiniRocket variants (fewer for a cheap screening; aeon's peers keep their defaults)."""
    f = num_features
    pd8 = {"pooling": "per_dilation", "threshold_windows": 8, "num_features": f}
    level = {"level_combinations": 84, "level_thresholds": 12}
    return {
        "vidrec_minirocket": _vidrec_minirocket(context, num_features=f),
        "minirocket": _rocket("mini"),
        "vidrec_minirocket_norm": _vidrec_minirocket(context, normalize=True, num_features=f),
        "vidrec_minirocket_pd": _vidrec_minirocket(0, pooling="per_dilation", num_features=f),
        "vidrec_minirocket_pd8": _vidrec_minirocket(0, **pd8),  # type: ignore[arg-type]
        # streamable: level features and the first-difference branch inside vidrec's model
        "vidrec_minirocket_pd8_lvl": _vidrec_minirocket(0, **pd8, **level),  # type: ignore[arg-type]
        # configs/har/hapt_minirocket_lvl.yaml: level features at ridge weight 0.1
        "vidrec_minirocket_pd8_lvl_w01": _vidrec_minirocket(0, **pd8, **level, level_weight=0.1),  # type: ignore[arg-type]
        "vidrec_minirocket_pd8_diff": _vidrec_minirocket(0, **pd8, difference=True),  # type: ignore[arg-type]
        "vidrec_minirocket_pd8_lvl_diff": _vidrec_minirocket(0, **pd8, **level, difference=True),  # type: ignore[arg-type]
        "rf": _forest,
        "multirocket": _rocket("multi"),
    }


PEER_NAMES = list(make_peers(0))


def score(pred: np.ndarray, test: Windows) -> dict[str, object]:
    """Accuracy, macro-F1 and per-subject accuracy."""
    classes = np.unique(np.concatenate([test.y, pred]))
    f1s = []
    for c in np.unique(test.y):
        tp = float(((pred == c) & (test.y == c)).sum())
        denom = float((pred == c).sum() + (test.y == c).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    per_subject = {
        str(s): float((pred[test.subjects == s] == test.y[test.subjects == s]).mean()) for s in np.unique(test.subjects)
    }
    del classes
    return {
        "acc": float((pred == test.y).mean()),
        "f1_macro": float(np.mean(f1s)),
        "per_subject": per_subject,
        "windows": int(len(test.y)),
    }


# ---------------------------------------------------------------------------------------------- vidrec configs
def run_vidrec_config(config: str, path: str, val_subjects: list[int] | None, out: Path) -> dict[str, object]:
    """Fit a vidrec config on the same split through the CLI; validation (fold) or test (official) metrics."""
    from tools.cross_validate import run_fold
    from vidrec.cli import _lightning_main

    data = ["--data.init_args.path", path]
    if val_subjects:
        metrics = run_fold(config, data, val_subjects, out)
        return {"acc": metrics["val/acc"], "f1_macro": metrics.get("val/f1_macro", float("nan")), "per_subject": {}}
    loggers = json.dumps(
        [
            {"class_path": f"lightning.pytorch.loggers.{k}", "init_args": {"save_dir": str(out), "name": "official"}}
            for k in ("TensorBoardLogger", "CSVLogger")
        ]
    )
    common = [
        "--config",
        config,
        *data,
        "--data.init_args.val_fraction",
        "0",
        "--trainer.logger",
        loggers,
        "--trainer.enable_progress_bar",
        "false",
    ]
    cli = _lightning_main(["fit", *common])
    ckpt = cli.trainer.checkpoint_callback.last_model_path  # type: ignore[union-attr]
    test = _lightning_main(["test", *common, "--ckpt_path", ckpt])
    results = test.model.test_results  # type: ignore[attr-defined]
    per = results.get("per_subject", {})
    return {
        "acc": float(results.get("test/acc", float("nan"))),
        "f1_macro": float(results.get("test/f1_macro", float("nan"))),
        "per_subject": {k: v["acc"] for k, v in per.items()},
        "checkpoint": ckpt,
    }


# ----------------------------------------------------------------------------------------------------- main
def uea_file(name: str, out_dir: Path) -> tuple[str, int]:
    """Convert a UEA set shipped with vidrec (BasicMotions) or aeon to HDF5; returns (path, series length)."""
    if name == "BasicMotions":
        train, test = basicmotions_paths()
    else:
        spec = util.find_spec("aeon")
        if spec is None or spec.origin is None:
            raise SystemExit(f"--uea {name}: needs aeon installed (the [bench] extra)")
        folder = Path(spec.origin).parent / "datasets" / "data" / name
        stem = f"{name}_eq" if name == "PickupGestureWiimoteZ" else name  # the equal-length copy
        train, test = folder / f"{stem}_TRAIN.ts", folder / f"{stem}_TEST.ts"
    out = out_dir / f"{name}.h5"
    convert_uea(train, out, test_path=test, sampling_rate=10.0, source=f"UEA/UCR archive: {name}")
    from datamodules.timeseries.schema import read_recordings

    _, recs = read_recordings(out)
    return str(out), min(len(r.samples) for r in recs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a vidrec.timeseries/1 file with an official split (HAPT)")
    source.add_argument("--uea", choices=UEA_SETS, help="a UEA/UCR set shipped with vidrec or aeon")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--hop", type=int, default=64)
    parser.add_argument(
        "--context", type=int, default=None, help="left context of vidrec_minirocket (default 8 x its largest dilation)"
    )
    parser.add_argument("--folds", type=int, default=3, help="subject-wise folds over the training subjects (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold shuffle (as tools/cross_validate.py)")
    parser.add_argument("--only-folds", type=int, nargs="*", default=None, help="run these fold indices only")
    parser.add_argument("--no-official", action="store_true", help="skip the official train -> test split")
    parser.add_argument("--peers", nargs="*", default=PEER_NAMES, choices=PEER_NAMES)
    parser.add_argument("--vidrec-config", action="append", default=[], help="a vidrec config to run alongside")
    parser.add_argument(
        "--num-features", type=int, default=10_000, help="features of vidrec's MiniRocket variants (fewer: screening)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_har")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory()
    if args.uea:
        path, length = uea_file(args.uea, Path(tmp.name))
        args.window = args.hop = length
    else:
        path = args.data
    if args.context is None:  # every feature then pools the window's positions
        from vidrec.models.minirocket import minirocket_dilations

        args.context = 8 * max(minirocket_dilations(args.window, 10_000, 32)[0])
    peers = make_peers(args.context, args.num_features)
    splits: list[tuple[str, list[int] | None]] = []
    if args.folds:  # the folds first: settings are chosen there, before the official test split is read
        folds = enumerate(training_subject_folds(path, args.folds, args.seed))
        splits += [(f"fold{k}", f) for k, f in folds if args.only_folds is None or k in args.only_folds]
    if not args.no_official:
        splits.append(("official", None))
    results: dict[str, dict[str, dict[str, object]]] = {}
    for split, val_subjects in splits:
        plain = split_windows(path, args.window, args.hop, val_subjects)
        with_context = split_windows(path, args.window, args.hop, val_subjects, args.context) if args.context else plain
        assert np.array_equal(plain[1].y, with_context[1].y), "context windows differ from the plain ones"
        print(f"[bench] {split}: {len(plain[0].y)} training, {len(plain[1].y)} evaluation windows", flush=True)
        for name in args.peers:
            train, test = with_context if name in ("vidrec_minirocket", "vidrec_minirocket_norm") else plain
            start = time.perf_counter()
            pred = peers[name](train, test)
            row = score(pred, test)
            row["seconds"] = time.perf_counter() - start
            results.setdefault(name, {})[split] = row
            print(
                f"[bench] {split} {name}: acc {row['acc']:.4f} f1 {row['f1_macro']:.4f} ({row['seconds']:.0f} s)",
                flush=True,
            )
            (out / "bench_har_baselines.json").write_text(json.dumps({"data": path, "results": results}, indent=2))
        for config in args.vidrec_config:
            start = time.perf_counter()
            row = run_vidrec_config(config, path, val_subjects, out / f"{Path(config).stem}_{split}")
            row["seconds"] = time.perf_counter() - start
            results.setdefault(Path(config).stem, {})[split] = row
            print(f"[bench] {split} {Path(config).stem}: acc {row['acc']:.4f} ({row['seconds']:.0f} s)", flush=True)
            (out / "bench_har_baselines.json").write_text(json.dumps({"data": path, "results": results}, indent=2))
    print_table(results, [s for s, _ in splits])
    print(f"\nwrote {out / 'bench_har_baselines.json'}")
    return 0


def print_table(results: dict[str, dict[str, dict[str, object]]], splits: list[str]) -> None:
    """Accuracy / macro-F1 per method and split, the folds' mean, and the official test subjects."""
    folds = [s for s in splits if s.startswith("fold")]
    print(f"\n{'method':<26} {'official acc / F1':>18} {'CV mean acc (sd)':>18} {'CV F1':>7} {'fit s':>7}  folds")
    for name, per in results.items():
        off = per.get("official")
        cells = f"{off['acc']:.4f} / {off['f1_macro']:.4f}" if off else "-"
        accs = [float(per[s]["acc"]) for s in folds if s in per]  # type: ignore[arg-type]
        f1s = [float(per[s]["f1_macro"]) for s in folds if s in per]  # type: ignore[arg-type]
        cv = f"{statistics.mean(accs):.4f} ({statistics.stdev(accs) if len(accs) > 1 else 0:.4f})" if accs else "-"
        f1 = f"{statistics.mean(f1s):.4f}" if f1s else "-"
        secs = statistics.mean(float(v["seconds"]) for v in per.values())  # type: ignore[arg-type]
        print(f"{name:<26} {cells:>18} {cv:>18} {f1:>7} {secs:7.0f}  " + " ".join(f"{a:.4f}" for a in accs))
        if off and off.get("per_subject"):
            subj = off["per_subject"]
            assert isinstance(subj, dict)
            print(f"{'':<26} per test subject: " + " ".join(f"{k}:{v:.3f}" for k, v in subj.items()))


if __name__ == "__main__":
    raise SystemExit(main())
