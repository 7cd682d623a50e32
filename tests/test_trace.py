"""The bisection game's step program and trace (imo/proving/trace.py, imo/proving/trace_codec.py): encodings and Merkle
proofs, the trace bit-exact with the canonical executor and every step equal to its one-step reference semantics,
consistent liars, bisection to the first lie, one-step witnesses that recompute the disputed leaf, refusals."""

from __future__ import annotations

import random
import resource
import time

import numpy as np
import onnx
import pytest
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from onnx import TensorProto, helper, numpy_helper

from imo.circuits.fixed_point import FixedPointProgram, quantize
from imo.errors import UnprovableClaimError
from imo.proving.protocol import pack_tensor
from imo.proving.trace import (
    ELEMENTWISE_CHUNK,
    LOOKUP_CHUNK,
    MAX_GEMM_MACS,
    MAX_STEP_SLICES,
    ONE_STEP_ABI,
    POISON,
    Bisection,
    NotBisectable,
    PatchedTree,
    StepProgram,
    Trace,
    step_encoding,
    table_leaves,
)
from imo.proving.trace_codec import (
    TRANSFORMER_KINDS,
    ZERO,
    MerkleTree,
    Slice,
    Step,
    StepKind,
    TraceDataError,
    int_pack,
    int_unpack,
    leaf_hash,
    merkle_verify,
    table_tree,
)


def settings(lookup_range=(-4096, 4096), logrows=12, scale=7) -> dict:
    return {"run_args": {"input_scale": scale, "param_scale": scale, "scale_rebase_multiplier": 1, "decomp_base": 16384,
                         "decomp_legs": 2, "lookup_range": list(lookup_range), "logrows": logrows}}


# ------------------------------------------------------------------ codec


def test_int_pack_round_trips_at_the_narrowest_width():
    rng = np.random.default_rng(0)
    for width, hi in ((1, 127), (2, 2**15 - 1), (4, 2**31 - 1), (8, 2**63 - 1)):
        vals = [-hi - 1, hi, 0, -1] + rng.integers(-hi - 1, hi, 20, dtype=np.int64).tolist()
        buf = int_pack(vals)
        assert buf[0] == width and len(buf) == 1 + width * len(vals)
        assert int_unpack(buf) == vals
    assert int_pack([]) == b"\x01" and int_unpack(b"\x01") == []
    for bad in (b"", b"\x03\x00\x00\x00", b"\x02\x00", b"\x02\x00\x01"):  # width 3, ragged, non-canonical (1 fits in 1)
        with pytest.raises(TraceDataError):
            int_unpack(bad)
    assert pack_tensor(np.array([300, -5])) == int_pack([300, -5])  # the claim's boundary format is int_pack's


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_merkle_proofs_verify_and_bad_ones_do_not(n):
    leaves = [keccak(bytes([i])) for i in range(n)]
    tree = MerkleTree(leaves)
    assert tree.depth == max(1, (n - 1).bit_length())
    for i, leaf in enumerate(leaves):
        proof = tree.proof(i)
        assert merkle_verify(leaf, i, proof, tree.root)
        assert not merkle_verify(leaf, i ^ 1, proof, tree.root)
        assert not merkle_verify(keccak(b"x"), i, proof, tree.root)
        assert not merkle_verify(leaf, i + (1 << len(proof)), proof, tree.root)  # an index beyond the tree
        bad = list(proof)
        bad[-1] = keccak(bad[-1])
        assert not merkle_verify(leaf, i, bad, tree.root)
        assert not merkle_verify(leaf, i, proof[:-1], tree.root)
    with pytest.raises(TraceDataError):
        tree.proof(n)


def test_fast_step_encoding_is_abi_encode():
    rng = random.Random(1)
    for _ in range(50):
        ops = tuple(tuple(Slice(rng.randrange(2**32), rng.randrange(2**32), rng.randrange(2**32)) for _ in range(rng.randrange(4)))
                    for _ in range(rng.randrange(3)))
        params = tuple(rng.randrange(-(2**255), 2**255) for _ in range(rng.randrange(3)))
        step = Step(StepKind(rng.randrange(8)), ops, params, keccak(bytes([rng.randrange(256)])), rng.randrange(2**32))
        assert step_encoding(step) == step.encode()


def test_fast_table_leaves_are_table_tree_leaves():
    vals = [0, 1, -1, 127, 128, -128, -129, 2**15, -(2**31) - 1, 2**40, 5]
    assert table_leaves(np.array(vals)) == table_tree(vals).leaves == [leaf_hash([v]) for v in vals]


# ------------------------------------------------------------------ models


def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def small_model(seed=0, k=24, h1=40, h2=33, out=7) -> onnx.ModelProto:
    """Gemm(transB) -> Sigmoid -> MatMul + Add -> Tanh -> Gemm -> Relu, Mul by a constant, x*x, act*act broadcast,
    Sub of activations, Transpose/Reshape/Flatten (views), Gemm -> output: every step kind."""
    rng = np.random.default_rng(seed)
    inits = [
        _const("w1", rng.normal(0, 1.5 / np.sqrt(k), (h1, k))), _const("b1", rng.normal(0, 0.3, h1)),
        _const("w2", rng.normal(0, 2 / np.sqrt(h1), (h1, h2))), _const("b2", rng.normal(0, 0.3, h2)),
        _const("w3", rng.normal(0, 1.5 / np.sqrt(h2), (h2, h2))), _const("b3", rng.normal(0, 0.3, h2)),
        _const("m", rng.normal(0, 1, (1, h2))), _const("w4", rng.normal(0, 1 / np.sqrt(h2), (h2, out))),
        numpy_helper.from_array(np.array([h2, 1], np.int64), "shape_col"), numpy_helper.from_array(np.array([1, h2], np.int64), "shape_row"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([1], np.int64), "s1"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["g1"], name="fc1", transB=1),
        helper.make_node("Sigmoid", ["g1"], ["a1"], name="sig"),
        helper.make_node("MatMul", ["a1", "w2"], ["g2"], name="mm2"),
        helper.make_node("Add", ["g2", "b2"], ["g2b"], name="bias2"),
        helper.make_node("Tanh", ["g2b"], ["a2"], name="tanh"),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["g3"], name="fc3"),
        helper.make_node("Relu", ["g3"], ["a3"], name="relu"),
        helper.make_node("Mul", ["a3", "m"], ["p"], name="scale"),
        helper.make_node("Mul", ["a2", "a2"], ["sq"], name="square"),
        helper.make_node("Sub", ["p", "sq"], ["d"], name="diff"),
        helper.make_node("Slice", ["a3", "s0", "s1", "ax1"], ["first"], name="pick"),
        helper.make_node("Mul", ["d", "first"], ["e"], name="bcast"),
        helper.make_node("Add", ["e", "a2"], ["r"], name="residual"),
        helper.make_node("Transpose", ["r"], ["rt"], name="tr", perm=[1, 0]),
        helper.make_node("Reshape", ["rt", "shape_row"], ["rr"], name="back"),
        helper.make_node("Flatten", ["rr"], ["rf"], name="flat"),
        helper.make_node("Gemm", ["rf", "w4"], ["output"], name="fc4"),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def single_op_model(op: str, **attrs) -> onnx.ModelProto:
    if op == "Conv":
        node = helper.make_node("Conv", ["input", "w"], ["output"], name="the_conv", pads=[1, 1, 1, 1])
        inits, in_shape, out_shape = [_const("w", np.ones((2, 1, 3, 3)))], [1, 1, 4, 4], [1, 2, 4, 4]
    else:
        node = helper.make_node(op, ["input"], ["output"], name=f"the_{op.lower()}", **attrs)
        inits, in_shape, out_shape = [], [1, 6], [1, 6]
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def descendants(program: StepProgram, i: int) -> set[int]:
    readers: dict[int, set[int]] = {}
    for j, step in enumerate(program.steps):
        for op in step.operands:
            for s in op:
                readers.setdefault(s.step, set()).add(j)
    out, todo = {i}, [i]
    while todo:
        for j in readers.get(todo.pop(), ()):
            if j not in out:
                out.add(j)
                todo.append(j)
    return out


def check_every_step(program: StepProgram, trace: Trace, x_q: np.ndarray, skip: int | None = None) -> None:
    for i in range(program.n_steps):
        if i != skip:
            assert program.evaluate(trace, i, x_q) == trace.values[i].tolist(), f"step {i} ({program.steps[i].kind.name})"


@pytest.fixture(scope="module")
def small():
    model = small_model()
    program = StepProgram.build(model, settings())
    x = quantize(np.random.default_rng(5).uniform(-1.5, 1.5, (1, 24)), 7)
    return model, program, x, program.execute(x)


def test_small_model_trace_is_the_executor_and_every_step_its_reference(small):
    model, program, x, trace = small
    kinds = {s.kind for s in program.steps}
    assert kinds == set(StepKind) - TRANSFORMER_KINDS  # those: tests/test_trace_transformer.py
    assert program.steps[0].kind == StepKind.INPUT and program.steps[-1].kind == StepKind.OUTPUT
    assert sum(s.kind == StepKind.OUTPUT for s in program.steps) == 1
    assert program.n_steps == len(trace.leaves) and program.depth == trace.tree.depth
    np.testing.assert_array_equal(trace.output, FixedPointProgram(model, settings()).run(x)[0].ravel())
    check_every_step(program, trace, x)
    for step in program.steps:
        if step.kind == StepKind.GEMM:
            assert step.params[0] * step.params[1] <= MAX_GEMM_MACS or step.params[1] == 1
        elif step.kind == StepKind.LOOKUP:
            assert step.out_count <= LOOKUP_CHUNK and step.const_hash in program.tables
        elif step.kind not in (StepKind.OUTPUT,):
            assert step.out_count <= ELEMENTWISE_CHUNK
        for op in step.operands:
            assert all(s.step < program.steps.index(step) for s in op)
    # broadcasting repeats a slice: the act*act multiply by a (1, 1) activation
    assert any(len(op) > 1 and len({(s.step, s.start) for s in op}) == 1 for s in program.steps for op in s.operands)
    assert program.tree.root == MerkleTree([s.hash() for s in program.steps]).root
    assert trace.root == MerkleTree([leaf_hash(v) for v in trace.values]).root
    assert program.execute(x).root == trace.root  # deterministic


@pytest.mark.parametrize(("seed", "k", "h1", "h2"), [(0, 70, 150, 600), (1, 70, 150, 600), (2, 33, 2100, 90), (3, 5, 40, 1100)])
def test_random_small_models_with_many_tiles(seed, k, h1, h2):
    """Wider layers (several GEMM tiles per row, one-column tiles, several chunks per op) on random inputs."""
    model = small_model(seed, k=k, h1=h1, h2=h2, out=9)
    program = StepProgram.build(model, settings())
    stats = program.stats()
    # a GEMM row reads whole producer leaves: after a lookup (32-value leaves) up to K/32 + 1 of them
    assert stats["max_operand_slices"] <= max(MAX_STEP_SLICES, max(k, h1, h2) // LOOKUP_CHUNK + 1)
    assert sum(stats["steps_by_kind"].values()) == program.n_steps
    for step in program.steps:
        if step.kind not in (StepKind.GEMM, StepKind.OUTPUT):
            assert sum(len(op) for op in step.operands) <= MAX_STEP_SLICES
    fp = FixedPointProgram(model, settings())
    for j in range(3):
        x = quantize(np.random.default_rng([seed, j]).uniform(-2, 2, (1, k)), 7)
        trace = program.execute(x)
        np.testing.assert_array_equal(trace.output, fp.run(x)[0].ravel())
        if j == 0:
            check_every_step(program, trace, x)


def test_gemm_over_several_rows_and_row_broadcast():
    """A (1, 3, K) activation: GEMM tiles per row; a (1, 1, N) activation broadcast over the rows."""
    rng = np.random.default_rng(3)
    k, n = 300, 70
    inits = [_const("w1", rng.normal(0, 2 / np.sqrt(k), (k, n))), _const("w2", rng.normal(0, 1 / np.sqrt(n), (n, 5))),
             numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([1], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Slice", ["r", "s0", "s1", "ax"], ["row0"], name="row0"),
             helper.make_node("Add", ["r", "row0"], ["a"], name="add_row0"),
             helper.make_node("MatMul", ["a", "w2"], ["output"], name="mm2")]
    graph = helper.make_graph(nodes, "rows", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, k])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    program = StepProgram.build(model, settings())
    gemms = [s for s in program.steps if s.kind == StepKind.GEMM]
    t = MAX_GEMM_MACS // k
    assert len(gemms) == 3 * -(-n // t) + 3 and program.macs == 3 * k * n + 3 * n * 5
    x = quantize(rng.uniform(-2, 2, (1, 3, k)), 7)
    trace = program.execute(x)
    np.testing.assert_array_equal(trace.output, FixedPointProgram(model, settings()).run(x)[0].ravel())
    check_every_step(program, trace, x)


@pytest.mark.parametrize("name", ["mlp", "gen", "mlp-wide"])
def test_zoo_segments_are_bit_exact(name):
    """Every layer segment of the zoo model (what any plan's op segment is made of) and the whole model, with the
    settings ezkl gives them at the plan's scale."""
    from imo.circuits.cost import model_cost
    from imo.circuits.plan import make_plan
    from imo.models import cached_export

    path = cached_export(name).onnx_path
    plan, graph = make_plan(path, merge=False)
    models = [graph.sub_model([s.input], [s.output]) for s in plan.segments] + [onnx.load(str(path))]
    rng = np.random.default_rng(0)
    for model in models:
        st = model_cost(model, plan.scale).settings
        program = StepProgram.build(model, st)
        fp = FixedPointProgram(model, st)
        for j in range(4):
            x = quantize(rng.uniform(-2, 2, program.input_shape), plan.scale)
            trace = program.execute(x)
            np.testing.assert_array_equal(trace.output, fp.run(x)[0].ravel())
            assert not trace.poisoned
            if j == 0:
                check_every_step(program, trace, x)


# ------------------------------------------------------------------ liars and the game


def _tamper_at(i: int, rng: np.random.Generator):
    def tamper(j, v):
        if j == i:
            v[rng.integers(v.size)] += int(rng.choice([-3, -1, 1, 2, 7]))
        return v
    return tamper


def test_tampering_changes_only_downstream_leaves_and_liars_stay_consistent(small):
    model, program, x, honest = small
    rng = np.random.default_rng(7)
    for i in sorted({0, program.n_steps - 1, *rng.integers(0, program.n_steps, 25).tolist()}):
        liar = program.execute(x, tamper=_tamper_at(i, rng))
        changed = {j for j, (a, b) in enumerate(zip(honest.leaves, liar.leaves)) if a != b}
        assert i in changed and changed <= descendants(program, i)
        assert min(changed) == i
        # the liar continues consistently from its lie: every other step is its reference on the liar's operands
        for j in descendants(program, i) - {i}:
            if program.steps[j].kind != StepKind.OUTPUT:
                assert program.evaluate(liar, j, x) == liar.values[j].tolist()


def _pack(v) -> bytes:
    return pack_tensor(np.asarray(v))


def test_bisection_finds_the_lie_and_the_one_step_witness_convicts_the_liar(small):
    model, program, x, honest = small
    rng = np.random.default_rng(11)
    bis = Bisection(honest)
    for i in sorted({0, 1, program.n_steps - 1, *rng.integers(0, program.n_steps, 30).tolist()}):
        liar = program.execute(x, tamper=_tamper_at(i, rng))
        disputed, revealed = bis.play(liar.tree)
        assert disputed == i
        assert len(revealed) == 2 * program.depth
        # the challenger builds proofs against the liar's root from its honest tree and what the liar revealed
        view = PatchedTree(honest.tree, revealed)
        w = program.one_step(view, disputed, _pack(x), _pack(liar.output), values=honest)
        assert w.abi_tuple() == program.one_step(liar, disputed, _pack(x), _pack(liar.output), values=honest).abi_tuple()
        abi_encode([ONE_STEP_ABI], [w.abi_tuple()])
        try:
            leaf = w.recompute(program.root, liar.root, keccak(_pack(x)) if disputed == 0 else None)
        except TraceDataError:
            assert program.steps[disputed].kind == StepKind.OUTPUT  # the liar's own output differs from its trace
        else:
            assert leaf == honest.leaves[disputed] != liar.leaves[disputed]


def test_an_honest_trace_with_a_false_published_output_is_disputed_at_the_output_step(small):
    model, program, x, honest = small
    bis = Bisection(honest)
    disputed, _ = bis.play(honest.tree)  # same root: the liar only published another output
    assert disputed == program.n_steps - 1
    wrong = honest.output.copy()
    wrong[0] += 1
    w = program.one_step(honest, disputed, _pack(x), _pack(wrong))
    with pytest.raises(TraceDataError, match="OUTPUT"):
        w.recompute(program.root, honest.root, keccak(_pack(wrong)))
    # with the true output the step holds: an honest submitter is never convicted
    assert program.one_step(honest, disputed, _pack(x), _pack(honest.output)).recompute(program.root, honest.root) == honest.leaves[-1]


def test_garbage_in_the_padding_after_the_last_step_does_not_lead_the_challenger_astray(small):
    """A liar with an honest trace but a false published output, whose tree holds garbage in the zero padding after the
    OUTPUT step: the padding differs from the honest tree, yet the challenger still ends on the OUTPUT step (no step
    lives in the padding, so a game ending there would be lost by the challenger's clock)."""
    model, program, x, honest = small
    n = program.n_steps
    assert n < 1 << program.depth, "the small model's tree must have padding"
    liar_tree = MerkleTree(list(honest.leaves) + [keccak(b"garbage %d" % i) for i in range((1 << program.depth) - n)])
    assert liar_tree.root != honest.root
    disputed, _ = Bisection(honest).play(liar_tree)
    assert disputed == n - 1


def test_one_step_witness_recomputes_every_step_of_an_honest_trace(small):
    model, program, x, honest = small
    seen = set()
    for i in range(program.n_steps):
        w = program.one_step(honest, i, _pack(x), _pack(honest.output))
        boundary_hash = keccak(w.boundary) if w.boundary else None
        assert w.recompute(program.root, honest.root, boundary_hash) == honest.leaves[i]
        abi_encode([ONE_STEP_ABI], [w.abi_tuple()])
        seen.add(program.steps[i].kind)
    assert seen == set(StepKind) - TRANSFORMER_KINDS


def test_one_step_witness_rejects_garbage(small):
    model, program, x, honest = small
    i = next(j for j, s in enumerate(program.steps) if s.kind == StepKind.GEMM and j > 20)
    w = program.one_step(honest, i, _pack(x), _pack(honest.output))
    assert w.recompute(program.root, honest.root) == honest.leaves[i]
    bad_cases = {
        "another step's descriptor": dict(index=i + 1),
        "leaf": dict(leaves=[int_pack(int_unpack(w.leaves[0])[:-1] + [12345])] + w.leaves[1:]),
        "proof": dict(leaf_proofs=[[ZERO] + w.leaf_proofs[0][1:]] + w.leaf_proofs[1:]),
        "weights": dict(const_values=int_pack([v + 1 for v in int_unpack(w.const_values)])),
    }
    for what, change in bad_cases.items():
        with pytest.raises(TraceDataError):
            type(w)(**{**w.__dict__, **change}).recompute(program.root, honest.root)
    lk = next(j for j, s in enumerate(program.steps) if s.kind == StepKind.LOOKUP)
    w = program.one_step(honest, lk)
    with pytest.raises(TraceDataError, match="table"):
        type(w)(**{**w.__dict__, "table_values": [w.table_values[0] + 1] + w.table_values[1:]}).recompute(program.root, honest.root)
    with pytest.raises(TraceDataError):
        program.one_step(honest, program.n_steps)


# ------------------------------------------------------------------ poisoned lookups


def test_a_lookup_outside_its_table_poisons_its_step_and_the_game_ends_there():
    model = small_model()
    narrow = settings(lookup_range=(-64, 64), logrows=7)  # table [-64, 175]: the sigmoid's inputs leave it
    program = StepProgram.build(model, narrow)
    x = quantize(np.random.default_rng(5).uniform(-1.5, 1.5, (1, 24)), 7)
    with pytest.raises(UnprovableClaimError, match="lookup"):
        FixedPointProgram(model, narrow).run(x)
    honest = program.execute(x)
    assert honest.poisoned
    first = honest.poisoned[0]
    assert program.steps[first].kind == StepKind.LOOKUP
    assert all(honest.leaves[i] == POISON for i in honest.poisoned)
    with pytest.raises(TraceDataError, match="outside the table"):
        program.evaluate(honest, first)
    # a defender that commits to values there (or copies the poison, or lies later) is taken to the first poisoned step
    claimed = Trace(honest.values, [leaf_hash(v) for v in honest.values], MerkleTree([leaf_hash(v) for v in honest.values]), [])
    for defender in (claimed, honest, program.execute(x, tamper=_tamper_at(program.n_steps - 2, np.random.default_rng(0)))):
        disputed, revealed = Bisection(honest).play(defender.tree)
        assert disputed == first
        w = program.one_step(PatchedTree(honest.tree, revealed), disputed, values=honest)
        assert 0 in w.table_values and [] in w.table_proofs  # out-of-table inputs carry no entry
        with pytest.raises(TraceDataError, match="outside the table"):
            w.recompute(program.root, defender.root)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(("op", "attrs"), [("LeakyRelu", {"alpha": 0.1}), ("Conv", {})])  # Softmax: test_trace_transformer.py
def test_an_op_without_a_one_step_check_is_refused(op, attrs):
    with pytest.raises(NotBisectable, match=rf"op {op} in node 'the_{op.lower()}' has no one-step check"):
        StepProgram.build(single_op_model(op, **attrs), settings())


def test_too_large_gemm_and_table_are_refused():
    k = 8193
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"], name="long")], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])], [_const("w", np.ones((k, 1)) * 0.01)])
    with pytest.raises(NotBisectable, match="inner dimension 8193 > 8192"):
        StepProgram.build(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), settings())
    with pytest.raises(NotBisectable, match="more than"):
        StepProgram.build(single_op_model("Sigmoid"), settings(lookup_range=(-(1 << 22), 1 << 22)))
    with pytest.raises(NotBisectable, match="table range"):
        StepProgram.build(single_op_model("Sigmoid"), {"run_args": settings()["run_args"] | {"lookup_range": None}})


# ------------------------------------------------------------------ scale


@pytest.mark.slow
def test_mlp_4k_segment_of_100m_macs():
    """The dispute game's scale: the zoo's mlp-4k (~101M MACs) as one op segment; prints the figures."""
    from imo.models import cached_export

    path = cached_export("mlp-4k").onnx_path
    st = settings(lookup_range=(-32768, 32768), logrows=17)
    t0 = time.perf_counter()
    program = StepProgram.build(path, st)
    build = time.perf_counter() - t0
    assert program.macs >= 10**8
    x = quantize(np.random.default_rng(0).uniform(0, 1, program.input_shape), 7)
    t0 = time.perf_counter()
    trace = program.execute(x)
    run = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nmlp-4k: {program.macs} MACs, {program.n_steps} steps, depth {program.depth}, build {build:.1f} s, "
          f"execute {run:.2f} s, peak RSS {rss:.2f} GiB")
    assert run < 30
    rng = np.random.default_rng(1)
    for i in rng.integers(0, program.n_steps, 40).tolist() + [program.n_steps - 1]:
        assert program.evaluate(trace, i, x) == trace.values[i].tolist()
    i = int(rng.integers(1000, program.n_steps - 1))
    liar = program.execute(x, tamper=_tamper_at(i, rng))
    disputed, revealed = Bisection(trace).play(liar.tree)
    assert disputed == i
    w = program.one_step(PatchedTree(trace.tree, revealed), i, _pack(x), _pack(liar.output), values=trace)
    assert w.recompute(program.root, liar.root) == trace.leaves[i] != liar.leaves[i]
    del program
    np.testing.assert_array_equal(trace.output, FixedPointProgram(path, st).run(x)[0].ravel())
