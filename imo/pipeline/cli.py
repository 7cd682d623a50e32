"""`imo`: the command line. Every command has --help; --json prints machine-readable output.
Errors are ImoErrors, caught once here and printed as one line with a non-zero exit."""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from imo.errors import ImoError, ProofError


def _print(args: argparse.Namespace, data, human: str) -> None:
    print(json.dumps(data, indent=2) if args.json else human)


def cmd_models(args: argparse.Namespace) -> None:
    from imo.models import ZOO, describe

    rows = [describe(spec) for spec in ZOO.values()]
    lines = [f"{'model':<10} {'kind':<10} {'params':>8}  {'input':<14} ops"]
    for r in rows:
        ops = ", ".join(f"{op}×{n}" for op, n in sorted(r["ops"].items()))
        lines.append(f"{r['name']:<10} {r['kind']:<10} {r['params']:>8}  {str(list(r['input_shape'])):<14} {ops}")
    _print(args, rows, "\n".join(lines))


def cmd_export(args: argparse.Namespace) -> None:
    from imo.models import export_model

    exported = export_model(args.model, Path(args.out), seed=args.seed)
    card = json.loads(exported.card_path.read_text())
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in card["metrics"].items())
    _print(args, card, f"exported {args.model} to {args.out}: {exported.onnx_path.name}, {exported.input_path.name}, {exported.card_path.name} ({card['params']} params, {metrics})")


def _model_path(arg: str) -> Path:
    """An ONNX path, or a zoo model name (exported once into the cache)."""
    if Path(arg).exists() or arg.endswith(".onnx"):
        return Path(arg)
    from imo.models import cached_export

    return cached_export(arg).onnx_path


def cmd_plan(args: argparse.Namespace) -> None:
    from imo.circuits.plan import make_plan, write_plan

    plan, graph = make_plan(_model_path(args.model), private=args.private, private_input=args.private_input, private_weights=args.private_weights,
                            budget_logrows=args.budget_logrows, scale=args.scale, merge=not args.no_merge)
    where = ""
    if args.out:
        where = f"\nwrote {write_plan(plan, graph, Path(args.out))} (plan hash {plan.plan_hash[:16]}…)"
    lines = [f"{'seg':>3}  {'mode':<4} {'logrows':>7} {'rows':>8}  {'in → out':<22} nodes — reason"]
    for s in plan.segments:
        shapes = f"{s.input_shape} → {s.output_shape}"
        lines.append(f"{s.index:>3}  {s.mode:<4} {s.est_logrows:>7} {s.est_rows:>8}  {shapes:<22} {', '.join(s.nodes)} — {s.reason}")
    _print(args, asdict(plan), "\n".join(lines) + where)


def cmd_compile(args: argparse.Namespace) -> None:
    from imo.circuits.plan import Plan
    from imo.proving import onnx_io
    from imo.proving.segments import compile_plan

    plan = Plan.load(Path(args.plan))
    calibration = Path(args.calibration) if args.calibration else Path(plan.model).with_name("calibration.json")
    reports = compile_plan(Path(args.plan), onnx_io.load_batch(calibration, plan.input_signature()), quiet=args.quiet)
    lines = [f"seg {r['segment']} ({r['mode']}): logrows {r['logrows']} (estimated {r['est_logrows']}), rows {r['num_rows']}, pk {r['pk_bytes'] / 1e6:.0f} MB, setup {r['seconds']['setup']:.1f} s" for r in reports]
    _print(args, reports, "\n".join(lines))


def cmd_prove(args: argparse.Namespace) -> None:
    if args.onnx.endswith(".json"):
        return _prove_plan(args)
    from imo.pipeline.slice import prove_model

    summary = prove_model(Path(args.onnx), Path(args.input), Path(args.out), args.calibration and Path(args.calibration), args.srs and Path(args.srs), quiet=args.quiet)
    c, p = summary["circuit"], summary["proof"]
    human = (
        f"proved {args.onnx} → {args.out}\n"
        f"  logrows {c['logrows']}, scale {c['input_scale']}, rows {c['num_rows']}, pk {c['pk_bytes'] / 1e6:.1f} MB, proof {p['proof_bytes']} bytes\n"
        f"  setup {c['seconds']['setup']:.2f} s, prove {p['seconds']['prove']:.2f} s (srs: {c['srs']})\n"
        f"  output {[round(v, 4) for v in p['output'][0]]}\n"
        f"  max |circuit − onnxruntime| = {p['max_abs_error']:.3g} (tolerance {p['tolerance']:.3g})"
    )
    _print(args, summary, human)


def _prove_plan(args: argparse.Namespace) -> None:
    import resource

    from imo.proving.executors import gpu_prover, make_executor
    from imo.proving.segments import prove_plan

    if args.gpu:
        gpu_prover()
    executor = make_executor(args.executor, args.workers, args.address)
    run = prove_plan(Path(args.onnx), Path(args.input), Path(args.out), executor=executor, quiet=args.quiet)
    peak = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024] + [s.get("peak_rss_bytes", 0) for s in run["segments"]])
    lines = [f"proved plan {run['plan_hash'][:16]}… → {args.out}"]
    for seg in run["segments"]:
        if seg["mode"] == "op":
            proof = " (optimistic: no proof)"
        else:
            proof = ", proof reused from the store" if seg["proof_cached"] else f", proof {seg['prove_seconds']:.2f} s ({seg['worker']})"
        lines.append(f"  seg {seg['index']} {seg['mode']}: execute {seg['execute_seconds']:.3f} s{proof}")
    for b in run["boundaries"]:
        lines.append(f"  C_{b['index']} = 0x{int.from_bytes(bytes.fromhex(b['commitment']), 'little'):064x}  ({b['name']}, shape {b['shape']})")
    lines.append(f"  output {[round(v, 4) for v in run['output']]}")
    lines.append(f"done in {run['wall_seconds']:.1f} s, peak memory {peak / 2**30:.2f} GiB")
    _print(args, run, "\n".join(lines))


def cmd_verify(args: argparse.Namespace) -> None:
    if (Path(args.dir) / "run.json").is_file():
        from imo.proving.segments import verify_run

        plan = args.plan or json.loads((Path(args.dir) / "run.json").read_text())["plan"]
        result = verify_run(Path(plan), Path(args.dir))
        segs = ", ".join(f"seg {v['segment']} ({v['verify_seconds']:.3f} s)" for v in result["verified"])
        return _print(args, result, f"zk proofs verify and link to the published commitments: {segs}")
    from imo.proving import prover
    from imo.proving.circuit import CircuitFiles

    result = {"offchain_seconds": prover.verify(CircuitFiles(Path(args.dir)), args.srs and Path(args.srs))}
    human = f"proof in {args.dir} verifies off-chain ({result['offchain_seconds']:.3f} s)"
    if args.onchain:
        from imo.pipeline.chain import chain
        from imo.pipeline.slice import verify_proof_onchain

        with chain(args.rpc_url) as c:
            onchain = verify_proof_onchain(Path(args.dir), c)
        if not onchain.accepted:
            raise ProofError(f"the on-chain verifier at {onchain.verifier_address} rejected the proof in {args.dir}")
        result["onchain"] = asdict(onchain)
        human += f"\nverifies on-chain at {onchain.verifier_address} ({onchain.rpc_url}): deploy {onchain.deploy_gas:,} gas ({onchain.verifier_runtime_bytes:,} bytes runtime), verify {onchain.verify_gas:,} gas"
    _print(args, result, human)


def cmd_demo(args: argparse.Namespace) -> None:
    from imo.pipeline.story import run_story

    say = (lambda line: print(line, file=sys.stderr)) if args.json else print  # --json: stdout holds only the JSON
    summary = run_story(Path(args.workdir), args.rpc_url, quiet=args.quiet, model=args.model, say=say)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))


def cmd_bench(args: argparse.Namespace) -> None:
    from imo.pipeline.bench import run_bench

    bench = run_bench(Path(args.out), quick=args.quick, models=args.models)
    _print(args, bench, (Path(args.out) / "bench.md").read_text() + f"\nwrote {args.out}/bench.json, bench.md, time.png, memory.png")


def cmd_node(args: argparse.Namespace) -> None:
    import logging

    from imo.pipeline.nodes import ChallengerNode, OracleNode

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    account = int(args.account) if args.account and args.account.isdigit() else args.account or (1 if args.role == "oracle" else 2)
    common = {"rpc_url": args.rpc_url, "deployment": Path(args.deployment), "plan_file": Path(args.plan), "account": account,
              "state": Path(args.state or f"node-{args.role}.sqlite"), "poll_interval": args.poll}
    if args.role == "oracle":
        node = OracleNode(**common, inbox=Path(args.inbox) if args.inbox else None, dishonest=args.dishonest, seed=args.seed)
    else:
        node = ChallengerNode(**common)
    if args.once:
        node.step()
        counts: dict = {}
        for r in node.state.requests():
            counts[r.status] = counts.get(r.status, 0) + 1
        return _print(args, counts, ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no requests")
    node.run_forever()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imo", description="Initial Model Offerings: verifiable AI inference (ezkl zk-SNARKs + optimistic fraud proofs) whose fees flow to an ERC-7641 revenue-share token.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(fn=fn)
        return p

    command("models", cmd_models, "list the model zoo with sizes and ONNX ops")

    p = command("export", cmd_export, "train a zoo model on sklearn digits and export model.onnx, input.json and card.json")
    p.add_argument("model", help="zoo model name (see `imo models`)")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")

    p = command("plan", cmd_plan, "split a model into zk and op segments (the hybrid plan) and print or write it")
    p.add_argument("model", help="ONNX file or zoo model name")
    p.add_argument("--private", nargs="+", default=[], metavar="NODE", help="node names that must be proven in zk")
    p.add_argument("--private-input", action="store_true", help="the layer(s) reading the user's input must be zk")
    p.add_argument("--private-weights", action="store_true", help="every node with weights must be zk")
    p.add_argument("--budget-logrows", type=int, help="segments estimated above this many logrows run optimistically (op)")
    p.add_argument("--scale", type=int, default=7, help="the common fixed-point scale of every boundary (default 7)")
    p.add_argument("--no-merge", action="store_true", help="keep one segment per layer instead of merging")
    p.add_argument("--out", help="write plan.json and the segment ONNX files into this directory")

    p = command("compile", cmd_compile, "build settings, circuits and keys for every segment of a plan")
    p.add_argument("plan", help="plan.json written by `imo plan --out`")
    p.add_argument("--calibration", help="N model inputs concatenated (default: calibration.json beside the model)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("prove", cmd_prove, "prove one inference: monolithically (ONNX) or segment by segment (plan.json)")
    p.add_argument("onnx", metavar="ONNX|PLAN", help="ONNX model file (monolithic) or plan.json (compiled with `imo compile`)")
    p.add_argument("input", help='input JSON in ezkl format: {"input_data": [[...]]}')
    p.add_argument("--out", required=True, help="output directory for settings, keys, verifier, witness and proof (written atomically)")
    p.add_argument("--calibration", help="input JSON with N samples concatenated, used to calibrate scales (default: the input itself)")
    p.add_argument("--srs", help="KZG SRS file from a public ceremony (default: a cached development SRS from ezkl.gen_srs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="plans only: prove zk segments in a local process pool (default) or on a Ray cluster")
    p.add_argument("--workers", type=int, help="local executor: parallel provers (default: CPU count; memory-aware)")
    p.add_argument("--address", help="Ray executor: cluster address, e.g. 127.0.0.1:6379 (default: start/attach a local Ray)")
    p.add_argument("--gpu", action="store_true", help="prove with an ezkl GPU build (ezkl-gpu); an error if none is installed")

    p = command("verify", cmd_verify, "verify a proof directory off-chain and, with --onchain, with its Solidity verifier on a chain")
    p.add_argument("dir", help="directory written by `imo prove`")
    p.add_argument("--plan", help="for a plan run: the plan.json (default: the one recorded in run.json)")
    p.add_argument("--onchain", action="store_true", help="deploy the generated verifier and verify in a transaction; prints gas")
    p.add_argument("--rpc-url", help="JSON-RPC node with unlocked accounts (default: an embedded anvil on 127.0.0.1)")
    p.add_argument("--srs", help="the SRS file the proof was made with, if not the cached development one")

    p = command("bench", cmd_bench, "measure monolithic vs segmented vs hybrid proving side by side; writes bench.json, bench.md and PNG plots")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="mlp only, fewer repeats (under 3 minutes on 2 cores)")
    p.add_argument("--models", nargs="+", help="zoo models to bench (default: mlp cnn mlp-wide; --quick: mlp)")

    p = command("node", cmd_node, "run an oracle node (answers requests) or a challenger node (fraud proofs, finalize) with sqlite state")
    p.add_argument("role", choices=["oracle", "challenger"])
    p.add_argument("--rpc-url", required=True, help="JSON-RPC node with unlocked accounts")
    p.add_argument("--deployment", required=True, help="deployment.json written by `imo deploy`")
    p.add_argument("--plan", required=True, help="the compiled plan.json of the model(s) to serve (matched by plan hash)")
    p.add_argument("--state", help="sqlite file with the node's work; a restart resumes from it (default node-ROLE.sqlite)")
    p.add_argument("--account", help="sender: an index into the node's unlocked accounts or an address (default 1 oracle, 2 challenger)")
    p.add_argument("--inbox", help="oracle: directory of private inputs named <C_0 as 0x hex>.json (ezkl input format)")
    p.add_argument("--dishonest", choices=["boundary", "output", "commitment", "random"], help="oracle, tests and demo only: corrupt every answer this way")
    p.add_argument("--seed", type=int, default=0, help="oracle: seed of the --dishonest choices")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between polls (default 1)")
    p.add_argument("--once", action="store_true", help="one poll iteration, then print the request counts by status")
    p.add_argument("--quiet", action="store_true", help="log warnings only")

    p = command("demo", cmd_demo, "run the end-to-end story on an embedded anvil and print what happened")
    p.add_argument("--workdir", default="out/demo", help="where artifacts go (default out/demo)")
    p.add_argument("--summary", help="write a JSON summary to this file")
    p.add_argument("--rpc-url", help="use this JSON-RPC node instead of an embedded anvil")
    p.add_argument("--model", default="mlp-wide", help="the classifier the IMO is for (default mlp-wide; mlp is quick)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except ImoError as exc:
        print(f"imo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
