"""Training code: LightningModules that receive a model, an optimizer and a scheduler."""

from vidrec.tasks.checkpoint import LoadedClassifier, load_checkpoint
from vidrec.tasks.classification import Classification

__all__ = ["Classification", "LoadedClassifier", "load_checkpoint"]
