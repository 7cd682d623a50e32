"""Where segment proofs run: in this process, in a local memory-aware process pool, or on a Ray cluster.

A job proves one witness with one circuit from the artifact store and publishes the proof in the store, so a
proof that finished survives a crash of everything else (resume redoes no finished segment).

Peak memory per proof (docs/zk-cost.md): `getrusage(RUSAGE_SELF).ru_maxrss` is wrong in a worker. Linux copies the
parent's RSS high-water mark into a forked child and keeps it across execve (the child's ru_maxrss is
max(parent's hiwater at fork, own)), so every spawned worker of a parent that once held 3.5 GB reports >= 3.5 GB;
RUSAGE_CHILDREN is the max over all children, not one proof's. A job reads the peak of its own address space instead:
VmHWM in /proc/self/status, which execve starts afresh, after resetting it (`/proc/self/clear_refs` "5") at the
start of the job, so a reused worker measures each proof alone."""

import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from imo.errors import ImoError
from imo.proving import prover
from imo.proving.circuit import CircuitFiles
from imo.proving.store import ArtifactStore

PROVE_MEMORY_PER_PK_BYTE = 2.6  # measured: 660 MB pk → 1.7 GB peak RSS while proving (ezkl 23.0.5, CPU)
PROVE_MEMORY_BASE = 300 << 20


@dataclass(frozen=True)
class ProveJob:
    segment: int
    circuit_dir: str
    witness_file: str
    store_root: str
    proof_key: str
    tile: int | None = None  # which tile of a tiled segment

    def memory_estimate(self) -> int:
        return int(Path(self.circuit_dir, "pk.key").stat().st_size * PROVE_MEMORY_PER_PK_BYTE) + PROVE_MEMORY_BASE


@dataclass(frozen=True)
class JobResult:
    segment: int
    proof_dir: str
    seconds: float
    peak_rss_bytes: int
    worker: str
    started: float = 0.0  # wall-clock (time.time) bounds of the job, to see overlap
    finished: float = 0.0
    tile: int | None = None
    rss_isolated: bool = True  # False: proved in the caller's process, whose peak (its whole life) it reports


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """This address space's peak RSS in bytes (VmHWM: fresh after execve, reset by `reset_peak_rss`); ru_maxrss where
    /proc is missing (then it may include the parent's high-water mark, see the module docstring)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim_heap() -> None:
    """Give freed heap back to the OS between jobs, so a reused worker starts the next proof near its baseline RSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_job(job: ProveJob, isolated: bool = True) -> JobResult:
    """Prove one segment (or tile) and publish the proof in the store (runs in whichever process the executor chose)."""
    _trim_heap()
    isolated = reset_peak_rss() and isolated
    started = time.time()
    store = ArtifactStore(Path(job.store_root))
    entry = store.put("proofs", job.proof_key, lambda tmp: prover.prove_witness(CircuitFiles(job.circuit_dir), Path(job.witness_file), tmp / "proof.json"))
    finished = time.time()
    return JobResult(job.segment, str(entry), round(finished - started, 3), peak_rss(), f"pid {os.getpid()}", started, finished, job.tile, isolated)


def _warm_worker() -> None:
    """Pool initializer: import what a proof needs before the first job arrives."""
    import ezkl  # noqa: F401


def available_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 34


class LocalExecutor:
    """workers=1 proves in this process, one segment after another (isolate=True: each in a fresh process, so its
    peak memory is measured alone); workers>1 uses a process pool that starts a job only if the memory estimates
    of the running jobs plus this one fit in available RAM (one job always runs). Pool workers are fresh processes per
    job unless the executor is `start`ed: then they stay up between jobs and runs (a serving node's warm pool; each
    job still measures its own peak RSS), until `close`."""

    def __init__(self, workers: int | None = None, memory_limit: int | None = None, isolate: bool = False):
        self.workers = workers or os.cpu_count() or 1
        self.memory_limit = memory_limit
        self.isolate = isolate
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> "LocalExecutor":
        """Start the worker processes now (they import ezkl while the caller computes witnesses) and keep them."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"), initializer=_warm_worker)
            for future in [self._pool.submit(_warm_worker) for _ in range(self.workers)]:
                future.result()
        return self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "LocalExecutor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, jobs: list[ProveJob], quiet: bool = False) -> list[JobResult]:
        bar = tqdm(total=len(jobs), desc="prove", unit="proof", disable=quiet or not jobs, leave=False)
        if self._pool is None and not self.isolate and (self.workers == 1 or len(jobs) <= 1):
            results = []
            for job in jobs:
                results.append(run_job(job, isolated=False))
                bar.update()
            bar.close()
            return results
        limit = self.memory_limit or int(available_memory() * 0.9)
        pending, running, results = list(jobs), {}, []
        own_pool = self._pool is None
        pool = self._pool or ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"), max_tasks_per_child=1)
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    need = pending[0].memory_estimate()
                    if running and sum(running.values()) + need > limit:
                        break
                    future: Future = pool.submit(run_job, pending.pop(0))
                    running[future] = need
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    results.append(future.result())
                    bar.update()
        finally:
            if own_pool:
                pool.shutdown()
        bar.close()
        return sorted(results, key=lambda r: (r.segment, -1 if r.tile is None else r.tile))


class RayExecutor:
    """Sends each job to a Ray cluster with the bytes it needs (compiled circuit, keys, SRS, witness) and writes the
    returned proof into the local store: workers need no shared filesystem."""

    def __init__(self, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise ImoError("the Ray executor needs the `ray` package: pip install 'ray==2.60.0'") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
            except Exception as exc:
                raise ImoError(f"cannot join the Ray cluster at {address or 'auto'}: {str(exc).splitlines()[0]}") from None

    def run(self, jobs: list[ProveJob], quiet: bool = False) -> list[JobResult]:
        remote = self.ray.remote(num_cpus=1)(_prove_remote)
        futures = [(job, remote.remote(job.segment, _circuit_bytes(job), Path(job.witness_file).read_bytes())) for job in jobs]
        results = []
        for job, future in tqdm(futures, desc="prove (ray)", unit="proof", disable=quiet or not jobs, leave=False):
            proof, span, peak, worker = self.ray.get(future)
            entry = ArtifactStore(Path(job.store_root)).put("proofs", job.proof_key, lambda tmp, proof=proof: (tmp / "proof.json").write_bytes(proof))
            results.append(JobResult(job.segment, str(entry), round(span[1] - span[0], 3), peak, worker, *span, job.tile))
        return results


def _circuit_bytes(job: ProveJob) -> dict[str, bytes]:
    files = CircuitFiles(job.circuit_dir)
    return {"model.compiled": files.compiled.read_bytes(), "pk.key": files.pk.read_bytes(), "settings.json": files.settings.read_bytes(), "kzg.srs": files.srs().read_bytes()}


def _prove_remote(segment: int, circuit: dict[str, bytes], witness: bytes) -> tuple[bytes, tuple[float, float], int, str]:
    """Runs on a Ray worker: rebuild the circuit directory from bytes, prove, return the proof file's bytes."""
    import socket

    reset_peak_rss()  # Ray workers are long-lived: measure this proof alone
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in circuit.items():
            (root / name).write_bytes(data)
        (root / "witness.json").write_bytes(witness)
        prover.prove_witness(CircuitFiles(root), root / "witness.json", root / "proof.json", srs_file=root / "kzg.srs")
        proof = (root / "proof.json").read_bytes()
    return proof, (started, time.time()), peak_rss(), f"{socket.gethostname()} pid {os.getpid()} (segment {segment})"


def gpu_prover() -> str:
    """Turn on ezkl's GPU (icicle) backend if a GPU build of ezkl and an NVIDIA GPU are present; otherwise say which is missing."""
    try:
        metadata.version("ezkl-gpu")
    except metadata.PackageNotFoundError:
        raise ImoError("--gpu: no GPU build of ezkl is installed (this environment has the CPU package `ezkl`); install `ezkl-gpu` on a CUDA machine or drop --gpu") from None
    if not shutil.which("nvidia-smi"):
        raise ImoError("--gpu: ezkl-gpu is installed but no NVIDIA GPU/driver was found (nvidia-smi missing); drop --gpu to prove on the CPU")
    os.environ["ENABLE_ICICLE_GPU"] = "true"
    return "ezkl-gpu (icicle)"


def make_executor(kind: str = "local", workers: int | None = None, address: str | None = None):
    """The executor the CLI asked for."""
    if kind == "ray":
        return RayExecutor(address)
    return LocalExecutor(workers)
