"""Deterministic CPU training of zoo models on scikit-learn's bundled digits, so that anyone can
rebuild a model bit for bit from its name and seed (no downloads, a few seconds each)."""

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from imo.models.zoo import NOISE_DIM, ModelSpec, get_spec

DATASET = "sklearn digits (1797 8x8 images)"
SPLIT = "train_test_split(test_size=0.25, random_state=0, stratify=y): 1347 train, 450 test"
SAMPLE_LABEL = 7
"""Label of the generator's sample input."""
SAMPLES_PER_LABEL = 10
"""Generated images per label that the judge classifier scores for `label_accuracy`."""

# (epochs, learning rate), found by hand: the smallest budgets that clear the accuracy bars.
_SCHEDULES = {"mlp": (20, 1e-2), "cnn": (30, 1e-2), "mlp-wide": (10, 1e-3), "gen": (80, 3e-3), "mlp-4k": (2, 3e-4)}
_BATCH = 64


@dataclass
class TrainedModel:
    """A trained module (eval mode) plus what the model card reports about it."""

    module: nn.Module
    metrics: dict[str, float]
    train_seconds: float
    sample_input: np.ndarray  # float32, shape spec.input_shape


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, x_test (float32 in [0,1], shape (n, 64)), y_train, y_test: the fixed split."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    parts = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    for part in parts:
        part.setflags(write=False)  # shared by every caller of this cache
    return tuple(parts)


def _generator_inputs(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Generator inputs, one row per label: one-hot label ‖ N(0,1) noise."""
    noise = rng.standard_normal((len(labels), NOISE_DIM))
    return np.concatenate([np.eye(10)[labels], noise], axis=1).astype(np.float32)


def probe_inputs(spec: ModelSpec, n: int = 32, seed: int = 0) -> np.ndarray:
    """n realistic inputs, shape (n, *spec.input_shape), to compare torch with onnxruntime on:
    held-out images for classifiers, every label with seeded noise for generators."""
    if spec.kind == "generator":
        rows = _generator_inputs(np.arange(n) % 10, np.random.default_rng([seed, 2]))
    else:
        rows = _digits()[1][:n]
    return rows.reshape(n, *spec.input_shape)


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch, force one thread and deterministic kernels (thread count changes float
    reduction order), then restore the caller's RNG and settings."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(strict)


def _batches(n: int, epochs: int) -> Iterator[torch.Tensor]:
    """Shuffled minibatch indices, drawn from torch's (seeded) global RNG."""
    for _ in range(epochs):
        yield from torch.randperm(n).split(_BATCH)


def _fit_classifier(spec: ModelSpec) -> tuple[nn.Module, float]:
    """Train with cross-entropy on logits; return the eval-mode module and its test accuracy.
    Label smoothing keeps logits small (|logit| < ~8 instead of ~50): float32 rounding then stays
    well inside MAX_ABS_DIFF against onnxruntime, and ezkl needs fewer bits for the ranges."""
    x_train, x_test, y_train, y_test = (torch.tensor(a) for a in _digits())
    shape = (-1, *spec.input_shape[1:])
    x_train, x_test = x_train.reshape(shape), x_test.reshape(shape)
    epochs, lr = _SCHEDULES[spec.name]
    module = spec.build()
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    for idx in _batches(len(x_train), epochs):
        optimizer.zero_grad()
        F.cross_entropy(module(x_train[idx]), y_train[idx], label_smoothing=0.1).backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        accuracy = (module(x_test).argmax(1) == y_test).double().mean().item()
    return module, accuracy


def _fit_generator(spec: ModelSpec, seed: int) -> tuple[nn.Module, dict[str, float]]:
    """Train the spec's module as the decoder of a conditional VAE (BCE + KL), so that decoding
    z ~ N(0,1) gives a digit of the requested label. Quality check that can fail: the `mlp`
    classifier, trained here with the same seed, must recognise the label of generated images."""
    x_train, _, y_train, _ = (torch.tensor(a) for a in _digits())
    labels = F.one_hot(y_train, 10).float()
    decoder = spec.build()
    encoder = nn.Sequential(nn.Linear(64 + 10, 64), nn.ReLU(), nn.Linear(64, 2 * NOISE_DIM))
    epochs, lr = _SCHEDULES[spec.name]
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    for idx in _batches(len(x_train), epochs):
        x, c = x_train[idx], labels[idx]
        mu, logvar = encoder(torch.cat([x, c], 1)).chunk(2, 1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        reconstruction = F.binary_cross_entropy(decoder(torch.cat([c, z], 1)), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        optimizer.zero_grad()
        ((reconstruction + kl) / len(idx)).backward()
        optimizer.step()
    decoder.eval()
    with _deterministic(seed):  # fresh RNG: the judge is exactly the zoo's `mlp` for this seed
        judge, judge_accuracy = _fit_classifier(get_spec("mlp"))
    wanted = np.repeat(np.arange(10), SAMPLES_PER_LABEL)
    inputs = torch.tensor(_generator_inputs(wanted, np.random.default_rng([seed, 1])))
    with torch.no_grad():
        predicted = judge(decoder(inputs)).argmax(1).numpy()
    return decoder, {
        "label_accuracy": float((predicted == wanted).mean()),
        "judge_test_accuracy": judge_accuracy,
    }


def train(spec: ModelSpec, seed: int = 0) -> TrainedModel:
    """Train a zoo model deterministically: the same spec and seed give the same weights."""
    start = time.perf_counter()
    with _deterministic(seed):
        if spec.kind == "generator":
            module, metrics = _fit_generator(spec, seed)
            sample = _generator_inputs(np.array([SAMPLE_LABEL]), np.random.default_rng(seed))
        else:
            module, accuracy = _fit_classifier(spec)
            metrics = {"test_accuracy": accuracy}
            sample = _digits()[1][:1]
    seconds = time.perf_counter() - start
    return TrainedModel(module, metrics, seconds, sample.reshape(spec.input_shape).copy())
