"""The ``vidrec`` command.

``vidrec fit|validate|test|predict -c configs/....yaml [--key.path value ...]`` is a LightningCLI over
``vidrec.tasks.Classification`` and any LightningDataModule (both chosen by ``class_path`` in the YAML); an unknown
key or class fails at start and names the key path. The other subcommands are plain argparse commands:

* ``vidrec demo har``: prepare HAPT, train, test and print a report (the README's quickstart).
* ``vidrec data ...``: dataset converters and generators.
* ``vidrec stream``, ``vidrec evaluate-streaming``, ``vidrec export-stream``: streaming inference (vidrec.streaming).

Errors in the user's data, files or settings (a missing data file, a model that does not fit the data, a refused
checkpoint) end the command with one line on stderr and exit status 2; ``VIDREC_TRACEBACK=1`` shows the traceback.

Checkpoints: ``last.ckpt`` is the last epoch (rewritten at every save point, not only with a new best;
``--trainer.enable_checkpointing false`` writes none), and
``vidrec fit --ckpt_path RUN/checkpoints/last.ckpt`` resumes exactly (``vidrec.tasks.resume``): same folder, rows of
the interrupted epoch removed from ``metrics.csv`` and TensorBoard, every epoch seeded from (seed, epoch).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# third-party import-time noise before the first line of output (fvcore, through pytorchvideo)
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

from lightning.pytorch import LightningDataModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from vidrec.tasks.checkpoint import load_weights_only  # noqa: E402
from vidrec.tasks.classification import Classification  # noqa: E402
from vidrec.tasks.resume import EpochSeeding, metrics_before, run_folder_of, write_metrics  # noqa: E402

__all__ = ["RunCheckpoint", "VidrecCLI", "main"]

log = logging.getLogger(__name__)

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def trainer_defaults() -> dict[str, Any]:
    """Callbacks every run gets: the learning rate in the logs and per-epoch seeding (exact resume); the progress
    bar is added in ``VidrecCLI``."""
    return {"callbacks": [LearningRateMonitor(logging_interval="epoch"), EpochSeeding()]}


class DataFileMissing(FileNotFoundError):
    """The data file a config names does not exist (the message says which command creates it)."""


# converters whose output the shipped configs read: file stem -> command that writes data/<stem>.h5
_DATA_COMMANDS = {"hapt": "vidrec data hapt", "basicmotions": "vidrec data basicmotions"}


def missing_data_message(path: str) -> str:
    """``PATH not found, create it with `vidrec data ...``` for a missing time-series file."""
    stem = Path(path).stem
    if stem in _DATA_COMMANDS:
        command = _DATA_COMMANDS[stem]
        if Path(path) != Path("data") / f"{stem}.h5":
            command += f" --out {path}"
    elif stem.replace("-", "_") == "uci_har":
        command = f"vidrec data uci-har DIR --out {path}"
    else:
        command = f"vidrec data hapt|basicmotions|uci-har|uea|generic ... --out {path}"
    return f"{path} not found, create it with `{command}`"


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps the last epoch when the run has no validation split.

    A final model trained on every training subject (``val_fraction: 0``, no ``val_subjects``) has no ``val/acc``
    to pick a best epoch by, so the monitor is dropped for that run: the checkpoint of the last epoch is kept as
    ``epochNNN.ckpt`` (and ``last.ckpt``), with no missing-metric warning. A data module says so with
    ``has_validation`` (read after its ``setup``); others keep the configured monitor.

    ``last.ckpt`` is rewritten at every save point (each validation end, or training epoch end without validation),
    so it always holds the last epoch: Lightning 2.6 rewrites it only when a new top-k checkpoint is saved, and a
    run whose ``val/acc`` saturated at epoch 0 kept epoch 0 in ``last.ckpt`` for the whole run.
    """

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.monitor is not None and getattr(getattr(trainer, "datamodule", None), "has_validation", True) is False:
            log.info("no validation split: checkpointing the last epoch instead of the best %s", self.monitor)
            self.monitor, self.filename = None, "epoch{epoch:03d}"
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: Any) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def _save_last_now(self, trainer: Trainer) -> None:
        # skipped when nothing was trained since the last save (which then wrote last.ckpt too), in sanity checks
        # and outside fit
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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
        if config.get("enable_checkpointing", True) is False:
            # the `checkpoint` group's RunCheckpoint is always built; a run that turns checkpointing off gets none
            # (Lightning refuses a ModelCheckpoint callback with enable_checkpointing=False)
            if any(isinstance(c, ModelCheckpoint) for c in config.get("callbacks") or []):
                raise ValueError(
                    "trainer.enable_checkpointing is false but trainer.callbacks lists a ModelCheckpoint; "
                    "remove one of the two"
                )
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
            log.info("trainer.enable_checkpointing is false: no checkpoints are written (the checkpoint.* keys unused)")
        # a rich progress bar unless the run disables progress bars or brings its own
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in [*callbacks, *(config.get("callbacks") or [])]
        ):
            callbacks = [*callbacks, RichProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        data_init = getattr(config.get("data"), "init_args", None)
        data_class = str(getattr(config.get("data"), "class_path", ""))
        path = getattr(data_init, "path", None) if data_init is not None else None
        if data_class.startswith("datamodules.timeseries") and isinstance(path, str) and not Path(path).exists():
            raise DataFileMissing(missing_data_message(path))
        # One version folder shared by all loggers, so events, metrics.csv, checkpoints and reports sit together;
        # a resumed fit continues in the folder of its checkpoint.
        self.resume_step: int | None = None
        run = run_folder_of(config.get("ckpt_path")) if self.subcommand == "fit" else None
        if run is not None:
            self.resume_step = int(load_weights_only(config.ckpt_path)["global_step"])
            self.resume_metrics = metrics_before(run / "metrics.csv", self.resume_step)
            log.info("resuming in %s from global step %d", run, self.resume_step)
        loggers = config.trainer.logger
        for entry in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(entry, "init_args", None)
            if init is None or "version" not in init:
                continue
            if run is not None and "save_dir" in init and "name" in init:
                # the configured (often relative) folders when they lead to the run: the checkpoint callback's
                # restored paths (best models, last.ckpt) then match and are reused, not versioned as last-v1.ckpt
                same = Path(str(init.save_dir), str(init.name or ""), run.name).resolve() == run.resolve()
                if not same:
                    init.save_dir, init.name = str(run.parent.parent), run.parent.name
                init.version = run.name
            elif init.version is None:
                init.version = self.version

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if getattr(self, "resume_step", None) is None:
            return
        for logger in self.trainer.loggers:
            header, rows = self.resume_metrics
            if isinstance(logger, CSVLogger) and header:
                writer = logger.experiment  # starting, it deletes the metrics.csv it finds: write the kept rows back
                write_metrics(Path(writer.metrics_file_path), header, rows)
                # the kept columns, so the writer's first save extends the header instead of dropping columns
                writer.metrics_keys = sorted(header)
            elif isinstance(logger, TensorBoardLogger) and logger._experiment is None:
                # TensorBoard discards the events of the interrupted epoch (steps >= the checkpoint's)
                logger._kwargs["purge_step"] = self.resume_step


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
    # the seed is in the run's config.yaml; the first line a user sees should be about the run, not the seed
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)


_WINDOW_MODULE = "HDF5WindowDataModule"


def _config_files(args: Sequence[str]) -> list[tuple[int, str, str]]:
    """(position, option prefix, path) of each ``-c PATH`` / ``--config PATH`` / ``--config=PATH`` in ``args``."""
    found = []
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            found.append((i + 1, "", args[i + 1]))
        elif arg.startswith("--config="):
            found.append((i, "--config=", arg.split("=", 1)[1]))
    return found


def move_legacy_data_keys(args: Sequence[str]) -> list[str]:
    """``args`` with ``HDF5WindowDataModule``'s flat keys of earlier versions moved into their settings groups.

    A config file (``-c``) whose ``data.init_args`` holds flat keys (``window: 128``, as in run folders' saved
    ``config.yaml``) is passed on as the moved YAML text; ``--data.init_args.window 64`` becomes
    ``--data.init_args.windows.window 64``. Each move is reported once with the new key
    (``datamodules.timeseries.settings.LegacyKeyWarning``). Other data modules' arguments are left as they are.
    """
    import yaml

    from datamodules.timeseries.settings import LEGACY_KEYS, LegacyKeyWarning, move_legacy_keys

    out = list(args)
    data_class = ""
    moved_configs: dict[int, str] = {}
    for position, option, path in _config_files(out):
        file = Path(path)
        if not file.is_file():
            continue
        config = yaml.safe_load(file.read_text())
        data = config.get("data") if isinstance(config, dict) else None
        if not isinstance(data, dict):
            continue
        data_class = str(data.get("class_path", data_class))
        init = data.get("init_args")
        if data_class.endswith(_WINDOW_MODULE) and isinstance(init, dict) and set(init) & set(LEGACY_KEYS):
            move_legacy_keys(init, where=f"{path}: data.init_args")
            moved_configs[position] = option + yaml.safe_dump(config, sort_keys=False)
    for i, arg in enumerate(out):
        if arg in ("--data", "--data.class_path") and i + 1 < len(out):
            data_class = out[i + 1]
        elif arg.startswith(("--data=", "--data.class_path=")):
            data_class = arg.split("=", 1)[1]
    if not data_class.endswith(_WINDOW_MODULE):
        return list(args)
    for position, text in moved_configs.items():
        out[position] = text
    prefix = "--data.init_args."
    given = {arg[len(prefix) :].partition("=")[0] for arg in out if arg.startswith(prefix)}
    for i, arg in enumerate(out):
        if not arg.startswith(prefix):
            continue
        key, eq, value = arg[len(prefix) :].partition("=")
        if key in LEGACY_KEYS:
            group, name = LEGACY_KEYS[key]
            if f"{group}.{name}" in given:
                raise ValueError(f"{prefix}{key} is given twice, as {key} and as {group}.{name}; keep {group}.{name}")
            out[i] = f"{prefix}{group}.{name}{eq}{value}"
            warnings.warn(
                f"{prefix}{key} is deprecated and will be removed; use {prefix}{group}.{name}",
                LegacyKeyWarning,
                stacklevel=2,
            )
    return out


def saved_config_name(args: Sequence[str]) -> str:
    """The name a LightningCLI run saves its config under in the run folder.

    ``fit`` writes ``config.yaml``, the training config that ``vidrec test -c RUN/config.yaml`` reads back; the other
    subcommands write ``<subcommand>_config.yaml`` (a test run from a run's config logs into that run's folder, and
    must not replace the training config there).
    """
    command = args[0] if args and args[0] in LIGHTNING_COMMANDS else "fit"
    return "config.yaml" if command == "fit" else f"{command}_config.yaml"


def _lightning_main(args: Sequence[str], run: bool = True) -> VidrecCLI:
    """Run LightningCLI on ``args`` (a subcommand and its options)."""
    _quiet_run_output()
    args = move_legacy_data_keys(args)
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
            save_config_kwargs={"overwrite": True, "config_filename": saved_config_name(args)},
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
    from datamodules.flow import command as flow_command

    flow_command.add_parser(datasets)
    from datamodules.features import command as features_command

    features_command.add_data_parsers(datasets)
    from datamodules.skeleton import command as skeleton_command

    skeleton_command.add_parser(datasets)


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
        "  demo har | skeleton               prepare data, train, test and print a report\n"
        "  data DATASET ...                  convert or generate data sets (hapt, uci-har, uea, flow, ...)\n"
        "  extract-features LAYOUT ...       per-frame feature file of a video data set (TS-LSTM input)\n"
        "  stream | evaluate-streaming | export-stream   streaming inference from a checkpoint\n\n"
        "errors in data, files or settings print one line (exit status 2); VIDREC_TRACEBACK=1 shows the traceback\n"
    )


def _one_line(err: BaseException) -> str:
    """The user-facing message of an error: jsonargparse's wrapping of a constructor error is unwrapped."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if "Does not validate against any of the Union subtypes" in text and "\n  - " in text:
        text = text.split("\n  - ", 1)[1].split("\n  - ", 1)[0]  # the constructor's own message
    return text.strip()


def _user_errors() -> tuple[type[BaseException], ...]:
    from vidrec.streaming.server import SourceFailed

    # OSError covers missing files and unreadable HDF5 files (h5py raises OSError); ValueError and KeyError the
    # checks that name a file, key and expectation
    return (OSError, ValueError, KeyError, SourceFailed)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vidrec`` command; user errors end with one line on stderr and status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    try:
        if args[0] in LIGHTNING_COMMANDS:
            _lightning_main(args)
            return 0
        ns = build_extra_parser().parse_args(args)
        result = ns.func(ns)
    except _user_errors() as err:
        if os.environ.get("VIDREC_TRACEBACK"):
            raise
        print(_one_line(err), file=sys.stderr, flush=True)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
