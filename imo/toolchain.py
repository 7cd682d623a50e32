"""Locates the npm toolchain (node, solc-js, anvil, OpenZeppelin) that `npm ci` installs next to the package."""

import os
import platform
import shutil
from pathlib import Path

from imo.errors import ToolchainError

_INSTALL_HINT = "run `make install` (it runs `npm ci`) or set IMO_NODE_MODULES to a node_modules folder with solc and @foundry-rs/anvil"


def node_modules() -> Path:
    """The node_modules folder holding solc-js, anvil and OpenZeppelin: $IMO_NODE_MODULES, else the one beside the source tree, else one above the working directory."""
    candidates = []
    if env := os.environ.get("IMO_NODE_MODULES"):
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[1] / "node_modules")
    candidates += [p / "node_modules" for p in (Path.cwd(), *Path.cwd().parents)]
    for candidate in candidates:
        if (candidate / "solc" / "package.json").is_file():
            return candidate
    raise ToolchainError(f"npm toolchain not found; {_INSTALL_HINT}")


def node() -> str:
    """The node executable."""
    found = shutil.which("node")
    if not found:
        raise ToolchainError("node is not on PATH; install Node.js 20 (e.g. `apt-get install nodejs`)")
    return found


def anvil() -> Path:
    """The anvil binary shipped inside the @foundry-rs/anvil-<platform> npm package."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), platform.machine())
    binary = node_modules() / "@foundry-rs" / f"anvil-{platform.system().lower()}-{arch}" / "bin" / "anvil"
    if not binary.is_file():
        raise ToolchainError(f"anvil binary not found at {binary}; {_INSTALL_HINT}")
    return binary
