"""Filesystem helpers that never leave half-written artifacts behind: write to a temporary sibling, then rename."""

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imo.errors import OutputDirError


def file_sha256(*paths: Path) -> str:
    """Hex sha256 of the files' bytes, one after the other, read in blocks (weights can be gigabytes)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def cache_dir(*parts: str) -> Path:
    """A folder under $IMO_CACHE (default ~/.cache/imo) for artifacts that are expensive to rebuild (SRS, compiled contracts)."""
    root = Path(os.environ.get("IMO_CACHE", Path.home() / ".cache" / "imo"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_dir(out_dir: Path, derived: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty temporary sibling of out_dir to write into. On success it takes out_dir's
    place by rename; on any exception it is deleted. So readers never see a half-written output.
    An existing out_dir is replaced only if it holds nothing but files the new output rewrites
    (a previous run) or files derived from it by later steps (`derived`, e.g. a plan's circuits.json):
    a mistyped path must never delete unrelated data."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        if not out_dir.exists():
            os.rename(tmp, out_dir)
            return
        new = {p.name for p in tmp.iterdir()}
        if (
            out_dir.is_symlink()
            or not out_dir.is_dir()
            or any(p.is_symlink() or p.name not in new | set(derived) for p in out_dir.iterdir())
        ):
            raise OutputDirError(
                f"refusing to replace {out_dir}: it holds files that are not from a previous"
                " run of this command; choose a new or empty directory"
            )
        old = tmp.with_name(tmp.name.replace(".tmp-", ".old-"))
        os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            os.rename(old, out_dir)
            raise
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def private_dir(path: Path) -> Path:
    """A folder only its owner can enter (0700 whatever the umask), for private inputs and tensors."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Create a file only its owner can read or write (0600 from the start, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see either the old content or the new, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
