"""MiniRocket in vidrec: aeon's features on the unpadded half, exact streaming, closed-form ridge, task fitting."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.timeseries.schema import Recording, write_recordings
from vidrec.models import build_model
from vidrec.models.minirocket import MiniRocket, MiniRocketFeatures, PPVCrop, fit_ridge, minirocket_dilations
from vidrec.streaming.runtime import to_streaming


def _walks(n: int, c: int, length: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((n, c, length)).astype(np.float32).cumsum(axis=2))


def test_dilations_follow_minirocket() -> None:
    dilations, per = minirocket_dilations(128, 10_000, 32)
    assert dilations == list(range(1, 16))
    assert sum(per) == 10_000 // 84 and per[0] == 30


def test_matches_aeon_on_unpadded_features() -> None:
    aeon_mr = pytest.importorskip("aeon.transformations.collection.convolution_based")
    x = _walks(12, 3, 64)
    transform = aeon_mr.MiniRocket(n_kernels=2_000, random_state=0).fit(x.numpy())
    per_comb, channel_index, dilations, per_dilation, biases = transform.parameters
    ours = MiniRocketFeatures(3, 64, num_features=2_000)
    assert ours.dilations == [int(d) for d in dilations] and ours.features_per_dilation == [
        int(n) for n in per_dilation
    ]
    masks, start = torch.zeros(len(per_comb), 3), 0
    for comb, n in enumerate(per_comb):
        masks[comb, channel_index[start : start + n]] = 1.0
        start += n
    ours.set_channel_masks(masks)
    ours.biases.copy_(torch.from_numpy(biases))
    mine = ours.ppv(x, PPVCrop.PER_DILATION).numpy()
    theirs = transform.transform(x.numpy())
    # aeon zero-pads (dilation index + kernel index) even; the others are valid convolutions like vidrec's
    unpadded = np.concatenate([np.repeat([(j + k) % 2 == 1 for k in range(84)], n) for j, n in enumerate(per_dilation)])
    diff = np.abs(mine - theirs)[:, unpadded]
    assert (diff > 1e-6).mean() < 1e-3  # a float-rounding tie at a threshold flips one position now and then
    assert diff.max() <= 2.0 / (64 - 8 * max(ours.dilations)) + 1e-6


@pytest.mark.parametrize("hop", [1, 8])
def test_streaming_equals_offline(hop: int) -> None:
    torch.manual_seed(0)
    model = build_model("minirocket_har", in_channels=3, num_classes=4, window=32, num_features=336)
    x = _walks(2, 3, 32 + 24 + 12 * hop)
    model.rocket.fit_biases(x[:, :, :56])
    torch.nn.init.normal_(model.linear.weight)
    model.eval()
    length = 32 + 24  # window + context = 8 x the largest dilation (3)
    assert model.receptive_field == 25
    model.configure_stream(length, hop)
    with torch.no_grad():
        state = model.stream_state(x[:, :, :hop])
        checked = 0
        for t in range(0, x.shape[2], hop):
            out, state = model.stream_step(x[:, :, t : t + hop], state)
            if t + hop >= length:
                torch.testing.assert_close(out, model(x[:, :, t + hop - length : t + hop]), atol=1e-4, rtol=0)
                checked += 1
    assert checked >= 12
    runtime = to_streaming(model, window=length, hop=hop, capacity=2)
    logits, _ = runtime.run(x)
    torch.testing.assert_close(logits[:, -1], model(x[:, :, -length:]), atol=1e-4, rtol=0)


def test_ridge_matches_closed_form_and_picks_alpha() -> None:
    torch.manual_seed(0)
    for n, f in ((40, 60), (80, 20)):  # both the dual (N <= F) and the primal solution
        z = torch.randn(n, f).double()
        target = torch.randint(0, 3, (n,))
        fit = fit_ridge(z, target, 3, alphas=(0.1, 10.0))
        mean, std = z.mean(0), z.std(0, unbiased=False)
        zs = (z - mean) / std
        y = -torch.ones(n, 3, dtype=torch.float64)
        y[torch.arange(n), target] = 1
        coef = torch.linalg.solve(zs.T @ zs + fit.alpha * torch.eye(f, dtype=torch.float64), zs.T @ (y - y.mean(0)))
        expected = zs @ coef + y.mean(0)
        torch.testing.assert_close((z.float() @ fit.weight.T + fit.bias).double(), expected, atol=1e-3, rtol=1e-3)
        # leave-one-out error of the chosen alpha, recomputed by refitting without each case
        a = fit.alpha
        residuals = []
        for i in range(n):
            keep = torch.arange(n) != i
            zk, yk = zs[keep], y[keep]
            zm, ym = zk.mean(0), yk.mean(0)
            c = torch.linalg.solve(
                (zk - zm).T @ (zk - zm) + a * torch.eye(f, dtype=torch.float64), (zk - zm).T @ (yk - ym)
            )
            residuals.append((y[i] - ym) - (zs[i] - zm) @ c)
        loo = torch.stack(residuals)
        assert abs(float((loo * loo).mean()) - fit.loo_error[a]) < 0.05 * fit.loo_error[a]


def test_feature_weights_are_a_groupwise_penalty() -> None:
    """A feature of weight w is penalised by alpha / w**2: the fit equals the closed-form group ridge."""
    torch.manual_seed(0)
    for n, f in ((40, 60), (80, 20)):  # dual and primal solutions
        z = torch.randn(n, f).double() * torch.linspace(0.5, 3.0, f).double()
        target = torch.randint(0, 3, (n,))
        w = torch.ones(f, dtype=torch.float64)
        w[f // 2 :] = 0.2
        fit = fit_ridge(z, target, 3, alphas=(5.0,), feature_weights=w)
        zs = (z - z.mean(0)) / z.std(0, unbiased=False)
        y = -torch.ones(n, 3, dtype=torch.float64)
        y[torch.arange(n), target] = 1
        penalty = torch.diag(5.0 / w**2)
        coef = torch.linalg.solve(zs.T @ zs + penalty, zs.T @ (y - y.mean(0)))
        torch.testing.assert_close(
            (z.float() @ fit.weight.T + fit.bias).double(), zs @ coef + y.mean(0), atol=1e-3, rtol=1e-3
        )
        plain = fit_ridge(z, target, 3, alphas=(5.0,))
        assert (fit.weight[:, f // 2 :].abs().sum() / plain.weight[:, f // 2 :].abs().sum()) < 0.5
    with pytest.raises(ValueError, match="feature_weights must be 20 positive values"):
        fit_ridge(z, target, 3, feature_weights=torch.zeros(20))


def test_level_weight_shrinks_only_the_level_features() -> None:
    torch.manual_seed(0)
    x = torch.randn(48, 3, 40).cumsum(2) + torch.randn(48, 3, 1) * 2
    target = torch.randint(0, 3, (48,))
    kwargs = dict(in_channels=3, num_classes=3, window=40, num_features=168, level_combinations=6)
    full = MiniRocket(**kwargs)
    fit = full.fit_closed_form(x, target)
    weighted = MiniRocket(**kwargs, level_weight=0.1)
    fit_w = weighted.fit_closed_form(x, target)
    features = weighted.transform(x)
    w = torch.ones(features.shape[1], dtype=torch.float64)
    n_conv = weighted.rocket.num_conv_features
    w[n_conv:] = 0.1
    expected = fit_ridge(features, target, 3, weighted.alphas, feature_weights=w)
    torch.testing.assert_close(fit_w.weight, expected.weight)
    torch.testing.assert_close(weighted(x), features @ expected.weight.T + expected.bias, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fit_w.weight, fit.weight)
    with pytest.raises(ValueError, match="level_weight must be > 0"):
        MiniRocket(**kwargs, level_weight=0.0)


def test_fit_closed_form_separates_classes() -> None:
    torch.manual_seed(0)
    t = torch.arange(64, dtype=torch.float32)
    slow = torch.sin(t / 6)[None, None].repeat(20, 2, 1)
    fast = torch.sin(t / 1.5)[None, None].repeat(20, 2, 1)
    x = torch.cat([slow, fast]) + 0.1 * torch.randn(40, 2, 64)
    target = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    model = MiniRocket(in_channels=2, num_classes=2, window=32, num_features=168)
    fit = model.fit_closed_form(x, target)
    assert fit.alpha in model.alphas
    model.eval()
    assert (model(x).argmax(1) == target).float().mean() == 1.0


def _quantised_walks(n: int, c: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random walks on a grid of 1/720 (HAPT's accelerometer step): convolution outputs tie with thresholds."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((np.round(rng.standard_normal((n, c, length)).cumsum(axis=2) * 3) / 720).astype(np.float32))


LEVEL = {"level_combinations": 5, "level_thresholds": 3}


@pytest.mark.parametrize(
    ("pooling", "length", "options"),
    [
        ("common", 32 + 24, {}),
        ("per_dilation", 32, {}),
        ("common", 32 + 24, LEVEL),
        ("per_dilation", 32, LEVEL),
        ("per_dilation", 32, {"difference": True}),
        ("per_dilation", 32, {**LEVEL, "difference": True}),
    ],
)
@pytest.mark.parametrize("hop", [1, 4])
def test_streaming_exact_on_quantised_inputs(pooling: str, length: int, options: dict, hop: int) -> None:
    """Float64 convolutions on both paths: the same thresholds counted, so only the ridge sums' rounding differs.

    With float32 convolutions (offline conv1d vs the streaming matmul) these inputs deviated by ~6e-3 in logits.
    Level features and the first-difference branch are averages of steps too, pooled by the same heads.
    """
    x = _quantised_walks(3, 3, length + 48)
    model = build_model(
        "minirocket_har", in_channels=3, num_classes=4, window=32, num_features=336, pooling=pooling, **options
    )
    starts = range(0, 49, 4)
    train = torch.cat([x[:, :, s : s + length] for s in starts])
    model.fit_closed_form(train, torch.arange(len(train)) % 4)
    model.eval()
    logits, _ = to_streaming(model, window=length, hop=hop, capacity=3).run(x)
    ends = [e for e in range(hop, x.shape[2] + 1, hop) if e >= length]  # the windows the runtime emits
    with torch.no_grad():
        offline = torch.stack([model(x[:, :, e - length : e]) for e in ends], dim=1)  # (3, n, K)
    streamed = logits[:, torch.tensor(ends) // hop - 1]
    torch.testing.assert_close(streamed, offline, atol=2e-6, rtol=0)


def test_per_dilation_pooling_is_minirocket_unpadded_ppv() -> None:
    """PER_DILATION: dilation d's features average its own ``L - 8 d`` valid outputs (no context needed)."""
    x = _walks(4, 2, 40)
    model = build_model(
        "minirocket_har", in_channels=2, num_classes=3, window=40, num_features=168, pooling="per_dilation"
    )
    model.fit_closed_form(x, torch.tensor([0, 1, 2, 0]))
    rocket = model.rocket
    feats = model.transform(x)
    start = 0
    for j, (d, n) in enumerate(zip(rocket.dilations, rocket.features_per_dilation, strict=True)):
        out = torch.nn.functional.conv1d(x.double(), rocket.convs[j].op.weight.double(), dilation=d)  # (4, 84, 40 - 8d)
        assert out.shape[2] == 40 - 8 * d
        b = rocket.biases[start : start + 84 * n].view(84, n).double()
        expected = (out[:, :, None, :] > b[None, :, :, None]).double().mean(dim=3).flatten(1)
        torch.testing.assert_close(feats[:, start : start + 84 * n].double(), expected)
        start += 84 * n


def test_last_positions_pool_streams() -> None:
    from vidrec.models.minirocket import LastPositionsAvgPoolHead

    pool = LastPositionsAvgPoolHead([1, 3, 5])
    x = torch.randn(2, 3, 20)
    state = pool.stream_state(x[:, :, :2])
    for t in range(0, 20, 2):
        out, state = pool.stream_step(x[:, :, t : t + 2], state)
        if t + 2 >= 5:
            torch.testing.assert_close(out, pool(x[:, :, : t + 2]))
    expected = torch.stack([x[:, 0, -1], x[:, 1, -3:].mean(1), x[:, 2, -5:].mean(1)], dim=1)
    torch.testing.assert_close(pool(x), expected)
    with pytest.raises(ValueError, match="lengths must be >= 1"):
        LastPositionsAvgPoolHead([0])


def test_fit_does_not_depend_on_window_order() -> None:
    """The thresholds' windows are picked from a value-defined order: a shuffled loader refits the same model."""
    x = _quantised_walks(30, 2, 40)
    target = torch.arange(30) % 3
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    a = build_model("minirocket_har", in_channels=2, num_classes=3, window=40, num_features=168, pooling="per_dilation")
    b = build_model("minirocket_har", in_channels=2, num_classes=3, window=40, num_features=168, pooling="per_dilation")
    a.fit_closed_form(x, target)
    b.fit_closed_form(x[perm], target[perm])
    torch.testing.assert_close(a.rocket.biases, b.rocket.biases, atol=0, rtol=0)
    torch.testing.assert_close(a.linear.weight, b.linear.weight, atol=1e-5, rtol=1e-5)


def _quantised_file(path: Path) -> Path:
    """6 subjects x 300 samples, 3 channels on a 1/720 grid (HAPT's), 3 classes in segments; subjects 5, 6 'test'."""
    rng = np.random.default_rng(0)
    recordings = []
    for subject in range(1, 7):
        labels = np.repeat(rng.permutation([0, 1, 2, 0, 1, 2]), 50)
        t = np.arange(300) / 50.0
        signal = np.stack([np.sin(2 * np.pi * (1 + labels) * t + c) for c in range(3)], axis=1)
        noisy = signal * (1 + 0.2 * subject) + rng.normal(scale=0.3, size=signal.shape)
        samples = (np.round(noisy * 720) / 720).astype(np.float32)
        split = "test" if subject >= 5 else "train"
        recordings.append(Recording(f"s{subject}", samples, labels, subject=subject, split=split))
    write_recordings(path, recordings, sampling_rate=50.0, channel_names=["x", "y", "z"], class_names=["a", "b", "c"])
    return path


@pytest.mark.parametrize(("pooling", "context"), [("common", 24), ("per_dilation", 0)])
def test_evaluate_streaming_offline_equals_vidrec_test(
    pooling: str, context: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On one checkpoint, evaluate-streaming's offline column is `vidrec test`'s accuracy, and streaming equals it.

    Quantised inputs: with float32 convolutions, threshold ties made the two paths disagree on real (HAPT) data.
    """
    from vidrec.cli import main
    from vidrec.streaming.command import evaluate_checkpoint
    from vidrec.tasks import load_checkpoint

    monkeypatch.chdir(tmp_path)
    data = _quantised_file(tmp_path / "tiny.h5")
    args = [
        "-c",
        str(Path(__file__).resolve().parents[2] / "configs/har/hapt_minirocket.yaml"),
        "--data.init_args.path",
        str(data),
        "--model.model.init_args.in_channels=3",
        "--model.model.init_args.num_classes=3",
        "--model.model.init_args.window=32",
        "--model.model.init_args.num_features=336",
        f"--model.model.init_args.pooling={pooling}",
        "--data.init_args.windows.window=32",
        f"--data.init_args.windows.context={context}",
        "--data.init_args.windows.hop=8",
        "--data.init_args.windows.eval_hop=8",
        "--data.init_args.loader.batch_size=16",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    main(["fit", *args])
    run = sorted((tmp_path / "runs" / "hapt_minirocket").iterdir())[-1]
    ckpt = run / "checkpoints" / "last.ckpt"
    main(["test", *args, "--ckpt_path", str(ckpt)])
    tested = json.loads(
        (sorted((tmp_path / "runs" / "hapt_minirocket").iterdir())[-1] / "test_metrics.json").read_text()
    )
    rep = evaluate_checkpoint(load_checkpoint(ckpt), timing_repeats=2).report
    assert rep["windows"] == sum(map(sum, tested["confusion_matrix"]))
    assert rep["offline"]["accuracy"] == pytest.approx(tested["test/acc"], abs=1e-6)
    assert rep["argmax_agreement"] == 1.0 and rep["max_abs_logit_delta"] < 1e-5


def test_level_features_are_the_share_of_subset_sums_above_thresholds() -> None:
    """Level feature (m, q): the share of the window's samples whose subset-m channel sum exceeds threshold q."""
    x = _quantised_walks(6, 3, 40)
    model = build_model(
        "minirocket_har", in_channels=3, num_classes=2, window=40, num_features=168, pooling="per_dilation", **LEVEL
    )
    model.fit_closed_form(x, torch.tensor([0, 1] * 3))
    rocket = model.rocket
    assert rocket.num_features == rocket.num_conv_features + 15 and model.linear.in_channels == rocket.num_features
    sums = torch.einsum("nct,mc->nmt", x.double(), rocket.level_masks.double())  # (6, 5, 40)
    thresholds = rocket.level_biases.view(5, 3).double()
    expected = (sums[:, :, None, :] > thresholds[None, :, :, None]).double().mean(dim=3).flatten(1)
    torch.testing.assert_close(model.transform(x)[:, rocket.num_conv_features :].double(), expected)
    # thresholds fall inside the range of the sums, so the features vary between windows
    assert thresholds.min() >= sums.min() and thresholds.max() <= sums.max()
    # COMMON pools the level over the positions every convolution feature pools: the last L - 8 d_max samples
    common = build_model("minirocket_har", in_channels=3, num_classes=2, window=40, num_features=168, **LEVEL)
    common.rocket.load_state_dict(rocket.state_dict())
    p = 40 - 8 * max(rocket.dilations)
    expected = (sums[:, :, None, -p:] > thresholds[None, :, :, None]).double().mean(dim=3).flatten(1)
    torch.testing.assert_close(common.transform(x)[:, rocket.num_conv_features :].double(), expected)


def test_difference_branch_sees_the_first_difference() -> None:
    x = _quantised_walks(4, 2, 40)
    model = build_model(
        "minirocket_har",
        in_channels=2,
        num_classes=2,
        window=40,
        num_features=168,
        pooling="per_dilation",
        difference=True,
    )
    model.fit_closed_form(x, torch.tensor([0, 1, 0, 1]))
    assert model.diff_rocket is not None
    n = model.rocket.num_features
    torch.testing.assert_close(model.transform(x)[:, n:], model.diff_rocket.ppv(x.diff(dim=2), PPVCrop.PER_DILATION))
    assert model.receptive_field == model.diff_rocket.receptive_field + 1
    with pytest.raises(ValueError, match="difference=True needs pooling='per_dilation'"):
        build_model("minirocket_har", in_channels=2, window=40, num_features=168, difference=True)


def test_models_without_level_features_keep_their_state_dict() -> None:
    """No level buffers unless asked for: checkpoints of plain MiniRocket models load strictly."""
    plain = build_model("minirocket_har", in_channels=2, num_classes=2, window=40, num_features=168)
    assert not any("level" in key for key in plain.state_dict())
    again = build_model("minirocket_har", in_channels=2, num_classes=2, window=40, num_features=168)
    again.load_state_dict(plain.state_dict(), strict=True)
    with pytest.raises(ValueError, match="level_combinations must be >= 0"):
        MiniRocketFeatures(2, 40, num_features=168, level_combinations=-1)
