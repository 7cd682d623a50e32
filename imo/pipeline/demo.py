"""`imo demo`: the whole IMO story on a fresh embedded anvil (or --rpc-url), told step by step.

The story itself is `imo.pipeline.story.run_story`: IMO sale → hybrid plan compiled and registered → paid requests
answered by an oracle node (a tampered zk proof rejected on chain) → a dishonest answer caught with a fraud proof
and slashed → results finalized, fees to the token, holders claim their pro-rata share → the generator's image
minted as an AIGC NFT and sold with royalties to the token. This module only wraps it for the CLI."""

from pathlib import Path

from imo.pipeline.story import run_story

DEMO_MODEL = "mlp-wide"


def run_demo(workdir: Path, rpc_url: str | None = None, quiet: bool = False, model: str = DEMO_MODEL, honest_requests: int = 3,
             say=print) -> dict:
    """Run every step, print one line per step, and return the summary (segments, requests, fraud, fees, claims,
    NFT, gas per step, timings and latency)."""
    return run_story(Path(workdir), rpc_url, quiet=quiet, model=model, honest_requests=honest_requests, say=say)
