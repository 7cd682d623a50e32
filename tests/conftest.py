"""Shared fixtures: real parts (anvil, an exported and proven zoo model) started once per session and cleaned up."""

from pathlib import Path

import pytest

from imo.pipeline.chain import anvil


@pytest.fixture(scope="session")
def chain():
    """A real anvil on a free 127.0.0.1 port, stopped after the session."""
    with anvil() as local:
        yield local


@pytest.fixture(scope="session")
def exported_mlp(tmp_path_factory) -> Path:
    from imo.models import export_model

    return export_model("mlp", tmp_path_factory.mktemp("zoo") / "mlp").onnx_path.parent


@pytest.fixture(scope="session")
def proved_mlp(exported_mlp, tmp_path_factory) -> Path:
    """The mlp proven monolithically with the CLI's code path; returns the proof directory."""
    from imo.pipeline.slice import prove_model

    out = tmp_path_factory.mktemp("proofs") / "mlp"
    prove_model(exported_mlp / "model.onnx", exported_mlp / "input.json", out, calibration_path=exported_mlp / "calibration.json", quiet=True)
    return out
