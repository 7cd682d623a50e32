"""`gpt`: a byte-level decoder-only transformer of GPT-2-small class (>= 100M parameters) for the zoo.

Architecture (``GPTConfig()``): 16 pre-LN blocks, d_model 768, 12 heads of 64, a 4x GELU MLP, learned
positions, a byte vocabulary (256) and a fixed context of 128 bytes; an untied output head (768 -> 256)
that the model owner can keep private (its own zk segment).  113,899,264 parameters.

The exported ONNX graph reads one window of 128 token ids (int64, shape (1, 128)) and returns the
logits of the byte after the window (shape (1, 256)): text is *right-aligned* in the window, left-padded
with spaces (``PAD``) and cropped to its last 128 bytes, so one graph serves every decoding step.  Every
op is one the canonical fixed-point executor runs bit-exactly (Gather, Add, LayerNormalization, MatMul,
Mul, Reshape, Transpose, Softmax, Erf/Div (GELU), Gemm).  The causal mask keeps values small for ezkl's
lookup tables: scores are multiplied by a 0/1 ``keep`` matrix and ``-MASK_VALUE`` is added where
masked, so a masked score is exactly ``-MASK_VALUE`` (not ``-1e4``) and its softmax weight underflows
to 0 at the executor's scale; the head scaling 1/sqrt(64) = 2^-3 is a power of two (ezkl: a free
rescale, no rounding).

Weights: seeded initialization (GPT-2's: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 * layers)))
followed by a *short* Adam run on the bundled corpus (``pydoc_data.topics``, the stdlib's ~465k
characters of English documentation) -- see ``TRAIN_STEPS``; the card (``card.json``) records the
steps, tokens seen, seconds, loss before and after and a held-out loss.  That is a few minutes on 2
CPU cores, a tiny fraction of an epoch: the model has learned byte statistics and little more, and
its text is not meant to be good.  Export uses external ONNX weight data (``model.onnx.data``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD = 0x20
"""Byte that left-pads a prompt shorter than the context (a space: common in the corpus's indented text)."""

MASK_VALUE = 30.0
"""Every masked attention score becomes exactly -MASK_VALUE (see the module docstring)."""

CORPUS = "pydoc_data.topics (Python stdlib), topics sorted by name, joined with blank lines, UTF-8 bytes"


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 16
    d_model: int = 768
    n_head: int = 12
    vocab: int = 256
    context: int = 128

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError("d_model must be a multiple of n_head")
        if math.log2(self.head_dim) % 2:
            # 1/sqrt(head_dim) must be a power of two: ezkl then rescales without rounding
            raise ValueError("head_dim must be a power of 4 (16, 64, 256, ...)")


SMALL = GPTConfig(n_layer=2, d_model=64, n_head=4, vocab=256, context=32)
"""The same architecture at test size."""


class Block(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        d = c.d_model
        self.c = c
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.proj = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.act, self.out = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h, hd = self.c.n_head, self.c.head_dim
        y = self.ln1(x)
        q = self.q(y).reshape(b, t, h, hd).transpose(1, 2)  # (b, h, t, hd)
        k = self.k(y).reshape(b, t, h, hd).permute(0, 2, 3, 1)  # (b, h, hd, t)
        v = self.v(y).reshape(b, t, h, hd).transpose(1, 2)
        scores = (q @ k) * (1.0 / math.sqrt(hd))  # power of two
        att = torch.softmax(scores * keep + drop, dim=-1)  # masked scores are exactly -MASK_VALUE
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(self.act(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """``forward(ids)``: logits of the byte after the window, (batch, vocab); ``all_positions=True``:
    logits after every position, (batch, context, vocab) (training)."""

    def __init__(self, c: GPTConfig = GPTConfig()) -> None:
        super().__init__()
        self.c = c
        self.tok = nn.Embedding(c.vocab, c.d_model)
        self.pos = nn.Parameter(torch.zeros(c.context, c.d_model))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab)
        keep = torch.tril(torch.ones(c.context, c.context)).reshape(1, 1, c.context, c.context)
        self.register_buffer("keep", keep, persistent=False)
        self.register_buffer("drop", (keep - 1.0) * MASK_VALUE, persistent=False)
        self._init()

    def _init(self) -> None:
        """GPT-2's initialization, except the embeddings: tokens N(0, 1) (torch's nn.Embedding default) and
        positions N(0, 0.1), so that the first LayerNorm sees a variance its fixed-point form resolves (at scale s
        ezkl holds var * 2**s as an integer: GPT-2's N(0, 0.02) embeddings round it to 0 at s = 7)."""
        std = 0.02
        for name, p in self.named_parameters():
            if name == "tok.weight":
                nn.init.normal_(p, 0.0, 1.0)
            elif name == "pos":
                nn.init.normal_(p, 0.0, 0.1)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln" in name or name.startswith("ln_"):
                nn.init.ones_(p)
            elif name.endswith(("proj.weight", "out.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.c.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        t = ids.shape[1]
        x = self.tok(ids) + self.pos[:t]
        keep, drop = self.keep[..., :t, :t], self.drop[..., :t, :t]
        for block in self.blocks:
            x = block(x, keep, drop)
        if not all_positions:
            x = x[:, -1]
        return self.head(self.ln_f(x))


def param_count(c: GPTConfig = GPTConfig()) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(c).parameters())


# --------------------------------------------------------------------------- corpus
def corpus() -> bytes:
    """The training text: every pydoc topic, sorted by name, as UTF-8."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def window(data: bytes, context: int) -> np.ndarray:
    """The model's input for `data`: its last `context` bytes, left-padded with PAD, shape (1, context) int64."""
    tail = data[-context:]
    return np.frombuffer(bytes([PAD]) * (context - len(tail)) + tail, dtype=np.uint8).astype(np.int64).reshape(1, context)


def held_out_texts(n: int, length: int = 128) -> list[bytes]:
    """n windows of the held-out part of the corpus (calibration and probe inputs)."""
    raw = corpus()
    split = int(len(raw) * (1 - HELD_OUT))
    step = (len(raw) - split - length) // max(n, 1)
    return [raw[split + i * step : split + i * step + length] for i in range(n)]


# --------------------------------------------------------------------------- training
TRAIN_STEPS = 16
BATCH = 4
LR = 1e-3
WARMUP = 5
HELD_OUT = 0.05
"""The last 5 % of the corpus is held out: the card's held-out loss is measured there."""


@dataclass
class TrainReport:
    steps: int
    batch: int
    lr: float
    tokens_seen: int
    seconds: float
    threads: int
    initial_loss: float
    final_loss: float  # mean training loss over the last 10 steps
    held_out_loss: float  # on HELD_OUT, 8 fixed windows
    corpus_bytes: int


@contextmanager
def _seeded(seed: int, threads: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(saved)


def _batch(data: torch.Tensor, c: GPTConfig, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random windows of context+1 bytes; half of them left-padded with PAD like short prompts are at
    inference (their padded targets are ignored)."""
    starts = rng.integers(0, len(data) - c.context - 1, n)
    rows = torch.stack([data[s : s + c.context + 1] for s in starts]).long()
    x, y = rows[:, :-1].clone(), rows[:, 1:].clone()
    for i in range(n):
        if rng.random() < 0.5:
            r = int(rng.integers(1, c.context - 1))
            x[i, :r] = PAD
            y[i, : r - 1] = -100
    return x, y


def train_gpt(c: GPTConfig = GPTConfig(), seed: int = 0, steps: int = TRAIN_STEPS, threads: int = 2,
              progress: bool = True) -> tuple[GPT, TrainReport]:
    """Seeded init, then `steps` Adam steps (linear warmup, cosine decay) on random corpus windows."""
    from tqdm import tqdm

    raw = corpus()
    split = int(len(raw) * (1 - HELD_OUT))
    train_data = torch.from_numpy(np.frombuffer(raw[:split], dtype=np.uint8).copy())
    held = torch.from_numpy(np.frombuffer(raw[split:], dtype=np.uint8).copy())
    start = time.perf_counter()
    with _seeded(seed, threads):
        model = GPT(c)
        rng = np.random.default_rng([seed, 14])
        opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
        losses = []
        for step in tqdm(range(steps), desc="train gpt", unit="step", disable=not progress, leave=False):
            lr = LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = _batch(train_data, c, rng, BATCH)
            loss = F.cross_entropy(model(x, all_positions=True).reshape(-1, c.vocab), y.reshape(-1), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            hx, hy = _batch(held, c, np.random.default_rng([seed, 15]), 8)
            held_loss = float(F.cross_entropy(model(hx, all_positions=True).reshape(-1, c.vocab), hy.reshape(-1), ignore_index=-100))
    seconds = time.perf_counter() - start
    tail = losses[-10:] or [float("nan")]
    return model, TrainReport(
        steps=steps, batch=BATCH, lr=LR, tokens_seen=steps * BATCH * c.context, seconds=round(seconds, 1), threads=threads,
        initial_loss=losses[0] if losses else float("nan"), final_loss=float(np.mean(tail)), held_out_loss=held_loss,
        corpus_bytes=len(raw),
    )


# --------------------------------------------------------------------------- export
def export_gpt_onnx(model: GPT, path: Path, external: bool = True) -> None:
    """ONNX opset 17 at batch 1: "input" (1, context) int64 -> "output" (1, vocab). With `external`, the
    weights go to `path.name + '.data'` beside it (needed above 2 GB; loads lean)."""
    import onnx

    from imo.errors import InvalidModelError

    c = model.c
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, c.context, dtype=torch.long),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    if external:
        proto = onnx.load(str(path))
        data = path.with_name(path.name + ".data")
        data.unlink(missing_ok=True)
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
        del proto
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise InvalidModelError(f"exported ONNX graph {path} is invalid: {e}") from e


def onnx_ops(path: Path) -> dict[str, int]:
    import onnx

    return dict(sorted(Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node).items()))


def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_gpt(out_dir: Path, c: GPTConfig = GPTConfig(), seed: int = 0, steps: int = TRAIN_STEPS, progress: bool = True) -> Path:
    """Train (seeded init + `steps` steps) and write model.onnx, model.onnx.data, input.json and card.json into
    out_dir, all or nothing. Returns the ONNX path."""
    from imo.errors import InvalidModelError
    from imo.fsutil import atomic_dir, file_sha256

    model, report = train_gpt(c, seed, steps, progress=progress)
    out_dir = Path(out_dir)
    sample = window("The for statement".encode(), c.context)
    with atomic_dir(out_dir) as tmp:
        onnx_path = tmp / "model.onnx"
        export_gpt_onnx(model, onnx_path)
        session = ort_session(onnx_path)
        with torch.no_grad():
            want = model(torch.from_numpy(sample)).numpy()
        (got,) = session.run(["output"], {"input": sample})
        diff = float(np.abs(got - want).max())
        del session
        if diff > 1e-3:
            raise InvalidModelError(f"gpt: onnxruntime logits differ from torch by {diff:.2e}; the export does not compute the model")
        card = {
            "name": "gpt",
            "kind": "lm",
            "description": DESCRIPTION,
            "config": asdict(c),
            "params": param_count(c),
            "weights": "seeded initialization (torch.manual_seed(seed); GPT-2's N(0, 0.02), residual projections scaled by "
                       "1/sqrt(2 * layers), but N(0, 1) token and N(0, 0.1) position embeddings), then a short AdamW run on the corpus: "
                       f"{report.steps} steps of {report.batch} random {c.context}-byte windows ({report.tokens_seen} tokens, "
                       f"{report.tokens_seen / (report.corpus_bytes * (1 - HELD_OUT)):.3f} of one epoch), lr {report.lr} "
                       f"(warmup {WARMUP}, cosine), grad clip 1.0, {report.threads} CPU threads; nothing else",
            "dataset": CORPUS,
            "held_out": f"last {HELD_OUT:.0%} of the corpus bytes",
            "seed": seed,
            "training": asdict(report),
            "pad_byte": PAD,
            "mask_value": MASK_VALUE,
            "ops": onnx_ops(onnx_path),
            "input_shape": [1, c.context],
            "output_shape": [1, c.vocab],
            "torch_version": torch.__version__,
            "onnx_sha256": file_sha256(onnx_path),
            "onnx_data_sha256": file_sha256(onnx_path.with_name("model.onnx.data")),
            "onnxruntime_max_abs_diff": diff,
        }
        (tmp / "input.json").write_text(json.dumps({"input_data": [sample.ravel().tolist()]}) + "\n")
        (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return out_dir / "model.onnx"


DESCRIPTION = ("byte-level decoder-only transformer (16 pre-LN blocks x 768, 12 heads, GELU MLP, learned positions, "
               "128-byte context, untied 768→256 head); seeded init + a short CPU training run on pydoc_data.topics")


def cached_gpt(seed: int = 0, progress: bool = True) -> Path:
    """The zoo's `gpt` exported once into the cache ($IMO_CACHE/zoo/gpt-seed{seed}); returns its model.onnx."""
    from imo.fsutil import cache_dir

    out_dir = cache_dir("zoo", f"gpt-seed{seed}")
    if not (out_dir / "card.json").is_file():
        export_gpt(out_dir, seed=seed, progress=progress)
    return out_dir / "model.onnx"


def describe() -> dict[str, object]:
    """What `imo models` lists for gpt. The op counts come from exporting the untrained architecture at
    d_model 64 with the same 16 layers (the same graph, op for op, at a width that exports in a second)."""
    import tempfile

    c = GPTConfig()
    narrow = GPTConfig(n_layer=c.n_layer, d_model=64, n_head=4, vocab=c.vocab, context=c.context)
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        path = Path(tmp) / "model.onnx"
        model = GPT(narrow).eval()
        with torch.no_grad():  # distinct values everywhere, as after training: the exporter shares equal initializers
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-3)
        export_gpt_onnx(model, path, external=False)
        ops = onnx_ops(path)
    return {"name": "gpt", "kind": "lm", "description": DESCRIPTION, "input_shape": [1, c.context],
            "output_shape": [1, c.vocab], "params": param_count(c), "ops": ops}
