"""Dishonest claims, for tests and the demo: each is what a liar who wants its output finalized could submit, and each
must be caught. `boundary`: one element of a public boundary after an op segment changed, every later op segment
re-run from it (so only that one segment is wrong); `output`: one element of y changed; `proof`: a posted zk proof
corrupted (its claim may even be right: an unverifiable proof is slashed all the same); `commitment`: a hashed
boundary between two zk segments changed (falls back to `proof` when the plan has none)."""

import random
from dataclasses import replace

import numpy as np

from imo.circuits.fixed_point import FIELD_MODULUS
from imo.proving.protocol import Claim, PlanRuntime, claim_from_boundaries

FAULTS = ("boundary", "output", "proof", "commitment")


def corrupt(runtime: PlanRuntime, claim: Claim, fault: str, rng: random.Random) -> tuple[Claim, str]:
    """A dishonest version of an honest `claim`; returns (claim, the fault actually applied)."""
    sizes, n = runtime.sizes, runtime.n
    segments = runtime.plan.segments
    inner = [k for k in range(1, n) if segments[k - 1].mode == "op" and sizes[k]]  # boundaries written by op segments
    hashed_inner = [k for k in range(1, n) if sizes[k] == 0]
    if fault == "boundary" and not inner:
        fault = "output"
    if fault == "commitment" and not hashed_inner:
        fault = "proof"
    if fault == "proof" and not claim.proofs:
        fault = "output"
    if fault == "proof":
        proofs = list(claim.proofs)
        i = rng.randrange(len(proofs))
        byte = rng.randrange(len(proofs[i]))
        proofs[i] = proofs[i][:byte] + bytes([proofs[i][byte] ^ 0x01]) + proofs[i][byte + 1:]
        return replace(claim, proofs=tuple(proofs)), fault
    if fault == "commitment":
        k = rng.choice(hashed_inner)
        commitments = list(claim.commitments)
        commitments[k] = (commitments[k] + rng.randrange(1, 1 << 32)) % FIELD_MODULUS
        return replace(claim, commitments=tuple(commitments)), fault
    tensors = claim.tensors(sizes)
    q = [tensors.get(k) for k in range(n + 1)]
    if fault == "output":
        i = rng.randrange(q[n].size)
        q[n] = q[n].copy()
        q[n][i] += rng.choice((-1, 1))
    else:
        k = rng.choice(inner)
        i = rng.randrange(q[k].size)
        q[k] = q[k].copy()
        q[k][i] += rng.choice((-3, -1, 1, 3))
        for j in range(k + 1, n + 1):  # later op segments re-run from the lie, so the lie is in segment k alone
            if segments[j - 1].mode != "op":
                break
            q[j] = runtime.run_op(j, q[j - 1])
    q = [None if t is None else np.asarray(t, dtype=np.int64) for t in q]
    return claim_from_boundaries(runtime.plan, q, list(claim.commitments), list(claim.proofs)), fault
