"""Model zoo: every entry trains to its quality bar, exports to ONNX that onnxruntime agrees with
and that uses only provable ops, training is reproducible, and export is all-or-nothing."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import imo.models.export as export
from imo.errors import InvalidModelError, UnknownModelError
from imo.models import ZOO, ExportedModel, describe, export_model, get_spec, train

CARD_FIELDS = {
    "name", "description", "kind", "dataset", "split", "seed", "params", "ops", "input_shape",
    "output_shape", "metrics", "train_seconds", "torch_version", "onnx_sha256",
    "onnxruntime_max_abs_diff",
}  # fmt: skip
PROVABLE_OPS = {"Gemm", "Conv", "Relu", "Flatten", "Reshape", "Sigmoid"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportedModel]:
    root = tmp_path_factory.mktemp("zoo")
    return {name: export_model(name, root / name) for name in ZOO}


def _run(path: Path, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Run a batch-1 ONNX model on each row with onnxruntime; stack the outputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = rows.astype(np.float32).reshape(-1, *shape)
    return np.concatenate([session.run(["output"], {"input": row})[0] for row in rows])


@pytest.mark.parametrize("name", list(ZOO))
def test_export_is_valid_faithful_and_carded(exported: dict[str, ExportedModel], name: str) -> None:
    spec, out = get_spec(name), exported[name]
    model = onnx.load(str(out.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    card = json.loads(out.card_path.read_text())
    assert card.keys() >= CARD_FIELDS
    assert card["name"] == name and card["seed"] == 0
    assert 0 <= card["onnxruntime_max_abs_diff"] <= 1e-5
    assert card["ops"] == dict(Counter(n.op_type for n in model.graph.node))
    assert set(card["ops"]) <= PROVABLE_OPS
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    listed = describe(spec)
    assert (listed["ops"], listed["params"]) == (card["ops"], card["params"])

    (sample,) = json.loads(out.input_path.read_text())["input_data"]
    assert len(sample) == np.prod(spec.input_shape)
    output = _run(out.onnx_path, np.array([sample], np.float32), spec.input_shape)
    assert output.shape == spec.output_shape


@pytest.mark.parametrize("name", [n for n, s in ZOO.items() if s.kind == "classifier"])
def test_exported_classifier_is_accurate(exported: dict[str, ExportedModel], name: str) -> None:
    """Recomputed from the ONNX file on the documented split, not trusted from the card."""
    spec = get_spec(name)
    x, y = load_digits(return_X_y=True)
    _, x_test, _, y_test = train_test_split(x / 16, y, test_size=0.25, random_state=0, stratify=y)
    predicted = _run(exported[name].onnx_path, x_test, spec.input_shape).argmax(1)
    accuracy = (predicted == y_test).mean()
    assert accuracy >= 0.90
    card = json.loads(exported[name].card_path.read_text())
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"])


def test_exported_generator_draws_the_requested_digit(exported: dict[str, ExportedModel]) -> None:
    """The exported classifier recognises the exported generator's images of each label."""
    card = json.loads(exported["gen"].card_path.read_text())
    assert card["metrics"]["label_accuracy"] >= 0.8
    labels = np.repeat(np.arange(10), 10)
    noise = np.random.default_rng(123).standard_normal((100, 8))
    inputs = np.concatenate([np.eye(10)[labels], noise], axis=1).astype(np.float32)
    images = _run(exported["gen"].onnx_path, inputs, get_spec("gen").input_shape)
    assert images.min() >= 0 and images.max() <= 1
    predicted = _run(exported["mlp"].onnx_path, images, get_spec("mlp").input_shape).argmax(1)
    assert (predicted == labels).mean() >= 0.8


@pytest.mark.parametrize("name", list(ZOO))
def test_training_is_deterministic(
    exported: dict[str, ExportedModel], name: str, tmp_path: Path
) -> None:
    """Retraining gives byte-identical ONNX, and leaves the caller's RNG and threads alone."""
    rng, threads = torch.random.get_rng_state(), torch.get_num_threads()
    trained = train(get_spec(name), seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng) and torch.get_num_threads() == threads
    export.export_onnx(trained.module, trained.sample_input, tmp_path / "again.onnx")
    assert (tmp_path / "again.onnx").read_bytes() == exported[name].onnx_path.read_bytes()


def test_seed_changes_weights() -> None:
    a, b = (train(get_spec("mlp"), seed=s).module.state_dict() for s in (0, 1))
    assert not torch.equal(a["0.weight"], b["0.weight"])


def test_unknown_model_names_the_choices(tmp_path: Path) -> None:
    choices = "unknown model 'nope'; choose one of: mlp, cnn, mlp-wide, gen"
    with pytest.raises(UnknownModelError, match=choices):
        export_model("nope", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def _invalid_graph(*args: object, **kwargs: object) -> None:
    raise onnx.checker.ValidationError("broken on purpose")


@pytest.mark.parametrize(
    ("target", "attribute", "replacement", "message"),
    [
        (onnx.checker, "check_model", _invalid_graph, "broken on purpose"),
        (export, "_onnxruntime_max_abs_diff", lambda *args: 1.0, "differs from torch"),
    ],
    ids=["invalid-graph", "onnxruntime-mismatch"],
)
def test_failed_export_leaves_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: object,
    attribute: str,
    replacement: object,
    message: str,
) -> None:
    monkeypatch.setattr(target, attribute, replacement)
    with pytest.raises(InvalidModelError, match=message):
        export_model("mlp", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
