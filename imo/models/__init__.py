"""The model zoo: small digit models, trained deterministically and exported to ONNX for proving."""

from imo.models.export import ExportedModel, cached_export, describe, export_model
from imo.models.train import TrainedModel, train
from imo.models.zoo import ZOO, ModelSpec, get_spec, param_count

__all__ = [
    "ZOO",
    "ExportedModel",
    "cached_export",
    "ModelSpec",
    "TrainedModel",
    "describe",
    "export_model",
    "get_spec",
    "param_count",
    "train",
]
