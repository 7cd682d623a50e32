"""The bisection game's transformer step kinds (MATMUL, SUM, MAX, DIVC, RECIP, SQRT, REPEAT, GATHER): the zoo's `gpt`
architecture (a byte-level pre-LN decoder: embedding Gather, LayerNorm, MatMul of two activations, Softmax, GELU) as a
step program whose trace is bit-exact with the canonical executor and whose every step equals its reference
semantics (`trace_codec.evaluate_step`); the f64 formulas the executor uses (sqrt, reciprocal) equal the steps' exact
integer formulas on their whole domain; StepVerifier.sol computes what `evaluate_step` computes (random and edge
cases) and recomputes every step of an honest gpt trace on chain, each one-step check far below 5M gas."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from eth_utils import keccak
from onnx import TensorProto, helper, numpy_helper

from imo.circuits.fixed_point import FixedPointProgram, quantize, round_half_away
from imo.models.gpt import GPT, GPTConfig, export_gpt_onnx, window
from imo.pipeline.generate import executor_settings
from imo.proving.protocol import pack_tensor
from imo.proving.trace import MAX_STEP_SLICES, NotBisectable, StepProgram
from imo.proving.trace_codec import (
    TRANSFORMER_KINDS,
    ZERO,
    Slice,
    Step,
    StepKind,
    TraceDataError,
    evaluate_step,
    int_pack,
    round_half_away_div,
    sqrt_f64_round,
)

K = StepKind
I64 = (-(1 << 63), (1 << 63) - 1)
MAX_TX_GAS = 5_000_000


def gpt_settings(lookup_range=(-(1 << 16), 1 << 16), logrows=17) -> dict:
    """The executor's gpt settings (`executor_settings`) with a lookup table range, as a compiled circuit has one."""
    s = executor_settings()
    s["run_args"].update({"lookup_range": list(lookup_range), "logrows": logrows})
    return s


def export_gpt(path: Path, cfg: GPTConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = GPT(cfg)
    export_gpt_onnx(model, path, external=False)
    return path


TINY = GPTConfig(n_layer=1, d_model=32, n_head=2, vocab=256, context=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    path = export_gpt(tmp_path_factory.mktemp("gpt") / "tiny.onnx", TINY)
    program = StepProgram.build(path, gpt_settings())
    return SimpleNamespace(path=path, program=program, fp=FixedPointProgram(path, gpt_settings()))


def texts(context: int) -> list[bytes]:
    return [b"hello world", b"ab", bytes(range(60, 60 + context)), b"The for statement", b"\x00\xff" * context]


def check_every_step(program: StepProgram, trace, x) -> None:
    for i in range(program.n_steps):
        assert program.evaluate(trace, i, x) == trace.values[i].tolist(), f"step {i} ({program.steps[i].kind.name})"


# ------------------------------------------------------------------ the executor's f64 formulas are exact integers


def executor_sqrt(a: np.ndarray, s: int) -> np.ndarray:
    m = 2.0**s
    with np.errstate(invalid="ignore"):
        f = m * np.sqrt(np.asarray(a, dtype=np.float64) / m)
    return np.nan_to_num(round_half_away(f), nan=0.0)


def test_sqrt_step_is_the_executors_f64_sqrt_bit_for_bit():
    """Random int64 inputs at every magnitude, and the hard cases: sqrt(a * 2^s) next to a half-integer (where the
    exact rounding and the f64 one differ), both sides of it."""
    rng = np.random.default_rng(0)
    cases = []
    for s in (0, 1, 7, 10, 11, 33, 64):
        for bits in (3, 10, 20, 30, 40, 50, 53, 54, 60, 63):
            cases.append((s, rng.integers(-(1 << (bits - 2)), (1 << bits) - 1, 400, dtype=np.int64)))
        q = rng.integers(1 << 20, 1 << 31, 1500, dtype=np.int64)
        if s <= 1:
            for d in (-1, 0, 1):
                cases.append((s, ((q * q + q) >> s) + d))
    differs_from_exact = 0
    for s, a in cases:
        want = executor_sqrt(a, s)
        for x, y in zip(a.tolist(), want.tolist()):
            if y >= 2.0**63:
                continue
            assert sqrt_f64_round(x, s) == int(y), (x, s)
            from math import isqrt
            if x > 0:
                r = isqrt(x << s)
                differs_from_exact += r + ((x << s) > r * r + r) != int(y)
    assert differs_from_exact > 0  # the f64 formula is not the exactly rounded root: the emulation is needed


def test_recip_step_is_the_executors_f64_reciprocal():
    """round(m_out * (1 / (d / m_in))) in f64 == round_half_away(2^(s_in + s_out) / d) exactly, for every int64 d
    (power-of-two numerators below 2^52; a whole range of small d and random ones of every magnitude)."""
    rng = np.random.default_rng(1)
    for s_in, s_out in ((10, 10), (7, 7), (0, 12), (20, 31)):
        m_in, m_out = 2.0**s_in, 2.0**s_out
        d = np.concatenate([np.arange(-(1 << 17), 1 << 17), rng.integers(I64[0], I64[1], 20000, dtype=np.int64),
                            (rng.integers(1, 1 << 40, 5000) * 2 + 1) << rng.integers(0, 20, 5000)]).astype(np.int64)
        d = d[d != 0]
        r = d.astype(np.float64) / m_in
        want = round_half_away(m_out * (1.0 / r))
        num = 1 << (s_in + s_out)
        got = [round_half_away_div(num, int(x)) for x in d[:: max(1, d.size // 40000)]]
        assert got == [int(v) for v in want[:: max(1, d.size // 40000)]]


# ------------------------------------------------------------------ a transformer block as a step program


def test_tiny_gpt_trace_is_the_executor_and_every_step_its_reference(tiny):
    program = tiny.program
    kinds = {s.kind for s in program.steps}
    assert TRANSFORMER_KINDS <= kinds, TRANSFORMER_KINDS - kinds
    assert all(len([s for op in st.operands for s in op]) <= MAX_STEP_SLICES for st in program.steps)
    for text in texts(TINY.context):
        x = window(text, TINY.context)
        trace = program.execute(x)
        assert np.array_equal(trace.output, tiny.fp.run(x)[0].ravel()), text
        assert trace.poisoned == []
        check_every_step(program, trace, x)


def test_tiny_gpt_one_step_witnesses_recompute(tiny):
    program = tiny.program
    x = window(b"The for", TINY.context)
    honest = program.execute(x)
    inb, outb = pack_tensor(x), pack_tensor(honest.output)
    for i in range(program.n_steps):
        w = program.one_step(honest, i, inb, outb)
        assert w.recompute(program.root, honest.root, keccak(w.boundary) if w.boundary else None) == honest.leaves[i]
    # a tampered embedding row: the GATHER step recomputes the honest leaf, not the liar's
    g = next(i for i, s in enumerate(program.steps) if s.kind == K.GATHER)
    liar = program.execute(x, tamper=lambda i, v: v + (i == g))
    w = program.one_step(liar, g, inb, outb, values=honest)
    assert w.recompute(program.root, liar.root) == honest.leaves[g] != liar.leaves[g]
    bad = program.one_step(honest, g, inb, outb)
    bad.table_values[0] += 1
    with pytest.raises(TraceDataError, match="table row"):
        bad.recompute(program.root, honest.root)
    short = program.one_step(honest, g, inb, outb)
    short.table_proofs[0] = short.table_proofs[0][1:]  # a proof of an inner node, not of a row
    with pytest.raises(TraceDataError, match="table row"):
        short.recompute(program.root, honest.root)


def test_small_gpt_with_two_blocks_and_four_heads_is_bit_exact(tmp_path):
    cfg = GPTConfig(n_layer=2, d_model=64, n_head=4, vocab=256, context=32)
    path = export_gpt(tmp_path / "small.onnx", cfg, seed=3)
    program = StepProgram.build(path, gpt_settings())
    fp = FixedPointProgram(path, gpt_settings())
    for text in texts(cfg.context)[:3]:
        x = window(text, cfg.context)
        trace = program.execute(x)
        assert np.array_equal(trace.output, fp.run(x)[0].ravel())
    check_every_step(program, trace, x)


def test_an_out_of_range_token_poisons_its_gather_step(tiny):
    x = window(b"abc", TINY.context)
    x[0, 3] = 256  # no such row: the executor refuses it, the trace has no valid GATHER output there
    trace = tiny.program.execute(x)
    assert trace.poisoned and all(tiny.program.steps[i].kind == K.GATHER for i in trace.poisoned)
    with pytest.raises(TraceDataError, match="GATHER"):
        tiny.program.evaluate(trace, trace.poisoned[0], x)


# ------------------------------------------------------------------ single ops


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _settings(scale=7):
    return {"run_args": {"input_scale": scale, "param_scale": scale, "scale_rebase_multiplier": 1, "decomp_base": 16384,
                         "decomp_legs": 3, "lookup_range": [-(1 << 15), 1 << 15], "logrows": 16}}


@pytest.mark.parametrize("name", ["softmax_axis1", "layernorm_affine", "batched_matmul_broadcast", "reduce_sum_mean",
                                  "sqrt_reciprocal", "div_by_activation", "global_average_pool"])
def test_single_transformer_ops_are_bit_exact(name):
    rng = np.random.default_rng(7)
    c = lambda n, a: numpy_helper.from_array(np.asarray(a, dtype=np.float32), n)  # noqa: E731
    if name == "softmax_axis1":
        m = _model([helper.make_node("Softmax", ["input"], ["output"], axis=1)], [_vi("input", [2, 5, 3])], [_vi("output", [2, 5, 3])])
        shape = (2, 5, 3)
    elif name == "layernorm_affine":
        m = _model([helper.make_node("LayerNormalization", ["input", "g", "b"], ["output"], axis=-1)],
                   [_vi("input", [3, 12])], [_vi("output", [3, 12])], [c("g", rng.normal(1, 0.2, 12)), c("b", rng.normal(0, 0.2, 12))])
        shape = (3, 12)
    elif name == "batched_matmul_broadcast":
        m = _model([helper.make_node("Mul", ["input", "k"], ["y"]),
                    helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1]),
                    helper.make_node("MatMul", ["input", "yt"], ["s"]),
                    helper.make_node("MatMul", ["s", "input"], ["output"])],
                   [_vi("input", [3, 6, 4])], [_vi("output", [3, 6, 4])], [c("k", rng.normal(0, 1, (1, 1, 4)))])
        shape = (3, 6, 4)
    elif name == "reduce_sum_mean":
        axes = numpy_helper.from_array(np.array([1], np.int64), "ax")
        m = _model([helper.make_node("ReduceSum", ["input", "ax"], ["s"], keepdims=1),
                    helper.make_node("ReduceMean", ["input"], ["mu"], axes=[2], keepdims=1),
                    helper.make_node("Add", ["input", "s"], ["t"]), helper.make_node("Sub", ["t", "mu"], ["output"])],
                   [_vi("input", [2, 3, 5])], [_vi("output", [2, 3, 5])], [axes])
        shape = (2, 3, 5)
    elif name == "sqrt_reciprocal":
        m = _model([helper.make_node("Mul", ["input", "input"], ["sq"]), helper.make_node("Add", ["sq", "one"], ["p"]),
                    helper.make_node("Sqrt", ["p"], ["r"]), helper.make_node("Reciprocal", ["r"], ["output"])],
                   [_vi("input", [4, 6])], [_vi("output", [4, 6])], [c("one", [1.0])])
        shape = (4, 6)
    elif name == "global_average_pool":
        m = _model([helper.make_node("GlobalAveragePool", ["input"], ["output"])], [_vi("input", [1, 3, 4, 5])],
                   [_vi("output", [1, 3, 1, 1])])
        shape = (1, 3, 4, 5)
    else:
        m = _model([helper.make_node("Mul", ["input", "input"], ["sq"]), helper.make_node("Add", ["sq", "one"], ["p"]),
                    helper.make_node("Div", ["input", "p"], ["output"])],
                   [_vi("input", [4, 6])], [_vi("output", [4, 6])], [c("one", [0.5])])
        shape = (4, 6)
    program = StepProgram.build(m, _settings())
    fp = FixedPointProgram(m, _settings())
    for seed in range(3):
        x = quantize(np.random.default_rng(seed).uniform(-2, 2, shape), 7)
        trace = program.execute(x)
        assert np.array_equal(trace.output, fp.run(x)[0].ravel())
        check_every_step(program, trace, x)


def test_what_stays_not_bisectable():
    """Conv, pooling, Where and the like still have no one-step check (named in the refusal)."""
    m = _model([helper.make_node("MaxPool", ["input"], ["output"], kernel_shape=[2, 2])], [_vi("input", [1, 1, 4, 4])],
               [_vi("output", [1, 1, 3, 3])])
    with pytest.raises(NotBisectable, match="MaxPool"):
        StepProgram.build(m, _settings())


# ------------------------------------------------------------------ StepVerifier == evaluate_step (anvil)


@pytest.fixture(scope="module")
def verifier(chain):
    from helpers import compile_with_test_contracts, funded_accounts

    from imo.verifier_contracts.evm import deploy

    (deployer,) = funded_accounts(chain.w3, 1, wei=10**20)
    contract, _ = deploy(chain.w3, compile_with_test_contracts()["StepVerifier"], deployer)
    return contract


def py_result(step: Step, ops, table) -> bytes | None:
    try:
        return int_pack(evaluate_step(step, ops, None, None, table))
    except TraceDataError:
        return None


def chain_result(verifier, step: Step, ops, table_values) -> bytes | None:
    valid, packed = verifier.functions.evaluate(step.abi_tuple(), ops, b"", b"", table_values).call()
    return bytes(packed) if valid else None


def values(rng: random.Random, n: int, big: bool = True) -> list[int]:
    pool = [0, 1, -1, 2, 127, -128, 32768, -(1 << 31), (1 << 40) + 3, -(1 << 52) - 1, (1 << 53) + 1]
    if big:
        pool += [I64[0], I64[1], (1 << 62) + 5, -(1 << 62)]
    return [rng.choice(pool) if rng.random() < 0.3 else rng.randint(-3000, 3000) for _ in range(n)]


def random_transformer_case(rng: random.Random):
    """(step, operands, table rows or None, table values for the chain): a random new kind, often malformed."""
    kind = rng.choice(sorted(TRANSFORMER_KINDS))
    jitter = rng.choice([0, 0, 0, 1, -1])
    if kind == K.MATMUL:
        kk, tt = rng.randint(0, 5), rng.randint(0, 4)
        a = values(rng, kk + (rng.random() < 0.1), big=rng.random() < 0.3)
        b = values(rng, kk * tt + (rng.random() < 0.1), big=rng.random() < 0.3)
        step = Step(kind, ((Slice(0, 0, len(a)),), (Slice(0, 0, len(b)),)), (kk, tt), ZERO, max(tt + jitter, 0))
        return step, [a, b], None, []
    if kind in (K.SUM, K.MAX):
        ll, rows = rng.choice([1, 2, 3, 7]), rng.randint(0, 4)
        a = values(rng, ll * rows + (rng.random() < 0.1))
        return Step(kind, ((Slice(0, 0, len(a)),),), (rng.choice([ll, ll, ll, 0, -1]),), ZERO, max(rows + jitter, 0)), [a], None, []
    if kind in (K.DIVC, K.RECIP):
        a = values(rng, rng.randint(0, 8))
        c = rng.choice([1, 2, 3, 7, 768, 1 << 20, (1 << 127) + 1, 0, -5, 1 << 128])
        params = (c,) if kind == K.DIVC else (c, rng.choice([1 << 62, 5, 1 << 63, -(1 << 70)]))
        if kind == K.RECIP and rng.random() < 0.5:
            a = [0 if rng.random() < 0.3 else v for v in a]
        return Step(kind, ((Slice(0, 0, len(a)),),), params, ZERO, max(len(a) + jitter, 0)), [a], None, []
    if kind == K.SQRT:
        a = values(rng, rng.randint(0, 8))
        a = [rng.choice([v, (q := rng.randint(1 << 20, 1 << 31)) * q + q, rng.randint(0, 1 << 62)]) for v in a]
        s = rng.choice([0, 1, 7, 10, 11, 64, 65, -1])
        return Step(kind, ((Slice(0, 0, len(a)),),), (s,), ZERO, max(len(a) + jitter, 0)), [a], None, []
    if kind == K.REPEAT:
        ll = rng.choice([1, 2, 5, 0])
        off = rng.choice([0, 1, 3, -1]) if ll else 0
        n = rng.randint(0, 9)
        cnt = ((off + n - 1) // ll + 1 if n else 0) if ll >= 1 and 0 <= off < ll else rng.randint(0, 3)
        a = values(rng, max(cnt + (rng.random() < 0.15) * rng.choice([1, -1]), 0))
        return Step(kind, ((Slice(0, 0, len(a)),),), (ll, off), ZERO, n), [a], None, []
    vv, dd = rng.randint(1, 6), rng.choice([0, 1, 3])
    rows = [values(rng, dd) for _ in range(vv)]
    idx = [rng.randrange(vv) if rng.random() < 0.9 else rng.choice([-1, vv]) for _ in range(rng.randint(0, 4))]
    n = len(idx) * dd + (jitter if rng.random() < 0.2 else 0)
    tv = [v for i in idx for v in rows[i]] if all(0 <= i < vv for i in idx) else []
    return Step(kind, ((Slice(0, 0, len(idx)),),), (vv, dd), ZERO, max(n, 0)), [idx], (lambda j: rows[j]), tv


def test_step_verifier_agrees_with_evaluate_step_on_the_transformer_kinds(verifier):
    rng = random.Random(99)
    seen = {k: [0, 0] for k in TRANSFORMER_KINDS}
    for _ in range(500):
        step, ops, table, tv = random_transformer_case(rng)
        want = py_result(step, ops, table)
        if step.kind == K.GATHER and want is not None:
            assert tv == json.loads(json.dumps(tv))
        got = chain_result(verifier, step, ops, tv)
        assert got == want, (step, ops, tv, got, want)
        seen[step.kind][want is None] += 1
    assert all(v > 0 and i > 0 for v, i in seen.values()), seen


def test_step_verifier_recomputes_every_step_of_a_gpt_trace(verifier, tiny):
    """leafOf of every step of an honest trace of the one-block gpt is its leaf; gas of the largest step per kind."""
    program = tiny.program
    x = window(b"The for statement", TINY.context)
    honest = program.execute(x)
    inb, outb = pack_tensor(x), pack_tensor(honest.output)
    gas: dict[str, int] = {}
    for i in range(program.n_steps):
        w = program.one_step(honest, i, inb, outb)
        ctx = (i, program.depth, program.root, honest.root, keccak(inb), keccak(outb))
        fn = verifier.functions.leafOf(w.abi_tuple(), ctx)
        valid, leaf = fn.call()
        assert valid and bytes(leaf) == honest.leaves[i], (i, program.steps[i].kind)
        name = program.steps[i].kind.name
        if program.steps[i].kind in TRANSFORMER_KINDS:
            gas[name] = max(gas.get(name, 0), fn.estimate_gas())
    g = next(i for i, s in enumerate(program.steps) if s.kind == K.GATHER)
    ctx = (g, program.depth, program.root, honest.root, keccak(inb), keccak(outb))
    for field, change in (("table_proofs", lambda w: w.table_proofs.__setitem__(0, w.table_proofs[0][1:])),
                          ("table_values", lambda w: w.table_values.__setitem__(0, w.table_values[0] + 1))):
        w = program.one_step(honest, g, inb, outb)
        change(w)
        with pytest.raises(Exception, match=keccak(text="StepTableMismatch(uint256)")[:4].hex()):  # the custom error
            verifier.functions.leafOf(w.abi_tuple(), ctx).call()
    print("\none-step gas (tiny gpt, largest per kind):", gas)
    assert set(gas) == {k.name for k in TRANSFORMER_KINDS} and max(gas.values()) <= MAX_TX_GAS
