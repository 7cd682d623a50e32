"""The model zoo: small digit models whose ONNX graphs use only ops ezkl proves cheaply
(Gemm, Conv, Relu, Flatten, Sigmoid), so every entry can go through the whole pipeline."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from imo.errors import UnknownModelError

NOISE_DIM = 8
"""Length of the generator's noise vector; its input is one-hot label (10) ‖ noise."""


@dataclass(frozen=True)
class ModelSpec:
    """What a zoo entry is, without training it: enough to list, build and export it."""

    name: str
    description: str
    kind: str  # "classifier" | "generator"
    input_shape: tuple[int, ...]  # with batch dim 1
    output_shape: tuple[int, ...]
    build: Callable[[], nn.Module]  # untrained module


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def _mlp_wide() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def _gen() -> nn.Module:
    return nn.Sequential(
        nn.Linear(10 + NOISE_DIM, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 64),
        nn.Sigmoid(),
    )


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "mlp",
            "digit classifier, 64→32→10 MLP (logits); small enough to prove whole",
            "classifier",
            (1, 64),
            (1, 10),
            _mlp,
        ),
        ModelSpec(
            "cnn",
            "digit classifier, two 3x3 convs then a linear layer (logits), on a 1x8x8 image",
            "classifier",
            (1, 1, 8, 8),
            (1, 10),
            _cnn,
        ),
        ModelSpec(
            "mlp-wide",
            "digit classifier, 64→512→512→10 MLP (logits); big enough to need the opp/ai split",
            "classifier",
            (1, 64),
            (1, 10),
            _mlp_wide,
        ),
        ModelSpec(
            "gen",
            f"conditional digit generator (CVAE decoder): one-hot label ‖ {NOISE_DIM} N(0,1) noise "
            "values → 8x8 image in [0,1]",
            "generator",
            (1, 10 + NOISE_DIM),
            (1, 64),
            _gen,
        ),
    )
}


def _mlp_4k() -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(64, 4096), nn.ReLU()]
    for _ in range(6):
        layers += [nn.Linear(4096, 4096), nn.ReLU()]
    module = nn.Sequential(*layers, nn.Linear(4096, 10))
    for layer in module:  # He init: torch's default shrinks the signal ~6x per ReLU layer, too slow to train in 2 epochs
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return module


LARGE_ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "mlp-4k",
            "digit classifier, 64→4096 then six 4096→4096 ReLU layers →10 (logits): ~101M parameters and "
            "multiply-accumulates, an op segment far beyond a monolithic ezkl proof (dispute-game scale)",
            "classifier",
            (1, 64),
            (1, 10),
            _mlp_4k,
        ),
    )
}
"""Entries too large to train and export in the default test run (each is hundreds of MB); looked up by name like ZOO's."""


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name, failing with the list of valid names so the user can pick one."""
    try:
        return ZOO[name] if name in ZOO else LARGE_ZOO[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join([*ZOO, *LARGE_ZOO])}"
        ) from None


def param_count(spec: ModelSpec) -> int:
    """Number of trainable parameters: a first guess at how costly the model is to prove.
    Built on the meta device so it allocates nothing and leaves the global RNG alone."""
    with torch.device("meta"):
        return sum(p.numel() for p in spec.build().parameters())
