"""ONNX export of zoo models: the graph ezkl proves, the input it proves on, and a model card
recording how the model was made and that the ONNX graph computes what torch computes."""

import hashlib
import json
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from imo.errors import InvalidModelError
from imo.fsutil import atomic_dir, cache_dir
from imo.models.train import DATASET, SPLIT, probe_inputs, train
from imo.models.zoo import ModelSpec, get_spec, param_count

CALIBRATION_SAMPLES = 16
"""Held-out inputs written to calibration.json: ezkl picks scales from them, and their circuit-vs-float
error sets the tolerance a proof's output is held to."""

MAX_ABS_DIFF = 1e-5
"""Largest |torch - onnxruntime| output difference accepted: beyond float32 rounding means the
export changed the model, and proofs of the ONNX graph would not be about the trained model."""


@dataclass(frozen=True)
class ExportedModel:
    """Where export_model put its three files."""

    onnx_path: Path
    input_path: Path
    card_path: Path


def export_onnx(module: nn.Module, sample_input: np.ndarray, path: Path) -> None:
    """Export at a fixed batch of 1 with tensors named "input"/"output", the layout the proving
    steps expect, and fail here, not later in ezkl, if the graph is not valid ONNX."""
    with warnings.catch_warnings():
        # dynamo=False: the TorchScript exporter gives plain Gemm/Conv/Relu graphs at opset 17,
        # which ezkl handles; its deprecation warnings say nothing about this model.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.tensor(sample_input),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
        )
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise InvalidModelError(f"exported ONNX graph {path} is invalid: {e}") from e


def _ops(path: Path) -> dict[str, int]:
    """Count of each op type in the graph: what a circuit has to implement."""
    return dict(sorted(Counter(node.op_type for node in onnx.load(str(path)).graph.node).items()))


def _onnxruntime_max_abs_diff(
    module: nn.Module, path: Path, inputs: Iterable[np.ndarray], output_shape: tuple[int, ...]
) -> float:
    """Largest |torch(x) - onnxruntime(x)| over inputs; the ONNX outputs must have output_shape."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            (got,) = session.run(["output"], {"input": x})
            if got.shape != output_shape:
                raise InvalidModelError(f"{path} outputs {got.shape}, expected {output_shape}")
            worst = max(worst, float(np.abs(module(torch.tensor(x)).numpy() - got).max()))
    return worst


def export_model(name: str, out_dir: Path, seed: int = 0) -> ExportedModel:
    """Train zoo model `name` with `seed` and write model.onnx, input.json (ezkl's input format,
    holding the sample input), calibration.json (held-out inputs) and card.json into out_dir, all or nothing."""
    spec = get_spec(name)
    trained = train(spec, seed)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        onnx_path = tmp / "model.onnx"
        export_onnx(trained.module, trained.sample_input, onnx_path)
        inputs = [trained.sample_input, *probe_inputs(spec, seed=seed)]
        diff = _onnxruntime_max_abs_diff(trained.module, onnx_path, inputs, spec.output_shape)
        if diff > MAX_ABS_DIFF:
            raise InvalidModelError(
                f"{name}: onnxruntime output differs from torch by {diff:.2e} (limit"
                f" {MAX_ABS_DIFF:.0e}); the ONNX export does not compute the trained model"
            )
        card = {
            "name": spec.name,
            "description": spec.description,
            "kind": spec.kind,
            "dataset": DATASET,
            "split": SPLIT,
            "seed": seed,
            "params": param_count(spec),
            "ops": _ops(onnx_path),
            "input_shape": list(spec.input_shape),
            "output_shape": list(spec.output_shape),
            "metrics": trained.metrics,
            "train_seconds": round(trained.train_seconds, 3),
            "torch_version": torch.__version__,
            "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "onnxruntime_max_abs_diff": diff,
        }
        ezkl_input = {"input_data": [trained.sample_input.ravel().tolist()]}
        (tmp / "input.json").write_text(json.dumps(ezkl_input) + "\n")
        calibration = {"input_data": [probe_inputs(spec, n=CALIBRATION_SAMPLES, seed=seed).ravel().tolist()]}
        (tmp / "calibration.json").write_text(json.dumps(calibration) + "\n")
        (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return ExportedModel(out_dir / "model.onnx", out_dir / "input.json", out_dir / "card.json")


def describe(spec: ModelSpec) -> dict[str, object]:
    """What `imo models` lists. The op counts come from exporting the untrained module, so they
    are the real graph's ops without the cost of training."""
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        path = Path(tmp) / "model.onnx"
        export_onnx(spec.build(), np.zeros(spec.input_shape, np.float32), path)
        ops = _ops(path)
    return {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "input_shape": list(spec.input_shape),
        "output_shape": list(spec.output_shape),
        "params": param_count(spec),
        "ops": ops,
    }


def cached_export(name: str, seed: int = 0) -> ExportedModel:
    """The zoo model exported once into the cache (so `imo plan mlp-wide` needs no export step first)."""
    out_dir = cache_dir("zoo", f"{name}-seed{seed}")
    exported = ExportedModel(out_dir / "model.onnx", out_dir / "input.json", out_dir / "card.json")
    if not exported.card_path.is_file():
        return export_model(name, out_dir, seed)
    return exported
