"""What the oracle node and the challenger node share: the connection, the models they serve (only registrations whose
digest matches their own compiled plan), the event scan, per-request error isolation, and the poll loop that
survives the RPC going away. The protocol's rules live in `imo.proving.protocol`; the nodes only act on them.

Every record is handled on its own: an error on one request (a revert, a proof that fails, anything) is logged
loudly with the request id and kept in the node's warnings, and the node goes on with the next request, so one
poisoned request cannot blind it to the others."""

import logging
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from imo.errors import ImoError, MissingArtifactError
from imo.pipeline.chain import connect
from imo.pipeline.game_play import GameSide, Traces
from imo.pipeline.state import NodeState, RequestRecord
from imo.proving.protocol import PlanRuntime
from imo.proving.segments import CIRCUITS_FILE
from imo.proving.store import ArtifactStore
from imo.verifier_contracts.contracts import ContractRevertError, Deployment
from imo.verifier_contracts.game_client import GameClient
from imo.verifier_contracts.oracle_client import OracleClient
from imo.verifier_contracts.registration import Terms, registration_problems

log = logging.getLogger("imo.nodes")


@dataclass
class Warnings:
    """What a node could not do, each with the fix; `imo node --once --json` prints them."""

    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)
        log.warning(message)


class Node:
    """Connection, served models, scan and poll loop shared by both nodes. `account`: a LocalAccount (signs locally,
    any RPC) or an address the RPC node unlocks (development chains only)."""

    role = "node"
    event = ""

    def __init__(self, rpc_url: str, deployment: Deployment | Path, plan_file: Path, account: LocalAccount | str,
                 state: NodeState | Path | str = ":memory:", poll_interval: float = 1.0, store: ArtifactStore | None = None,
                 work_dir: Path | None = None, terms: Terms | None = None):
        self.rpc_url = rpc_url
        self.deployment = deployment if isinstance(deployment, Deployment) else Deployment.read(Path(deployment))
        self.plan_file = Path(plan_file)
        if not (self.plan_file.parent / CIRCUITS_FILE).is_file():
            raise MissingArtifactError(f"{self.plan_file.parent / CIRCUITS_FILE} not found; run `imo compile {plan_file}` first")
        self.runtime = PlanRuntime(self.plan_file, store or ArtifactStore())
        self.traces = Traces(self.runtime)
        self.state = state if isinstance(state, NodeState) else NodeState(state)
        self.poll_interval = poll_interval
        self.terms = terms
        # claims in progress live beside the state they belong to, never in a folder another node could share
        if work_dir is not None:
            self.work_dir = Path(work_dir)
        elif self.state.path != ":memory:":
            self.work_dir = Path(self.state.path).with_name(Path(self.state.path).stem + "-work")
        else:  # nothing of an in-memory node survives it, so neither need its files
            self.work_dir = Path(tempfile.mkdtemp(prefix=f"imo-{self.role}-"))
            weakref.finalize(self, shutil.rmtree, self.work_dir, ignore_errors=True)
        self._account = account
        self.warnings = Warnings()
        self._connect()

    def _connect(self) -> None:
        self.w3 = connect(self.rpc_url).w3
        sender = self._account
        self.oracle = OracleClient(self.w3, self.deployment.oracle, sender)
        self.account = sender if isinstance(sender, str) else sender.address
        game = self.oracle.dispute_game()
        self.games = GameClient(self.w3, game, sender) if game else None
        self.model_ids = self._served_models()

    def _served_models(self) -> set[int]:
        """The registered models of this plan whose registration digest matches the compiled plan."""
        served = set()
        self._model_count = self.oracle.model_count()
        for m in range(1, self._model_count + 1):
            model = self.oracle.model(m)
            if model.spec.plan_hash != bytes.fromhex(self.runtime.plan.plan_hash):
                continue
            problems = registration_problems(self.plan_file, model, self.terms)
            if problems:
                for p in problems:
                    self.warnings.add(f"{self.role}: not serving {p}")
            else:
                served.add(m)
        if not served:
            self.warnings.add(f"{self.role}: no model registered on {self.deployment.oracle} matches {self.plan_file}; "
                              f"register it with `imo register {self.plan_file}`")
        return served

    def now(self) -> int:
        return self.oracle.now()

    def scan(self) -> tuple[list, int]:
        """New `self.event` logs since the saved cursor, and the block scanned to. A model registered since the last
        scan is checked first, so that its requests are not skipped by a node started before its registration."""
        if self.oracle.model_count() != self._model_count:
            self.model_ids = self._served_models()
        latest = self.w3.eth.block_number
        start = self.state.cursor + 1
        if start > latest:
            return [], latest
        return getattr(self.oracle.contract.events, self.event)().get_logs(from_block=start, to_block=latest), latest

    def isolated(self, record: RequestRecord, action) -> None:
        """Run `action(record)`; any failure is logged and kept as a warning, and the other requests go on."""
        try:
            action(record)
        except Exception as exc:  # noqa: BLE001 - one request's failure must not stop the node (see the module doc)
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            self.warnings.add(f"{self.role}: request {record.request_id}: {message}")

    def send(self, fn_name: str, *args, **kwargs):
        """An oracle transaction; None when the contract says the request moved on (AIOracleUnexpectedStatus):
        done by this node before a crash, or by another node. No transaction is ever sent twice."""
        try:
            return getattr(self.oracle, fn_name)(*args, **kwargs)
        except ContractRevertError as exc:
            if exc.name == "AIOracleUnexpectedStatus":
                return None
            raise

    def game_side(self, claim) -> GameSide:
        """This node's side of the bisection games about `claim`."""
        if self.games is None:
            raise ImoError(f"the oracle {self.deployment.oracle} has no dispute game wired; no bisection game can be played")
        return GameSide(self.games, self.traces, claim, self.runtime.sizes)

    def step(self) -> None:
        raise NotImplementedError

    def run_forever(self, max_backoff: float = 30.0) -> None:
        """Poll until interrupted; after an RPC failure wait (doubling up to max_backoff) and reconnect."""
        backoff = self.poll_interval
        log.info("%s %s serving models %s of %s", self.role, self.account, sorted(self.model_ids), self.deployment.oracle)
        while True:
            try:
                self.step()
                backoff = self.poll_interval
                time.sleep(self.poll_interval)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - the RPC node dropped, or a transient failure: retry from the saved state
                log.warning("%s: %s; retrying in %.0f s", self.role, str(exc).splitlines()[0][:200], backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, max_backoff)
                try:
                    self._connect()
                except ImoError:
                    pass
