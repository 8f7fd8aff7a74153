"""Model families, one file each; importing this package registers every builder."""

from vidrec.models import (  # noqa: F401  (registers builders)
    fusionactnet,
    minirocket,
    p3d,
    r2plus1d,
    reference,
    resnet1d,
    skeleton,
    temporal_inception,
    ts_lstm,
    two_stream,
)
from vidrec.models._base import StreamableClassifier
from vidrec.models._registry import (
    Modality,
    ModelInfo,
    StreamMode,
    build_model,
    get_model_builder,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "Modality",
    "ModelInfo",
    "StreamMode",
    "StreamableClassifier",
    "build_model",
    "get_model_builder",
    "list_models",
    "model_info",
    "register_model",
]
