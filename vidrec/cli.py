"""The ``vidrec`` command.

``vidrec fit|validate|test|predict -c configs/....yaml [--key.path value ...]`` is a LightningCLI over
``vidrec.tasks.Classification`` and any LightningDataModule (both chosen by ``class_path`` in the YAML); an unknown
key or class fails at start and names the key path. The other subcommands are plain argparse commands:

* ``vidrec demo har``: prepare HAPT, train, test and print a report (the README's quickstart).
* ``vidrec data ...``: dataset converters and generators.
* ``vidrec stream``, ``vidrec evaluate-streaming``, ``vidrec export-stream``: streaming inference (vidrec.streaming).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from vidrec.tasks.classification import Classification

__all__ = ["RunCheckpoint", "VidrecCLI", "main"]

log = logging.getLogger(__name__)

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def trainer_defaults() -> dict[str, Any]:
    """Callbacks every run gets: the learning rate in the logs (the progress bar is added in ``VidrecCLI``)."""
    return {"callbacks": [LearningRateMonitor(logging_interval="epoch")]}


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps the last epoch when the run has no validation split.

    A final model trained on every training subject (``val_fraction: 0``, no ``val_subjects``) has no ``val/acc``
    to pick a best epoch by, so the monitor is dropped for that run: the checkpoint of the last epoch is kept as
    ``epochNNN.ckpt`` (and ``last.ckpt``), with no missing-metric warning. A data module says so with
    ``has_validation`` (read after its ``setup``); others keep the configured monitor.
    """

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.monitor is not None and getattr(getattr(trainer, "datamodule", None), "has_validation", True) is False:
            log.info("no validation split: checkpointing the last epoch instead of the best %s", self.monitor)
            self.monitor, self.filename = None, "epoch{epoch:03d}"
        super().setup(trainer, pl_module, stage)


class VidrecCLI(LightningCLI):
    """LightningCLI with vidrec's defaults: TensorBoard + CSV logs in one run folder, rich progress, checkpoints."""

    version = ""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "trainer.logger": [
                    {
                        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": "runs", "name": "vidrec"},
                    },
                    {
                        "class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": "runs", "name": "vidrec"},
                    },
                ],
            }
        )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # a rich progress bar unless the run disables progress bars or brings its own
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in [*callbacks, *(config.get("callbacks") or [])]
        ):
            callbacks = [*callbacks, RichProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        # One version folder shared by all loggers, so events, metrics.csv, checkpoints and reports sit together.
        config = self.config[self.subcommand] if self.subcommand else self.config
        loggers = config.trainer.logger
        for entry in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(entry, "init_args", None)
            if init is not None and "version" in init and init.version is None:
                init.version = self.version


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips (``"💡 Tip: ... install litlogger"``) from a normal run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _quiet_run_output() -> None:
    """Silence what greets every run without concerning it (each filter names its source)."""
    # TensorBoard and CSV share the run folder on purpose; the CSV logger warns that it is not empty.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    # Lightning's own pytree helper calls a torch API deprecated in torch 2.10 (lightning/pytorch/utilities/_pytree.py)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # every run writes a new version folder, so a checkpoint resumed or tested from another run's folder always has
    # another dirpath; ModelCheckpoint's note about it says nothing the user did not ask for
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())


def _lightning_main(args: Sequence[str], run: bool = True) -> VidrecCLI:
    """Run LightningCLI on ``args`` (a subcommand and its options)."""
    _quiet_run_output()
    VidrecCLI.version = time.strftime("%Y%m%d-%H%M%S")
    # LightningCLI reads sys.argv[1:] when args is None; handing it `args` through sys.argv (restored after) instead
    # of `args=` avoids its "args and command line arguments both given" warning when the two hold the same thing.
    argv = sys.argv
    sys.argv = [argv[0] if argv else "vidrec", *args]
    try:
        return VidrecCLI(
            Classification,
            LightningDataModule,
            subclass_mode_data=True,
            trainer_defaults=trainer_defaults(),
            save_config_kwargs={"overwrite": True},
            run=run,
        )
    finally:
        sys.argv = argv


def _add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """``vidrec data DATASET ...``: the converters and generators of both data packages."""
    from datamodules.timeseries.converters import command as timeseries_command
    from datamodules.video import command as video_command

    parser = subparsers.add_parser("data", help="convert or generate data sets")
    datasets = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    timeseries_command.add_data_subcommands(datasets)
    video_command.add_parser(datasets)
    from datamodules.features import command as features_command

    features_command.add_data_parsers(datasets)


def _command_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    """The non-Lightning commands, one convention: ``add_parser(subparsers)`` adds the command's subcommand(s) to
    the ``vidrec`` parser and sets ``func`` (called with the parsed namespace) on every leaf parser."""
    from datamodules.features import command as features_command
    from vidrec import demo
    from vidrec.streaming import command as streaming_command

    return [demo.add_parser, _add_data_parser, streaming_command.add_parser, features_command.add_parser]


def build_extra_parser() -> argparse.ArgumentParser:
    """The argparse parser of the non-Lightning subcommands."""
    parser = argparse.ArgumentParser(prog="vidrec")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _command_registrars():
        register(sub)
    return parser


def _usage() -> str:
    return (
        "usage: vidrec COMMAND ...\n\n"
        "training (LightningCLI; `vidrec fit --help` lists every key):\n"
        "  fit | validate | test | predict   -c CONFIG.yaml [--key.path value ...]\n\n"
        "other commands (`vidrec COMMAND --help`):\n"
        "  demo har                          prepare HAPT, train, test and print a report\n"
        "  data DATASET ...                  convert or generate data sets (hapt, uci-har, uea, generic, ...)\n"
        "  extract-features LAYOUT ...       per-frame feature file of a video data set (TS-LSTM input)\n"
        "  stream | evaluate-streaming | export-stream   streaming inference from a checkpoint\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vidrec`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] in LIGHTNING_COMMANDS:
        _lightning_main(args)
        return 0
    ns = build_extra_parser().parse_args(args)
    result = ns.func(ns)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
