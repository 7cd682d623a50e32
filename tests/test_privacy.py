"""A private input behind an op segment is not private: the attack, and the planner's warning.

An op segment's input boundary is published with every claim (challengers re-execute it). In mlp-wide's hybrid plan
(the input layer zk, the rest op) that boundary is h = relu(W x + b), 512 values for 64 input values. The weights are
private (the zk segment's ONNX is the operator's), but anyone can buy them: request chosen inputs, read h off the
claims, fit each hidden unit on the requests where it is active. Then any other user's x follows from their h by
least squares over the active units. This test runs exactly that on the canonical executor (what the oracle publishes)."""

import numpy as np
import pytest

from imo.circuits.cost import model_cost
from imo.circuits.fixed_point import FixedPointProgram, quantize
from imo.circuits.plan import make_plan
from imo.models import cached_export
from imo.pipeline.cli import main
from imo.proving import onnx_io


def _published_boundary(name: str):
    """The plan's first op segment's input as the oracle publishes it, as a function of the private input."""
    exported = cached_export(name)
    plan, graph = make_plan(exported.onnx_path, private_input=True, budget_logrows=1)
    assert plan.segments[0].mode == "zk" and plan.segments[1].mode == "op"
    zk = graph.sub_model([plan.segments[0].input], [plan.segments[0].output])
    program = FixedPointProgram(zk, model_cost(zk, plan.scale).settings)
    sig = onnx_io.signature(onnx_io.load_model(exported.onnx_path))
    return plan, lambda x: np.asarray(program(quantize(x.reshape(sig.input_shape), plan.scale))[0], dtype=np.float64).ravel(), sig, exported


def test_chosen_requests_recover_a_private_input_from_the_published_boundary():
    plan, publish, sig, exported = _published_boundary("mlp-wide")
    victims = onnx_io.load_batch(exported.onnx_path.with_name("calibration.json"), sig)[:4]
    rng = np.random.default_rng(7)
    lo, hi = float(victims.min()), float(victims.max())
    chosen = rng.uniform(lo, hi, size=(200, *sig.input_shape[1:]))  # the attacker's own paid requests
    q = np.stack([quantize(x, plan.scale).ravel() for x in chosen]).astype(np.float64)
    h = np.stack([publish(x) for x in chosen])
    design = np.hstack([q, np.ones((len(q), 1))])
    weights = np.zeros((h.shape[1], design.shape[1]))
    fitted = np.zeros(h.shape[1], dtype=bool)
    for j in range(h.shape[1]):  # unit j is linear in the input wherever it is active
        active = h[:, j] > 0
        if active.sum() > design.shape[1] + 8:
            weights[j] = np.linalg.lstsq(design[active], h[active, j], rcond=None)[0]
            fitted[j] = True
    for victim in victims:
        seen = publish(victim)
        rows = fitted & (seen > 0)
        assert rows.sum() >= q.shape[1]  # more equations than unknowns
        recovered = np.linalg.lstsq(weights[rows, :-1], seen[rows] - weights[rows, -1], rcond=None)[0] / 2**plan.scale
        error = np.abs(recovered - victim.ravel())
        assert error.max() < 0.02 * (hi - lo), f"recovered the input only to {error.max():.3f} (range {hi - lo:.1f})"


@pytest.mark.parametrize("name, exposed", [("mlp-wide", True), ("cnn", True), ("mlp", False)])
def test_the_planner_warns_when_a_published_boundary_can_determine_the_private_input(name, exposed, capsys):
    assert main(["plan", name, "--private-input", "--budget-logrows", "1"]) == 0
    err = capsys.readouterr().err
    assert ("warning: the private input" in err and "is not private in this plan" in err) == exposed
    assert main(["plan", name, "--private-input"]) == 0  # fully zk: only the result is published
    assert "warning" not in capsys.readouterr().err
