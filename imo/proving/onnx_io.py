"""Reading and checking the two user inputs of a proof: an ONNX model and an ezkl-format input JSON."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from imo.errors import InputShapeError, InvalidModelError, MissingArtifactError


@dataclass(frozen=True)
class ModelSignature:
    input_name: str
    input_shape: tuple[int, ...]
    output_shapes: tuple[tuple[int, ...], ...]


def load_model(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; one clear error if it is missing, corrupt, or has dynamic input dims."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"ONNX model {path} not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidModelError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    return model


def signature(model: onnx.ModelProto) -> ModelSignature:
    """The single fixed-shape input and the outputs; dynamic dims are refused because a circuit has fixed size."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InvalidModelError(f"model has {len(inputs)} inputs; imo proves models with exactly one input tensor")

    def shape(value_info) -> tuple[int, ...]:
        dims = value_info.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            raise InvalidModelError(f"tensor '{value_info.name}' has a dynamic shape; export the model with a fixed shape (batch 1)")
        return tuple(d.dim_value for d in dims)

    return ModelSignature(inputs[0].name, shape(inputs[0]), tuple(shape(o) for o in model.graph.output))


def load_input(path: Path, sig: ModelSignature) -> np.ndarray:
    """Read ezkl's input JSON ({"input_data": [[floats]]}) and reshape it to the model input, or say why it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"input file {path} not found")
    try:
        values = np.asarray(json.loads(path.read_text())["input_data"][0], dtype=np.float32)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputShapeError(f'{path} is not an ezkl input file ({{"input_data": [[...]]}}): {exc}') from None
    expected = int(np.prod(sig.input_shape))
    if values.ndim != 1 or values.size != expected:
        raise InputShapeError(f"{path} has {values.size} values but input '{sig.input_name}' has shape {list(sig.input_shape)} ({expected} values)")
    if not np.all(np.isfinite(values)):
        raise InputShapeError(f"{path} contains NaN or infinite values")
    return values.reshape(sig.input_shape)


def load_batch(path: Path, sig: ModelSignature) -> np.ndarray:
    """N inputs concatenated in ezkl's input format (a calibration file) as an array (N, *input_shape)."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"calibration file {path} not found; pass --calibration FILE (N inputs concatenated in ezkl's input format)")
    try:
        values = np.asarray(json.loads(path.read_text())["input_data"][0], dtype=np.float32)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputShapeError(f'{path} is not an ezkl input file ({{"input_data": [[...]]}}): {exc}') from None
    size = int(np.prod(sig.input_shape))
    if values.size == 0 or values.size % size:
        raise InputShapeError(f"{path} has {values.size} values, not a multiple of the input size {size} of shape {list(sig.input_shape)}")
    return values.reshape(-1, *sig.input_shape)


def run_onnxruntime(model_path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Float reference outputs."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    return session.run(None, {first.name: x.astype(np.int64 if first.type == "tensor(int64)" else np.float32)})
