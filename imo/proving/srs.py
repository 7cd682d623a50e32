"""KZG structured reference strings, cached per logrows.

`ezkl.gen_srs` makes a development SRS locally (its toxic waste is known to this machine, so it is for
testing only); a public-ceremony SRS file can be passed instead and is used as given."""

import os
from pathlib import Path

import ezkl

from imo.errors import MissingArtifactError
from imo.fsutil import cache_dir


def srs_path(logrows: int, srs_file: Path | None = None) -> Path:
    """The SRS for `logrows`: the given file if any, else the cached development SRS (generated on first use)."""
    if srs_file is not None:
        if not Path(srs_file).is_file():
            raise MissingArtifactError(f"SRS file {srs_file} not found")
        return Path(srs_file)
    path = cache_dir("srs") / f"kzg{logrows}.srs"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        ezkl.gen_srs(str(tmp), logrows)
        os.replace(tmp, path)
    return path
