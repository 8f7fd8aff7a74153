"""Stateful execution of streamable vidrec models: runtime, live sources, serving, evaluation and ONNX export."""

from vidrec.streaming.approximate import (
    DeviationReport,
    approximate_model_streaming,
    approximate_streaming,
    measure_deviation,
)
from vidrec.streaming.evaluation import evaluate_streaming, write_report
from vidrec.streaming.export import export_streaming_onnx
from vidrec.streaming.numpy_step import NumpyStreamStep
from vidrec.streaming.optimize import fold_batchnorm
from vidrec.streaming.runtime import StepBackend, StepResult, StreamingClassifier, to_streaming
from vidrec.streaming.server import Prediction, StreamMultiplexer, serve

__all__ = [
    "DeviationReport",
    "NumpyStreamStep",
    "Prediction",
    "StepBackend",
    "StepResult",
    "StreamMultiplexer",
    "StreamingClassifier",
    "approximate_model_streaming",
    "approximate_streaming",
    "evaluate_streaming",
    "export_streaming_onnx",
    "fold_batchnorm",
    "measure_deviation",
    "serve",
    "to_streaming",
    "write_report",
]
