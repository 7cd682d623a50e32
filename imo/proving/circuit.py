"""Compile an ONNX model into an ezkl circuit: settings → calibrate → compile → SRS → setup → Solidity verifier.

A circuit directory holds everything needed to prove and verify, under fixed names (see `CircuitFiles`)."""

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ezkl
import numpy as np
from tqdm import tqdm

from imo.circuits.fixed_point import int_to_felt
from imo.errors import MissingArtifactError, ProofError
from imo.proving import onnx_io
from imo.proving.native import call_ezkl
from imo.proving.srs import srs_path


LOOKUP_SAFETY_MARGIN = 8.0
"""ezkl's calibrate_settings widens the lookup range it saw on the calibration batch by this factor (its default, 2,
left the gen model's Sigmoid table [-4336, 1116] at scale 7 too narrow: about half of the inputs drawn uniformly inside the
calibration batch's range fell below it, and a lookup input outside the table has no witness). 8 covers them all
([-17344, 4464], table up to 15415) at the same logrows (15) for the gen plan's segments; the monolithic gen circuit at
the scale ezkl picks (11) grows from 2^17 to 2^19 rows. Models without a lookup (ReLU is a range check in ezkl 23, not a
lookup) are unaffected. The executor refuses whatever still falls outside (UnprovableClaimError)."""


@dataclass(frozen=True)
class Visibility:
    """Which tensors are public instances of the proof: "public", "hashed" (Poseidon commitment), "private", or "fixed" (params)."""

    input: str = "public"
    output: str = "public"
    params: str = "fixed"


@dataclass(frozen=True)
class CircuitFiles:
    """The fixed file names inside a circuit directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    onnx = property(lambda self: self.root / "model.onnx")
    settings = property(lambda self: self.root / "settings.json")
    compiled = property(lambda self: self.root / "model.compiled")
    vk = property(lambda self: self.root / "vk.key")
    pk = property(lambda self: self.root / "pk.key")
    verifier_sol = property(lambda self: self.root / "Verifier.sol")
    report = property(lambda self: self.root / "circuit.json")

    def require(self, *paths: Path) -> None:
        """Fail with one clear line if any artifact is missing."""
        for path in paths:
            if not path.is_file():
                raise MissingArtifactError(f"{path} not found; run `imo prove` (or `imo compile`) to build it")

    def srs(self) -> Path:
        """The SRS this circuit's keys were made with: proving or verifying with any other one fails."""
        self.require(self.report)
        path = Path(json.loads(self.report.read_text())["srs"])
        if not path.is_file():
            raise MissingArtifactError(f"the SRS {path} that {self.root} was set up with is missing; pass it with --srs or recompile")
        return path

    def settings_dict(self) -> dict:
        self.require(self.settings)
        return json.loads(self.settings.read_text())


@dataclass
class CircuitReport:
    logrows: int
    input_scale: int
    param_scale: int
    output_scales: list[int]
    num_rows: int
    visibility: dict
    srs: str
    calibration_samples: int
    calibration_max_abs_error: float
    tolerance: float
    pk_bytes: int
    vk_bytes: int
    seconds: dict = field(default_factory=dict)
    lookup_range: list[int] | None = None
    lookup_safety_margin: float = LOOKUP_SAFETY_MARGIN


def split_chunks(x: np.ndarray, chunks: list[int] | None) -> list[np.ndarray]:
    """x split along its last axis into column chunks of these widths (None: x whole)."""
    x = np.asarray(x)
    if not chunks:
        return [x]
    return np.split(x, np.cumsum(chunks)[:-1], axis=-1)


def write_input(path: Path, x: np.ndarray, chunks: list[int] | None = None) -> None:
    """ezkl's input format; several samples are concatenated (ezkl's calibration splits them by input size).
    chunks: one input per column chunk (a model made by `graph.join_inputs`)."""
    path.write_text(json.dumps({"input_data": [np.asarray(part, dtype=np.float64).ravel().tolist() for part in split_chunks(x, chunks)]}))


def write_quantized_input(path: Path, q: np.ndarray, chunks: list[int] | None = None) -> None:
    """ezkl's input format holding already-quantized integers as field elements (32-byte little-endian hex, negative v
    as p - |v|), which ezkl takes as they are: the circuit's input is exactly q, at any magnitude. Boundaries between
    segments must cross into ezkl this way; as floats (`write_input`) they pass through f32 and every |q| >= 2**24
    arrives changed, so the circuit would commit to a different tensor."""
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise TypeError(f"write_quantized_input takes quantized integers, got {q.dtype}")
    path.write_text(json.dumps({"input_data": [[int_to_felt(int(v)) for v in part.ravel()] for part in split_chunks(q, chunks)]}))


def dequantized_outputs(witness: dict, output_scales: list[int]) -> list[np.ndarray]:
    """The circuit's outputs as floats, from a witness's field elements."""
    return [np.array([ezkl.felt_to_float(v, scale) for v in out]) for out, scale in zip(witness["outputs"], output_scales)]


def build_circuit(
    onnx_path: Path,
    calibration: np.ndarray,
    files: CircuitFiles,
    visibility: Visibility = Visibility(),
    srs_file: Path | None = None,
    scales: list[int] | None = None,
    quiet: bool = False,
    decomp: tuple[int, int] | None = None,
    chunks: list[int] | None = None,
) -> CircuitReport:
    """Compile `onnx_path` into `files.root`. `calibration` is a batch (N, *input_shape) of representative inputs.
    decomp: (decomp_base, decomp_legs) instead of ezkl's default. chunks: the model takes its input as column chunks of
    these widths (`graph.join_inputs`); `calibration` holds the whole input."""
    model = onnx_io.load_model(onnx_path)
    if chunks:
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        if tuple(calibration.shape[1:]) != (*dims[:-1], sum(chunks)):
            raise ProofError(f"calibration batch has sample shape {list(calibration.shape[1:])}, model expects chunks {chunks}")
    else:
        sig = onnx_io.signature(model)
        if tuple(calibration.shape[1:]) != sig.input_shape:
            raise ProofError(f"calibration batch has sample shape {list(calibration.shape[1:])}, model expects {list(sig.input_shape)}")
    files.root.mkdir(parents=True, exist_ok=True)
    if Path(onnx_path).resolve() != files.onnx.resolve():
        shutil.copyfile(onnx_path, files.onnx)
    seconds: dict[str, float] = {}
    steps = tqdm(total=6, desc="compile circuit", unit="step", disable=quiet, leave=False)

    def step(name: str, fn, *args, **kwargs):
        steps.set_postfix_str(name)
        start = time.perf_counter()
        result = call_ezkl(name, fn, *args, **kwargs)
        seconds[name] = round(time.perf_counter() - start, 3)
        steps.update()
        return result

    run_args = ezkl.PyRunArgs()
    run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = visibility.input, visibility.output, visibility.params
    if decomp:
        run_args.decomp_base, run_args.decomp_legs = decomp
    calibration_file = files.root / "calibration.json"
    write_input(calibration_file, calibration, chunks)
    step("settings", ezkl.gen_settings, str(files.onnx), str(files.settings), py_run_args=run_args)
    calibrate_kwargs = {"lookup_safety_margin": LOOKUP_SAFETY_MARGIN}
    if scales:
        calibrate_kwargs |= {"scales": scales, "scale_rebase_multiplier": [1]}
    step("calibrate", ezkl.calibrate_settings, str(calibration_file), str(files.onnx), str(files.settings), "resources", **calibrate_kwargs)
    step("compile", ezkl.compile_circuit, str(files.onnx), str(files.compiled), str(files.settings))
    settings = files.settings_dict()
    logrows = settings["run_args"]["logrows"]
    steps.set_postfix_str(f"srs (logrows {logrows})")
    start = time.perf_counter()
    srs = srs_path(logrows, srs_file)
    seconds["srs"] = round(time.perf_counter() - start, 3)
    steps.update()
    step("setup", ezkl.setup, str(files.compiled), str(files.vk), str(files.pk), srs_path=str(srs))
    steps.set_postfix_str("solidity verifier")
    start = time.perf_counter()
    generate_verifier(files, srs)
    seconds["verifier"] = round(time.perf_counter() - start, 3)
    steps.update()
    steps.close()

    output_scales = settings["model_output_scales"]
    max_error = _calibration_error(files, calibration, output_scales, chunks)
    report = CircuitReport(
        logrows=logrows,
        input_scale=settings["run_args"]["input_scale"],
        param_scale=settings["run_args"]["param_scale"],
        output_scales=output_scales,
        num_rows=settings["num_rows"],
        visibility=asdict(visibility),
        srs=str(srs),
        calibration_samples=len(calibration),
        calibration_max_abs_error=max_error,
        tolerance=2 * max_error + 2.0 ** -min(output_scales),
        pk_bytes=files.pk.stat().st_size,
        vk_bytes=files.vk.stat().st_size,
        seconds=seconds,
        lookup_range=settings["run_args"]["lookup_range"] if settings.get("required_lookups") else None,
    )
    files.report.write_text(json.dumps(asdict(report), indent=2))
    return report


def _calibration_error(files: CircuitFiles, calibration: np.ndarray, output_scales: list[int], chunks: list[int] | None = None) -> float:
    """Max |circuit output − onnxruntime output| over the calibration batch: the tolerance a proven output is held to."""
    worst = 0.0
    scratch_input, scratch_witness = files.root / ".calib-input.json", files.root / ".calib-witness.json"
    for x in calibration:
        write_input(scratch_input, x, chunks)
        witness = call_ezkl("witness", ezkl.gen_witness, str(scratch_input), str(files.compiled), str(scratch_witness))
        expected = onnx_io.run_onnxruntime(files.onnx, x) if not chunks else _run_chunked(files.onnx, x, chunks)
        for got, want in zip(dequantized_outputs(witness, output_scales), expected):
            worst = max(worst, float(np.max(np.abs(got - want.ravel()))))
    scratch_input.unlink(missing_ok=True)
    scratch_witness.unlink(missing_ok=True)
    return worst


def _run_chunked(onnx_path: Path, x: np.ndarray, chunks: list[int]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: part.astype(np.float32) for i, part in zip(session.get_inputs(), split_chunks(x, chunks))})


def generate_verifier(files: CircuitFiles, srs: Path) -> Path:
    """Write files.verifier_sol. ezkl writes the source, then fails fetching a native solc: that failure is expected."""
    abi = files.root / "verifier_abi.json"
    try:
        call_ezkl("create_evm_verifier", ezkl.create_evm_verifier, str(files.vk), str(files.settings), str(files.verifier_sol), str(abi), srs_path=str(srs))
    except ProofError:
        if not files.verifier_sol.is_file():
            raise
    abi.unlink(missing_ok=True)
    from imo.verifier_contracts.evm import compile_verifier
    from imo.verifier_contracts.reusable import EIP170_LIMIT, make_adapter

    if compile_verifier(files.verifier_sol).runtime_size > EIP170_LIMIT:  # could never be deployed: use ezkl's reusable verifier
        make_adapter(files.vk, files.settings, srs, files.verifier_sol)
    return files.verifier_sol
