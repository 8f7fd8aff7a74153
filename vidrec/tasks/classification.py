"""The classification task: a LightningModule that trains any vidrec model and holds no architecture.

It receives ``model: nn.Module``, ``optimizer: OptimizerCallable`` and ``scheduler: LRSchedulerCallable`` (the
LightningCLI dependency-injection pattern), so a YAML config picks each by ``class_path``. Batches are dicts
``{"inputs": (B, C, T, ...), "target": (B,), optional "group": (B,)}``; ``group`` names the source video or recording,
and at validation/test the task also averages softmax scores per group (multi-view video testing) and reports
group-level top-1/top-5 beside clip-level metrics.

Metrics (torchmetrics): top-1 accuracy, top-5 where there are more than 5 classes, macro-F1, per-class accuracy and
F1, confusion matrix. After ``test`` it writes ``test_metrics.json`` and ``confusion_matrix.png`` into the run's log
directory. A model may define ``training_loss(inputs, target) -> (loss, logits)`` (FusionActNet's joint loss);
otherwise the loss is cross-entropy on ``model(inputs)``. A fusion model may define ``forward_streams(inputs) ->
{name: logits, ..., "fused": logits}`` (two-stream ConvNets): the test then scores every stream as well and writes
their clip- and video-level top-1/top-5 under ``"streams"`` in ``test_metrics.json``. An ensemble that
defines ``subnet_logits(inputs) -> {name: logits}`` and ``fuse(that dict) -> logits`` (the skeleton ensemble) is
scored subnet by subnet on the same test samples: ``test_metrics.json`` then holds ``subnets`` and ``fusion_gain``
(fused minus best subnet accuracy).
A model that defines ``fit_closed_form(inputs, target)`` (MiniRocket's thresholds and ridge classifier) is fitted in
closed form instead of by gradient descent: each training epoch gathers all its windows and calls it once, after
the epoch's last batch (use ``max_epochs: 1``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from vidrec.tasks.compatibility import check_model_fits_data
from vidrec.tasks.reporting import plot_confusion_matrix

__all__ = ["Classification"]

log = logging.getLogger(__name__)


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


class Classification(LightningModule):
    """Supervised classification of windows or clips.

    Args:
        model: any ``nn.Module`` mapping ``inputs`` to logits ``(B, K)``.
        optimizer: optimizer factory taking the parameters (default AdamW, lr 1e-3, weight decay 1e-4).
        scheduler: optional LR scheduler factory taking the optimizer; stepped per epoch unless it is OneCycleLR.
        num_classes: number of classes; taken from the datamodule's ``num_classes`` when omitted, checked when given.
        label_smoothing: label smoothing of the cross-entropy loss.
        pretrained: path of a local checkpoint or state_dict whose weights initialise ``model`` (fine-tuning);
            parameters whose shapes differ (a new classifier) are skipped and listed.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = _adamw,
        scheduler: LRSchedulerCallable | None = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        # Under `vidrec fit` the hyperparameters are the parsed config (the model as class_path + init_args), which is
        # what rebuilds the model from a checkpoint; built in Python, the model instance itself is not saved twice.
        self.save_hyperparameters(ignore=None if _given_hyperparameters.get() is not None else ["model"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.class_names: list[str] | None = None
        self._group_scores: list[tuple[Tensor, Tensor, Tensor]] = []
        self._stream_scores: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {}  # per stream of a fusion model
        self.test_results: dict[str, Any] = {}
        # closed-form models (no gradient steps): Lightning's manual optimisation, the epoch's windows kept on CPU
        self.closed_form = callable(getattr(model, "fit_closed_form", None))
        if self.closed_form:
            self.automatic_optimization = False
        self._gathered: list[tuple[Tensor, Tensor]] = []
        if pretrained:
            load_pretrained_weights(self.model, pretrained)
        if num_classes is not None:
            self._build_metrics(num_classes)

    # ----------------------------------------------------------------------------------------------- setup
    def _build_metrics(self, k: int) -> None:
        if getattr(self, "_metrics_for", None) == k:
            return
        self._metrics_for = k

        def scalar_metrics() -> MetricCollection:
            metrics: dict[str, Any] = {
                "acc": MulticlassAccuracy(k, average="micro"),
                "f1_macro": MulticlassF1Score(k, average="macro"),
            }
            if k > 5:
                metrics["acc_top5"] = MulticlassAccuracy(k, top_k=5, average="micro")
            # no compute groups: torchmetrics merges metrics whose states are equal after the FIRST update, and a
            # first batch of one class (loaders in file order) makes top-5 and top-1 statistics coincide, so
            # macro-F1 would report top-5 figures for the rest of the run
            return MetricCollection(metrics, compute_groups=False)

        self.train_metrics = MetricCollection({"acc": MulticlassAccuracy(k, average="micro")}, prefix="train/")
        self.val_metrics = scalar_metrics().clone(prefix="val/")
        self.test_metrics = scalar_metrics().clone(prefix="test/")
        self.test_per_class = MetricCollection(
            {
                "acc": MulticlassAccuracy(k, average=None),
                "f1": MulticlassF1Score(k, average=None),
                "confusion": MulticlassConfusionMatrix(k),
            },
            compute_groups=False,
        )

    def setup(self, stage: str) -> None:
        dm = getattr(self._trainer, "datamodule", None)
        dm_classes = getattr(dm, "num_classes", None)
        if self.num_classes is None:
            if dm_classes is None:
                raise ValueError("Classification: num_classes was not given and the datamodule has no num_classes")
            self.num_classes = int(dm_classes)
        elif dm_classes is not None and int(dm_classes) != self.num_classes:
            raise ValueError(
                f"Classification: model.num_classes={self.num_classes} but the datamodule has {dm_classes} classes"
            )
        self.class_names = list(getattr(dm, "class_names", None) or [str(i) for i in range(self.num_classes)])
        self._build_metrics(self.num_classes)
        if dm is not None:
            check_model_fits_data(self.model, dm, self.num_classes)  # one clear error before the first batch
        spec_fn = getattr(dm, "deployment_spec", None)
        example_fn = getattr(dm, "example_input", None)  # a data module whose model input is not the spec's (C, T, ...)
        if self.example_input_array is None and callable(example_fn):
            self.example_input_array = example_fn()
        elif self.example_input_array is None and callable(spec_fn):
            # one input of the deployed shape: Lightning's model summary then reports real FLOPs and sizes
            self.example_input_array = torch.zeros(1, *spec_fn().input_shape)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        interval = "step" if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ----------------------------------------------------------------------------------------------- steps
    def forward(self, inputs: Tensor) -> Tensor:
        return self.model(inputs)

    def _loss_and_logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        inputs, target = batch["inputs"], batch["target"]
        training_loss = getattr(self.model, "training_loss", None)
        if callable(training_loss) and self.training:
            loss, logits = training_loss(inputs, target)
            return loss, logits
        logits = self.model(inputs)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"model returned logits of shape {tuple(logits.shape)}, expected (B, {self.num_classes})")
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing), logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        if self.closed_form:
            self._closed_form_step(batch)
            return None
        loss, logits = self._loss_and_logits(batch)
        self.train_metrics.update(logits.detach(), batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _closed_form_step(self, batch: dict[str, Tensor]) -> None:
        """Gather the epoch's windows; after its last batch fit the model on all of them."""
        self._gathered.append((batch["inputs"].detach().cpu(), batch["target"].detach().cpu()))
        if not self.trainer.is_last_batch:
            return
        inputs = torch.cat([x for x, _ in self._gathered])
        target = torch.cat([t for _, t in self._gathered])
        self._gathered = []
        fit = self.model.fit_closed_form(inputs.to(self.device), target.to(self.device))  # type: ignore[operator]
        alpha = getattr(fit, "alpha", None)
        if alpha is not None:
            self.log("train/ridge_alpha", float(alpha), batch_size=len(target))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, logits = self._loss_and_logits(batch)
        self.val_metrics.update(logits, batch["target"])
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["target"]), sync_dist=True)
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        forward_streams = getattr(self.model, "forward_streams", None)
        if callable(forward_streams):  # a fusion model: score each of its streams as well (two-stream ConvNets)
            outputs = dict(forward_streams(batch["inputs"]))
            logits = outputs.pop("fused")
            loss = F.cross_entropy(logits, batch["target"])
            if "group" in batch:
                for name, stream_logits in outputs.items():
                    self._stream_scores.setdefault(name, []).append(
                        (batch["group"], stream_logits.softmax(dim=1).detach(), batch["target"])
                    )
        elif callable(getattr(self.model, "subnet_logits", None)):
            loss, logits = self._subnet_test_scores(batch)
        else:
            loss, logits = self._loss_and_logits(batch)
        self.test_metrics.update(logits, batch["target"])
        self.test_per_class.update(logits, batch["target"])
        self.log("test/loss", loss, batch_size=len(batch["target"]), sync_dist=True)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        if "group" in batch:
            self._group_scores.append((batch["group"], logits.softmax(dim=1).detach(), batch["target"]))

    def _subnet_test_scores(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Ensembles (``subnet_logits`` + ``fuse``, e.g. the skeleton ensemble): score each subnet on the batch."""
        subnets = self.model.subnet_logits(batch["inputs"])  # type: ignore[operator]
        logits = self.model.fuse(subnets)  # type: ignore[operator]
        k = int(self.num_classes or logits.shape[1])
        if not hasattr(self, "_subnet_metrics"):
            self._subnet_metrics: dict[str, MetricCollection] = {}
        for name, value in subnets.items():
            if name not in self._subnet_metrics:
                metrics: dict[str, Any] = {
                    "acc": MulticlassAccuracy(k, average="micro"),
                    "f1_macro": MulticlassF1Score(k, average="macro"),
                }
                self._subnet_metrics[name] = MetricCollection(metrics, compute_groups=False).to(logits.device)
            self._subnet_metrics[name].update(value.detach(), batch["target"])
        return F.cross_entropy(logits, batch["target"]), logits

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        logits = self.model(batch["inputs"])
        out = {"logits": logits, "probs": logits.softmax(dim=1), "pred": logits.argmax(dim=1)}
        for key in ("target", "group"):
            if key in batch:
                out[key] = batch[key]
        return out

    # ------------------------------------------------------------------------------------------ test report
    def on_test_epoch_start(self) -> None:
        self._group_scores = []
        self._subnet_metrics = {}
        self._stream_scores = {}
        self.test_per_class.reset()

    def _gathered_group_scores(
        self, collected: list[tuple[Tensor, Tensor, Tensor]] | None = None
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(groups (N,), probs (N, K), targets (N,))`` of every test clip, from all processes; None without groups."""
        collected = self._group_scores if collected is None else collected
        if not collected:
            return None
        groups = torch.cat([g for g, _, _ in collected])
        probs = torch.cat([p for _, p, _ in collected])
        targets = torch.cat([t for _, _, t in collected])
        if self.trainer.world_size > 1:
            groups, probs, targets = (cast(Tensor, self.all_gather(t)).flatten(0, 1) for t in (groups, probs, targets))
        return groups, probs, targets

    def _group_metrics(self, scores: tuple[Tensor, Tensor, Tensor] | None) -> dict[str, float]:
        """Score each group (video, recording) by its windows' mean softmax scores and by their majority vote.

        Groups that hold several classes (a continuous recording with many activities) have no single label; then
        the same is done for bouts: runs of consecutive windows of one group with one label (``test/bout_acc``,
        one process only, as the windows arrive in file order there).
        """
        if scores is None:
            return {}
        groups, probs, targets = scores
        ids, inverse = torch.unique(groups, return_inverse=True)
        group_target = targets.new_zeros(len(ids)).scatter_(0, inverse, targets)
        lowest = targets.new_full((len(ids),), targets.max().item()).scatter_reduce(0, inverse, targets, "amin")
        if torch.equal(lowest, group_target):
            return _unit_metrics("group", inverse, probs, group_target)
        if self.trainer.world_size > 1:
            return {}
        # (N,) bout index: a new bout where the group or the label changes
        change = torch.ones_like(targets, dtype=torch.bool)
        change[1:] = (groups[1:] != groups[:-1]) | (targets[1:] != targets[:-1])
        bout = change.long().cumsum(0) - 1
        bout_target = targets[change]
        return _unit_metrics("bout", bout, probs, bout_target)

    def _per_subject(self, scores: tuple[Tensor, Tensor, Tensor] | None) -> dict[str, dict[str, float]]:
        """Window (clip) accuracy per subject, when the datamodule says which subject each group belongs to.

        Subject shift is the main error source of wearable HAR (a subject who wears the phone differently); this
        shows it in every test report. Empty when batches carry no ``group`` or the datamodule has no ``group_info``.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        info_fn = getattr(datamodule, "group_info", None)
        if scores is None or not callable(info_fn):
            return {}
        groups, probs, targets = scores
        correct = probs.argmax(dim=1) == targets
        info = info_fn()
        per: dict[str, list[int]] = {}
        for g, ok in zip(groups.tolist(), correct.tolist(), strict=True):
            entry = info.get(int(g))
            if entry is None or "subject" not in entry:
                return {}
            counts = per.setdefault(str(entry["subject"]), [0, 0])
            counts[0] += int(ok)
            counts[1] += 1
        return {k: {"acc": per[k][0] / per[k][1], "windows": float(per[k][1])} for k in subject_order(per)}

    def on_test_epoch_end(self) -> None:
        per_class = self.test_per_class.compute()
        scores = self._gathered_group_scores()  # gathered once, from every process
        per_subject = self._per_subject(scores)
        group = self._group_metrics(scores)
        for key, value in group.items():
            self.log(key, value, rank_zero_only=True)
        scalars = {k: float(v) for k, v in self.test_metrics.compute().items()}
        names = self.class_names or [str(i) for i in range(self.num_classes or 0)]
        self.test_results = {
            **scalars,
            **group,
            "per_class": {
                name: {"acc": _finite(per_class["acc"][i]), "f1": _finite(per_class["f1"][i])}
                for i, name in enumerate(names)
            },
            **({"per_subject": per_subject} if per_subject else {}),
            **self._subnet_results(scalars),
            **({"streams": self._stream_metrics()} if self._stream_scores else {}),
            "confusion_matrix": per_class["confusion"].tolist(),
            "class_names": names,
        }
        self._write_test_report()

    def _stream_metrics(self) -> dict[str, dict[str, float]]:
        """Clip- and video-level top-1 (top-5) of each stream of a fusion model, beside the fused ``test/`` figures."""
        out: dict[str, dict[str, float]] = {}
        for name in sorted(self._stream_scores):
            scores = self._gathered_group_scores(self._stream_scores[name])
            assert scores is not None
            _, probs, targets = scores
            entry = {"acc": float((probs.argmax(dim=1) == targets).float().mean())}
            entry.update({k.removeprefix("test/"): v for k, v in self._group_metrics(scores).items()})
            out[name] = entry
        return out

    @rank_zero_only
    def _write_test_report(self) -> None:
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "test_metrics.json").write_text(json.dumps(self.test_results, indent=2))
        plot_confusion_matrix(
            torch.tensor(self.test_results["confusion_matrix"]),
            self.test_results["class_names"],
            out_dir / "confusion_matrix.png",
            title=f"test accuracy {self.test_results.get('test/acc', float('nan')):.2%}",
        )
        self.test_results["log_dir"] = str(out_dir)
        log.info("wrote %s and %s", out_dir / "test_metrics.json", out_dir / "confusion_matrix.png")

    # ------------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the deployment spec (vidrec.spec) as plain types: torch.load(weights_only=True) reads it
        dm = getattr(self._trainer, "datamodule", None)
        spec_fn = getattr(dm, "deployment_spec", None)
        checkpoint["vidrec"] = {
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "spec": spec_fn().to_dict() if callable(spec_fn) else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("vidrec", {})
        if meta.get("num_classes") is not None:
            self.num_classes = meta["num_classes"]
            self._build_metrics(self.num_classes)
        self.class_names = meta.get("class_names")

    def _subnet_results(self, scalars: dict[str, float]) -> dict[str, Any]:
        """``{"subnets": {name: {"acc", "f1_macro"}}, "fusion_gain": fused acc - best subnet acc}`` for ensembles."""
        metrics = getattr(self, "_subnet_metrics", {})
        if not metrics:
            return {}
        subnets = {name: {k: float(v) for k, v in m.compute().items()} for name, m in metrics.items()}
        best = max(v["acc"] for v in subnets.values())
        return {"subnets": subnets, "fusion_gain": scalars.get("test/acc", float("nan")) - best}


def subject_order(subjects: Iterable[str]) -> list[str]:
    """Subject ids in numeric order (2 before 10), then ids that are not integers in text order."""

    def key(text: str) -> tuple[bool, int, str]:
        numeric = text.lstrip("-").isdigit()
        return (not numeric, int(text) if numeric else 0, text)

    return sorted(subjects, key=key)


def _finite(x: Tensor) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _unit_metrics(name: str, unit: Tensor, probs: Tensor, unit_target: Tensor) -> dict[str, float]:
    """Accuracy of units (groups, bouts) of windows: ``unit`` (N,) index of each window's unit, ``unit_target`` (U,).

    ``test/{name}_acc``: the argmax of the mean softmax scores; ``_acc_vote``: the most frequent window prediction
    (ties: the lowest class index); ``_acc_top5`` where there are more than 5 classes.
    """
    u, k = len(unit_target), probs.shape[1]
    summed = probs.new_zeros(u, k).index_add_(0, unit, probs)
    votes = probs.new_zeros(u, k).index_add_(0, unit, F.one_hot(probs.argmax(dim=1), k).to(probs.dtype))
    top = summed.topk(min(5, k), dim=1).indices
    metrics = {
        f"test/{name}_acc": float((top[:, 0] == unit_target).float().mean()),
        f"test/{name}_acc_vote": float((votes.argmax(dim=1) == unit_target).float().mean()),
        f"test/{name}s": float(u),
    }
    if k > 5:
        metrics[f"test/{name}_acc_top5"] = float((top == unit_target[:, None]).any(dim=1).float().mean())
    return metrics


def load_pretrained_weights(model: nn.Module, path: str) -> None:
    """Load matching weights from a Lightning checkpoint or a plain state_dict file into ``model``."""
    from vidrec.tasks.checkpoint import load_weights_only

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"pretrained: {file} does not exist (expected a .ckpt or a state_dict .pth file)")
    blob = load_weights_only(file, "pretrained weights file")  # tensors and plain containers only: runs no code
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    if not isinstance(state, dict):
        raise ValueError(f"pretrained: {file} holds a {type(state).__name__}, expected a state_dict")
    state = {k.removeprefix("model."): v for k, v in state.items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(usable))
    if not usable:
        raise ValueError(f"pretrained: no parameter of {file} matches the model by name and shape")
    model.load_state_dict(usable, strict=False)
    log.info(
        "pretrained: loaded %d tensors from %s; kept initial values for %d: %s",
        len(usable),
        file,
        len(skipped),
        ", ".join(skipped[:10]),
    )
