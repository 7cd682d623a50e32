"""`imo`: the command line. Every command has --help; --json prints machine-readable output.
Errors are ImoErrors, caught once here and printed as one line with a non-zero exit. Every file argument is checked
by content first (imo.artifacts), and every flag either does what its help says or the command refuses it in one line."""

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from imo import artifacts
from imo.errors import ImoError, MissingArtifactError, ProofError, UnknownModelError


def _print(args: argparse.Namespace, data, human: str) -> None:
    print(json.dumps(data, indent=2) if args.json else human)


def _refuse(flag: str, why: str) -> None:
    raise ImoError(f"{flag}: {why}")


def _out_dir(path: str, flag: str = "--out") -> Path:
    """An output directory argument: anything but an existing non-directory."""
    if Path(path).exists() and not Path(path).is_dir():
        _refuse(flag, f"{path} exists and is not a directory")
    return Path(path)


def _srs(path: str | None) -> Path | None:
    if path and not Path(path).is_file():
        raise MissingArtifactError(f"--srs {path} not found (or not a file); pass the KZG SRS file the circuit was set up with")
    return Path(path) if path else None


def _describe_large(spec) -> dict:
    """`describe` for a LARGE_ZOO entry without exporting it (hundreds of MB): ops from its layers, built on meta."""
    import torch

    from imo.models import param_count

    ops: dict[str, int] = {}
    with torch.device("meta"):
        for m in spec.build().modules():
            op = {"Linear": "Gemm", "ReLU": "Relu", "Conv2d": "Conv", "Sigmoid": "Sigmoid", "Flatten": "Flatten"}.get(type(m).__name__)
            if op:
                ops[op] = ops.get(op, 0) + 1
    return {"name": spec.name, "kind": spec.kind, "description": spec.description, "input_shape": list(spec.input_shape),
            "output_shape": list(spec.output_shape), "params": param_count(spec), "ops": ops}


def cmd_models(args: argparse.Namespace) -> None:
    from imo.models import ZOO, describe
    from imo.models.zoo import LARGE_ZOO

    rows = [describe(spec) for spec in ZOO.values()]
    rows += [_describe_large(spec) for spec in LARGE_ZOO.values()]
    from imo.models.gpt import describe as describe_gpt

    rows.append(describe_gpt())  # the language model (`imo generate gpt`); its card: imo/models/gpt.py
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
    """An ONNX file, or a zoo model name (exported once into the cache)."""
    path = Path(arg)
    if path.is_file() or (path.exists() and os.sep in arg):  # zoo names hold no separator
        artifacts.require(path, artifacts.ONNX, role="model")
        return path
    from imo.models import cached_export, get_spec

    try:
        get_spec(arg)  # every zoo: ZOO and LARGE_ZOO
    except UnknownModelError as unknown:
        if not path.exists():
            raise UnknownModelError(f"{arg}: no such file and no zoo model of that name; pass an ONNX file or {str(unknown).split('; ', 1)[-1]}") from None
    else:
        return cached_export(arg).onnx_path
    artifacts.require(path, artifacts.ONNX, role="model")
    return path


def cmd_plan(args: argparse.Namespace) -> None:
    if args.out:
        _out_dir(args.out)
    if args.generate is not None:
        return _plan_generation(args)
    model = _model_path(args.model)
    from imo.circuits.plan import DEFAULT_SCALE, make_plan, write_plan

    plan, graph = make_plan(model, private=args.private, private_input=args.private_input, private_weights=args.private_weights,
                            budget_logrows=args.budget_logrows, scale=DEFAULT_SCALE if args.scale is None else args.scale, merge=not args.no_merge, tile_logrows=args.tile_logrows)
    where = ""
    if args.out:
        where = f"\nwrote {write_plan(plan, graph, Path(args.out))} (plan hash {plan.plan_hash[:16]}…)"
    _print_plan(args, plan, where)
    if exposure := plan.input_exposure():
        print(f"imo: warning: {exposure}", file=sys.stderr)


def _print_plan(args: argparse.Namespace, plan, where: str) -> None:
    lines = [f"{'seg':>3}  {'mode':<4} {'logrows':>7} {'rows':>8}  {'in → out':<22} nodes — reason"]
    for s in plan.segments:
        shapes = f"{s.input_shape} → {s.output_shape}"
        nodes = ", ".join(s.nodes) if len(s.nodes) <= 8 else f"{', '.join(s.nodes[:3])}, … ({len(s.nodes)} nodes)"
        lines.append(f"{s.index:>3}  {s.mode:<4} {s.est_logrows:>7} {s.est_rows:>8}  {shapes:<22} {nodes} — {s.reason}")
    _print(args, asdict(plan), "\n".join(lines) + where)


def _plan_generation(args: argparse.Namespace) -> None:
    """`imo plan LM --generate N`: the fixed hybrid plan of a language model (imo.circuits.generation_plan)."""
    if not args.out:
        _refuse("--generate", "writes a plan directory (the segments stream the model's weights): add --out DIR")
    for flag in ("private", "private_input", "private_weights", "budget_logrows", "tile_logrows", "no_merge"):
        if getattr(args, flag):
            _refuse("--" + flag.replace("_", "-"), "does not apply to --generate (the backbone is optimistic, the output head zk with private weights)")
    from imo.circuits.generation_plan import GENERATION_SCALE, make_generation_plan
    from imo.circuits.plan import Plan
    from imo.pipeline.generate import resolve

    lm = resolve(args.model, progress=not args.json)
    plan_file = make_generation_plan(lm.onnx_path, args.generate, Path(args.out), scale=GENERATION_SCALE if args.scale is None else args.scale)
    plan = Plan.load(plan_file)
    _print_plan(args, plan, f"\nwrote {plan_file} (plan hash {plan.plan_hash[:16]}…): {args.generate} tokens after a "
                            f"{plan.segments[0].input_shape[-1] - args.generate + 1}-byte prompt")


def cmd_compile(args: argparse.Namespace) -> None:
    artifacts.require(Path(args.plan), artifacts.PLAN, role="plan")
    if args.calibration:
        artifacts.require(Path(args.calibration), artifacts.INPUT, role="--calibration")
    from imo.circuits.plan import Plan
    from imo.proving import onnx_io
    from imo.proving.segments import compile_plan

    plan = Plan.load(Path(args.plan))  # its model path comes back absolute: the default calibration is found from anywhere
    if args.calibration:
        calibration = Path(args.calibration)
    else:
        calibration = Path(plan.model).with_name("calibration.json")
        if not calibration.is_file():
            raise MissingArtifactError(f"no calibration.json beside the plan's model {plan.model}; pass --calibration FILE (N inputs concatenated in ezkl's input format)")
    artifacts.require(calibration, artifacts.INPUT, role="--calibration")
    reports = compile_plan(Path(args.plan), onnx_io.load_batch(calibration, plan.input_signature()), quiet=args.quiet)
    lines = [f"seg {r['segment']} (op): game only, no circuit (estimated logrows {r['est_logrows']}): executor settings from the plan"
             if r.get("game_only") else
             f"seg {r['segment']}{'' if r.get('tile') is None else ' tile ' + str(r['tile'])} ({r['mode']}){' (store hit: keys reused)' if r.get('cached') else ''}: logrows {r['logrows']} (estimated {r['est_logrows']}), rows {r['num_rows']}, pk {r['pk_bytes'] / 1e6:.0f} MB, setup {r['seconds']['setup']:.1f} s" for r in reports]
    if args.public_bundle:
        from imo.proving.bundle import write_public_bundle

        bundle = write_public_bundle(Path(args.plan), Path(args.public_bundle))
        withheld = [f"seg {s['segment']}: {', '.join(s['withheld'])}" for s in bundle["segments"] if s["withheld"]]
        lines.append(f"public bundle: {bundle['plan']} (point a challenger at it: `imo node challenger --plan {bundle['plan']}`); "
                     f"withheld: {'; '.join(withheld) or 'nothing (no zk segment)'}")
        reports = {"segments": reports, "public_bundle": bundle}
    _print(args, reports, "\n".join(lines))


def cmd_prove(args: argparse.Namespace) -> None:
    kind = artifacts.require(Path(args.onnx), artifacts.ONNX, artifacts.PLAN, role="model")
    artifacts.require(Path(args.input), artifacts.INPUT, role="input")
    _out_dir(args.out)
    if kind == artifacts.PLAN:
        if args.workers is not None and args.executor == "ray":
            _refuse("--workers", "sets the local executor's pool size; the Ray executor uses the cluster's workers")
        if args.address is not None and args.executor != "ray":
            _refuse("--address", "is the Ray cluster's address; add --executor ray")
        if args.calibration:
            _refuse("--calibration", "a plan's circuits are calibrated when compiled; pass it to `imo compile PLAN --calibration FILE`")
        if args.srs:
            _refuse("--srs", "a plan's segments prove with the SRS their circuits were set up with by `imo compile`; --srs is for monolithic proofs")
        if args.gpu and args.executor == "ray":
            _refuse("--gpu", "turns on the GPU prover of this machine; Ray workers prove with whatever ezkl build they have installed")
        backend = _prover_backend(args)
        return _prove_plan(args, backend)
    for flag, value in (("--executor", args.executor), ("--workers", args.workers), ("--address", args.address)):
        if value is not None:
            _refuse(flag, f"applies to plans, whose zk segments prove in parallel; {args.onnx} is one model proven monolithically")
    if args.calibration:
        artifacts.require(Path(args.calibration), artifacts.INPUT, role="--calibration")
    srs = _srs(args.srs)
    backend = _prover_backend(args)
    from imo.pipeline.slice import prove_model

    summary = prove_model(Path(args.onnx), Path(args.input), Path(args.out), args.calibration and Path(args.calibration), srs, quiet=args.quiet)
    summary["prover"] = backend
    c, p = summary["circuit"], summary["proof"]
    human = (
        f"proved {args.onnx} → {args.out} ({backend})\n"
        f"  logrows {c['logrows']}, scale {c['input_scale']}, rows {c['num_rows']}, pk {c['pk_bytes'] / 1e6:.1f} MB, proof {p['proof_bytes']} bytes\n"
        f"  setup {c['seconds']['setup']:.2f} s, prove {p['seconds']['prove']:.2f} s (srs: {c['srs']})\n"
        f"  output {[round(v, 4) for v in p['output'][0]]}\n"
        f"  max |circuit − onnxruntime| = {p['max_abs_error']:.3g} (tolerance {p['tolerance']:.3g})"
    )
    _print(args, summary, human)


def _prover_backend(args: argparse.Namespace) -> str:
    """--gpu: ezkl's GPU backend, or one line saying what is missing (before any work starts)."""
    if not args.gpu:
        return "ezkl (CPU)"
    from imo.proving.executors import gpu_prover

    return gpu_prover()


def _prove_plan(args: argparse.Namespace, backend: str) -> None:
    import resource

    from imo.proving.executors import make_executor
    from imo.proving.segments import prove_plan

    executor = make_executor(args.executor or "local", args.workers, args.address)
    run = prove_plan(Path(args.onnx), Path(args.input), Path(args.out), executor=executor, quiet=args.quiet)
    peak = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024] + [s.get("peak_rss_bytes", 0) for s in run["segments"]])
    lines = [f"proved plan {run['plan_hash'][:16]}… → {args.out} ({backend})"]
    for seg in run["segments"]:
        if seg["mode"] == "op":
            proof = " (optimistic: no proof)"
        else:
            proof = ", proof reused from the store" if seg["proof_cached"] else f", proof {seg['prove_seconds']:.2f} s ({seg['worker']})"
        lines.append(f"  seg {seg['index']} {seg['mode']}: execute {seg['execute_seconds']:.3f} s{proof}")
    for b in run["boundaries"]:
        if b.get("chunk_commitments"):
            lines.append(f"  boundary {b['index']} hashed in {len(b['chunk_commitments'])} chunks (one commitment per tile)  ({b['name']}, shape {b['shape']})")
        elif b["commitment"] is not None:
            lines.append(f"  boundary {b['index']} hashed: C = 0x{int.from_bytes(bytes.fromhex(b['commitment']), 'little'):064x}  ({b['name']}, shape {b['shape']})")
        else:
            lines.append(f"  boundary {b['index']} public: {len(b['quantized'])} values  ({b['name']}, shape {b['shape']})")
    lines.append(f"  output {[round(v, 4) for v in run['output']]}")
    if any(b["commitment"] is not None or b.get("chunk_commitments") for b in run["boundaries"]):
        lines.append(f"  hashed tensors: {Path(args.out) / 'private'} (operator-only; share run.json and the proofs, never private/)")
    lines.append(f"done in {run['wall_seconds']:.1f} s, peak memory {peak / 2**30:.2f} GiB")
    _print(args, {**run, "prover": backend}, "\n".join(lines))


def cmd_verify(args: argparse.Namespace) -> None:
    kind = artifacts.require(Path(args.dir), artifacts.RUN_DIR, artifacts.PROOF_DIR)
    if args.rpc_url and not args.onchain:
        _refuse("--rpc-url", "is the chain --onchain verifies on; add --onchain")
    srs = _srs(args.srs)
    if kind == artifacts.RUN_DIR:
        return _verify_run(args, srs)
    if args.plan:
        _refuse("--plan", f"applies to plan runs; {args.dir} is a monolithic proof directory")
    from imo.proving import prover
    from imo.proving.circuit import CircuitFiles

    result = {"offchain_seconds": prover.verify(CircuitFiles(Path(args.dir)), srs)}
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


def _verify_run(args: argparse.Namespace, srs: Path | None) -> None:
    """A plan run: every zk proof off-chain and linked to run.json's boundaries; with --onchain, each zk segment's
    proof also by its own Solidity verifier in a transaction."""
    from imo.proving.segments import verify_run

    if args.plan:
        artifacts.require(Path(args.plan), artifacts.PLAN, role="--plan")
    result = verify_run(Path(args.plan) if args.plan else None, Path(args.dir), srs)
    if result["verified"]:
        segs = ", ".join(f"seg {v['segment']}{'' if v.get('tile') is None else ' tile ' + str(v['tile'])} ({v['verify_seconds']:.3f} s)" for v in result["verified"])
        human = f"zk proofs verify and link to the published commitments: {segs}"
    else:
        human = "no zk segment in this run: nothing to verify off-chain (op segments are checked by re-execution)"
    if args.onchain:
        from imo.pipeline.chain import chain
        from imo.pipeline.slice import verify_run_onchain

        with chain(args.rpc_url) as c:
            onchain = verify_run_onchain(Path(result["plan"]), Path(args.dir), c)
        result["onchain"] = [asdict(r) for r in onchain]
        for r in onchain:
            human += (f"\nseg {r.segment} verifies on-chain at {r.verifier_address} ({r.rpc_url}): deploy {r.deploy_gas:,} gas "
                      f"({r.verifier_runtime_bytes:,} bytes runtime), verify {r.verify_gas:,} gas")
        human += f"\ntotal verify gas {sum(r.verify_gas for r in onchain):,}"
    _print(args, result, human)


def cmd_demo(args: argparse.Namespace) -> None:
    from imo.pipeline.story import run_story

    say = (lambda line: print(line, file=sys.stderr)) if args.json else print  # --json: stdout holds only the JSON
    if args.port is not None and not args.dashboard:
        _refuse("--port", "is where --dashboard listens; add --dashboard")
    summary = run_story(Path(args.workdir), args.rpc_url, quiet=args.quiet, model=args.model, say=say,
                        dashboard=_demo_dashboard(args, say) if args.dashboard else None, llm_tokens=args.llm)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))


def _demo_dashboard(args: argparse.Namespace, say):
    """`imo demo --dashboard`: at the end of the story, write deployment.json into the workdir and serve the dashboard
    until Ctrl-C; the embedded chain stays up meanwhile."""
    def serve(deployment, _summary) -> None:
        from imo.pipeline.dashboard import Dashboard, serve_until_interrupted

        path = deployment.write(Path(args.workdir) / "deployment.json")
        say(f"the chain stays up at {deployment.rpc_url} (deployment: {path}; try `imo status --deployment {path}`)")
        serve_until_interrupted(Dashboard.of(deployment, deployment.rpc_url).serve(args.port or 0), say)
    return serve


def cmd_dashboard(args: argparse.Namespace) -> None:
    _deployment(args)
    if args.once_json and args.port is not None:
        _refuse("--port", "is where the dashboard listens; --once-json prints /api/summary and serves nothing")
    from imo.pipeline.dashboard import Dashboard, serve_until_interrupted

    dashboard = Dashboard.open(Path(args.deployment), args.rpc_url)
    if args.once_json:
        print(json.dumps(dashboard.summary(), indent=2))
        return
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    server = dashboard.serve(args.port or 0)
    if args.json:
        print(json.dumps({"url": server.url, "rpc_url": dashboard.rpc_url}), flush=True)
    serve_until_interrupted(server, say)


def cmd_bench(args: argparse.Namespace) -> None:
    from imo.models import ZOO
    from imo.pipeline.bench import run_bench

    _out_dir(args.out)
    unknown = [m for m in args.models or [] if m not in ZOO]
    if unknown:
        raise UnknownModelError(f"--models: unknown model(s) {', '.join(unknown)}; choose from: {', '.join(ZOO)}")

    if getattr(args, "dispute", False):
        if args.models or args.quick or args.llm:
            _refuse("--dispute", "benches one bisection dispute on mlp-4k alone; run --quick/--models/--llm separately")
        from imo.pipeline.bench_dispute import bench_dispute, dispute_line

        result = bench_dispute(Path(args.out), progress=not args.json)
        _print(args, result, dispute_line(result) + f"\nwrote {args.out}/dispute.json, dispute.md")
        return
    if args.llm:
        if args.models or args.quick:
            _refuse("--llm", "benches the language model alone; run --quick/--models separately (both keep each other's part of bench.json)")
        from imo.pipeline.generate import bench_llm, llm_line

        bench = bench_llm(Path(args.out), progress=not args.json)
        _print(args, bench, llm_line(bench["llm"]) + f"\nwrote {args.out}/bench.json (under llm), bench.md")
        return
    bench = run_bench(Path(args.out), quick=args.quick, models=args.models)
    _print(args, bench, (Path(args.out) / "bench.md").read_text() + f"\nwrote {args.out}/bench.json, bench.md, time.png, memory.png")


def cmd_generate(args: argparse.Namespace) -> None:
    from imo.pipeline.generate import generate, human

    engines = {"both": ("executor", "onnxruntime"), "executor": ("executor",), "onnxruntime": ("onnxruntime",)}[args.engine]
    result = generate(args.model, args.prompt, args.tokens, engines=engines, progress=not args.quiet)
    _print(args, result, human(result))


def cmd_node(args: argparse.Namespace) -> None:
    artifacts.require(Path(args.plan), artifacts.PLAN, role="--plan")
    artifacts.require(Path(args.deployment), artifacts.DEPLOYMENT, role="--deployment")
    if args.role == "challenger":
        for flag, value in (("--inbox", args.inbox), ("--dishonest", args.dishonest), ("--seed", args.seed)):
            if value is not None:
                _refuse(flag, "is an oracle option; a challenger answers no requests")
    elif args.fast_path_logrows is not None:
        _refuse("--fast-path-logrows", "is a challenger option; the oracle defends whatever dispute it gets")
    if args.seed is not None and args.dishonest is None:
        _refuse("--seed", "seeds the --dishonest choices; add --dishonest")
    if args.once and args.poll is not None:
        _refuse("--poll", "sets the time between polls; --once polls once")
    if args.inbox:
        _out_dir(args.inbox, "--inbox")
    if args.state and Path(args.state).is_dir():
        _refuse("--state", f"{args.state} is a directory; pass the sqlite file to keep the node's state in")
    import logging

    from imo.verifier_contracts.contracts import Deployment

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")

    deployment = Deployment.read(Path(args.deployment))
    rpc_url = args.rpc_url or deployment.rpc_url
    if not rpc_url:
        raise ImoError(f"{args.deployment} records no RPC URL; pass --rpc-url")
    local = deployment.local_chain is not None and not args.rpc_url
    signer = _signer(args, default_index=(1 if args.role == "oracle" else 2) if local else None)
    common = {"rpc_url": rpc_url, "deployment": deployment, "plan_file": Path(args.plan), "account": signer,
              "state": Path(args.state or f"node-{args.role}.sqlite"), "poll_interval": args.poll if args.poll is not None else 1.0}
    if args.role == "oracle":
        from imo.pipeline.oracle_node import OracleNode

        node = OracleNode(**common, inbox=Path(args.inbox) if args.inbox else None, dishonest=args.dishonest, seed=args.seed or 0)
    else:
        from imo.pipeline.challenger_node import ChallengerNode

        from imo.pipeline.game_play import FAST_PATH_MAX_LOGROWS

        limit = FAST_PATH_MAX_LOGROWS if args.fast_path_logrows is None else args.fast_path_logrows
        node = ChallengerNode(**common, fast_path_max_logrows=limit)
    if args.once:
        node.step()
        counts: dict = {}
        for r in node.state.requests():
            counts[r.status] = counts.get(r.status, 0) + 1
        report = {"account": node.account, "models": sorted(node.model_ids), "requests": counts, "warnings": node.warnings.items}
        human = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "no requests"
        return _print(args, report, "\n".join([human, *(f"warning: {w}" for w in node.warnings.items)]))
    node.run_forever()


def _signer(args: argparse.Namespace, default_index: int | None = None):
    """Who signs: --keystore, else $IMO_PRIVATE_KEY, else the unlocked --account (or default_index). A --account that
    a key would override is refused rather than ignored."""
    from imo.pipeline.keys import PRIVATE_KEY_ENV, load_signer

    keystore, account = getattr(args, "keystore", None), getattr(args, "account", None)
    if keystore:
        artifacts.require(Path(keystore), artifacts.KEYSTORE, role="--keystore")
    if account is not None and (keystore or os.environ.get(PRIVATE_KEY_ENV)):
        _refuse("--account", f"{'--keystore' if keystore else '$' + PRIVATE_KEY_ENV} already names the signing key; drop one of them")
    return load_signer(keystore, account, default_index)


def _deployment(args: argparse.Namespace) -> Path:
    artifacts.require(Path(args.deployment), artifacts.DEPLOYMENT, role="--deployment")
    return Path(args.deployment)


def _local_default(args: argparse.Namespace) -> int | None:
    """On the background anvil `imo deploy` started, its first unlocked account signs unless a key is given."""
    from imo.verifier_contracts.contracts import Deployment

    path = Path(args.deployment)
    return 0 if path.is_file() and Deployment.read(path).local_chain and not args.rpc_url else None


def cmd_deploy(args: argparse.Namespace) -> None:
    _out_dir(args.out)
    from imo.pipeline.operator import deploy

    signer = _signer(args, default_index=0 if not args.rpc_url else None)
    d = deploy(Path(args.out), signer, args.rpc_url)
    where = f"a local anvil in the background at {d.rpc_url} (pid {d.local_chain['pid']}; stop it with `kill {d.local_chain['pid']}`)" if d.local_chain else d.rpc_url
    human = (f"deployed on {where}: RevShareToken {d.token}, ModelOffering {d.offering}, AIOracle {d.oracle}, OracleConsumer {d.consumer}\n"
             f"wrote {Path(args.out) / 'deployment.json'}")
    _print(args, asdict(d), human)


def cmd_register(args: argparse.Namespace) -> None:
    artifacts.require(Path(args.plan), artifacts.PLAN, role="plan")
    from imo.circuits.plan import Plan

    Plan.load(Path(args.plan)).require_untiled("registered on chain")  # one line, before anything else
    _deployment(args)
    if args.keystore:
        artifacts.require(Path(args.keystore), artifacts.KEYSTORE, role="--keystore")
    from imo.pipeline.operator import register
    from imo.verifier_contracts.registration import Terms

    if not any(s.mode == "op" for s in Plan.load(Path(args.plan)).segments):
        for flag, value in (("--window", args.window), ("--response-window", args.response_window)):
            if value is not None:
                _refuse(flag, f"{args.plan} has no op segment, so nothing can be disputed and results are final at submit")
    window = args.window if args.window is not None else 600
    terms = Terms(args.fee, args.bond, args.operator_share_bps, window, args.response_window if args.response_window is not None else window)
    r = register(Path(args.deployment), Path(args.plan), _signer(args, _local_default(args)), args.rpc_url, args.name, terms)
    c = r["dispute_costs"]
    human = (f"registered {args.plan} as model {r['model_id']} ({r['name']})\n"
             f"  registration digest {r['digest']}  (nodes serve it only if this matches their compiled plan)\n"
             f"  fee {terms.fee_wei} wei, operator share {terms.operator_share_bps / 100:g} %, bond {terms.bond_wei} wei "
             f"(a dispute needs {c['min_bond_wei']} wei at {c['reference_gas_price_wei'] / 1e9:g} gwei)\n"
             f"  challenge / response windows {terms.challenge_window_s} / {terms.response_window_s} s (a fraud proof takes ~{c['worst_proof_s']:.0f} s here; "
             f"minimum {c['min_window_s']} s)\n  boundary sizes {r['boundary_sizes']} (0 = hashed)")
    _print(args, r, human)


def _session(args: argparse.Namespace, signer=None):
    from imo.pipeline.dapp import Session

    return Session.open(Path(args.deployment), args.rpc_url, signer)


def cmd_request(args: argparse.Namespace) -> None:
    if (args.input is None) == (args.prompt is None):
        _refuse("INPUT", "give either an input file or --prompt TEXT (a generation model), not both or neither")
    if args.input is not None:
        artifacts.require(Path(args.input), artifacts.INPUT, role="input")
    _deployment(args)
    if args.timeout is not None and not args.wait:
        _refuse("--timeout", "bounds --wait; add --wait")
    if args.gas_limit and not args.callback:
        _refuse("--gas-limit", "is the gas of the --callback call, paid in the fee; add --callback")
    if args.inbox:
        _out_dir(args.inbox, "--inbox")
    from imo.pipeline.dapp import request

    session = _session(args, _signer(args, _local_default(args)))
    if args.inbox:
        model = session.oracle.model(args.model_id)
        if model.registration.segments and model.boundary_sizes[0]:
            _refuse("--inbox", f"model {args.model_id} takes a public input, which goes on chain with the request; drop --inbox")
    r = request(session, args.model_id, args.input and Path(args.input), Path(args.inbox) if args.inbox else None, args.callback, args.gas_limit,
                wait=args.wait, timeout=args.timeout if args.timeout is not None else 3600, prompt=args.prompt)
    human = f"request {r['request_id']} for model {r['model_id']}: paid {r['fee_wei']} wei ({r['gas']:,} gas)"
    if args.wait:
        human += f"\n{r['status']}" + (f": {_result_line(r['result'])}" if r.get("result") else "")
    _print(args, r, human)


def _result_line(result: dict) -> str:
    """A finalized result as a person reads it: generated text, or values and their fixed-point form."""
    if "text" in result:
        return f"generated {result['text']!r} ({len(result['tokens'])} tokens)"
    return f"output {[round(v, 4) for v in result['output']]} (fixed point {result['values']} at scale {result['scale']})"


def cmd_status(args: argparse.Namespace) -> None:
    _deployment(args)
    from imo.pipeline.dapp import all_statuses, status

    session = _session(args)
    rows = [status(session, args.request_id)] if args.request_id else all_statuses(session)
    lines = [f"request {r['request_id']}: model {r['model_id']}, {r['status']}, fee {r['fee_wei']} wei"
             + (f", submitted by {r['submitter']}" if r["submitter"] else "") + (f", {r['open_disputes']} open dispute(s)" if r["open_disputes"] else "")
             + "".join(f"; segment {d['segment']}: " + (f"game {d['game']['id']} round {d['game']['round']}/{d['game']['rounds']}, {d['game']['to_move']} to move"
                                                          if "game" in d else "disputed with a fraud proof") for d in r.get("disputes", []))
             + (f", {_result_line(r['result'])}" if r.get("result") else "") for r in rows]
    _print(args, rows if not args.request_id else rows[0], "\n".join(lines) or "no requests")


def cmd_claim(args: argparse.Namespace) -> None:
    _deployment(args)
    from imo.pipeline.dapp import claim

    r = claim(_session(args, _signer(args, _local_default(args))), withdraw=args.withdraw)
    human = (f"{r['account']} claimed {r['claimed_wei']} wei of revenue from {len(r['claimed'])} snapshot(s)"
             + (f"; withdrew {r['withdrawn_wei']} wei of oracle credits" if args.withdraw else ""))
    _print(args, r, human)


def _number(convert, low, what: str):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (convert is float and not value < float("inf")):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


_positive_int = _number(int, 1, "a whole number of at least 1")
_non_negative_int = _number(int, 0, "a whole number of at least 0")
_positive_float = _number(float, 1e-9, "a positive number")


def _basis_points(text: str) -> int:
    value = _non_negative_int(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"{text} basis points is more than 100 %")
    return value


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
    p.add_argument("--budget-logrows", type=_positive_int, help="segments estimated above this many logrows run optimistically (op); 1: only the private layers are zk")
    p.add_argument("--scale", type=_non_negative_int, help="the common fixed-point scale of every boundary (default 7; 10 with --generate)")
    p.add_argument("--no-merge", action="store_true", help="keep one segment per layer instead of merging")
    p.add_argument("--tile-logrows", type=_positive_int, help="split a zk Gemm/MatMul layer estimated above this many logrows into column blocks, "
                   "each its own circuit and proof (off-chain only: a tiled plan cannot be registered on chain yet)")
    p.add_argument("--generate", type=_positive_int, metavar="N", help="a language model (`imo generate`'s interface) served as a greedy "
                   "generation of N tokens: an optimistic backbone (bisection game only) and a zk output head with private weights; needs --out")
    p.add_argument("--out", help="write plan.json and the segment ONNX files into this directory")

    p = command("compile", cmd_compile, "build settings, circuits and keys for every segment of a plan")
    p.add_argument("plan", help="plan.json written by `imo plan --out`")
    p.add_argument("--calibration", help="N model inputs concatenated (default: calibration.json beside the model)")
    p.add_argument("--public-bundle", metavar="DIR", help="also write what a challenger needs, and no zk segment's weights, into DIR (see README: which files are public)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("prove", cmd_prove, "prove one inference: monolithically (ONNX) or segment by segment (plan.json)")
    p.add_argument("onnx", metavar="ONNX|PLAN", help="ONNX model file (monolithic) or plan.json (compiled with `imo compile`)")
    p.add_argument("input", help='input JSON in ezkl format: {"input_data": [[...]]}')
    p.add_argument("--out", required=True, help="output directory for settings, keys, verifier, witness and proof (written atomically)")
    p.add_argument("--calibration", help="ONNX only: input JSON with N samples concatenated, used to calibrate scales (default: the input itself; plans are calibrated by `imo compile`)")
    p.add_argument("--srs", help="ONNX only: KZG SRS file from a public ceremony (default: a cached development SRS from ezkl.gen_srs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", choices=["local", "ray"], help="plans only: prove zk segments in a local process pool (default) or on a Ray cluster")
    p.add_argument("--workers", type=_positive_int, help="plans, local executor: parallel provers (default: CPU count; memory-aware)")
    p.add_argument("--address", help="plans, Ray executor: cluster address, e.g. 127.0.0.1:6379 (default: start/attach a local Ray)")
    p.add_argument("--gpu", action="store_true", help="prove with an ezkl GPU build (ezkl-gpu); an error if none is installed")

    p = command("verify", cmd_verify, "verify a proof directory off-chain and, with --onchain, with its Solidity verifier on a chain")
    p.add_argument("dir", help="directory written by `imo prove`")
    p.add_argument("--plan", help="for a plan run: the plan.json (default: the one recorded in run.json)")
    p.add_argument("--onchain", action="store_true", help="deploy the generated verifier (for a plan run: each zk segment's) and verify in a transaction; prints gas")
    p.add_argument("--rpc-url", help="--onchain: JSON-RPC node with unlocked accounts (default: an embedded anvil on 127.0.0.1)")
    p.add_argument("--srs", help="the SRS file the proof was made with, if not the cached development one")

    p = command("generate", cmd_generate, "greedy byte-level text generation with a zoo language model (gpt) on the canonical fixed-point executor, and onnxruntime in float for comparison")
    p.add_argument("model", help="zoo language model name (gpt; trained and exported once into the cache) or an ONNX file of the same interface")
    p.add_argument("--prompt", required=True, help="UTF-8 text to continue (cropped to the model's context, left-padded with spaces)")
    p.add_argument("--tokens", type=_positive_int, default=16, help="new bytes to generate (default 16)")
    p.add_argument("--engine", choices=["both", "executor", "onnxruntime"], default="both", help="which engines decode (default both: the executor, then onnxruntime)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("bench", cmd_bench, "measure monolithic vs segmented vs hybrid proving side by side; writes bench.json, bench.md and PNG plots")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quick", action="store_true", help="mlp only, fewer repeats (under 3 minutes on 2 cores)")
    p.add_argument("--models", nargs="+", help="zoo models to bench (default: every zoo model; --quick: mlp)")
    p.add_argument("--dispute", action="store_true", help="play one bisection dispute over mlp-4k's whole network as ONE game-only op segment (~101M MACs) on a fresh anvil: a liar against a challenger; writes dispute.json and dispute.md (gas per move, rounds, estimated monolithic logrows)")
    p.add_argument("--llm", action="store_true", help="bench the gpt language model instead: executor vs onnxruntime per token, 16 tokens after a 128-byte prompt, peak RSS, the zk output head's proof (bench.json under llm)")

    def chain_options(p: argparse.ArgumentParser, signs: bool = True) -> None:
        p.add_argument("--deployment", default="deployment.json", help="deployment.json written by `imo deploy` (default ./deployment.json)")
        p.add_argument("--rpc-url", help="JSON-RPC endpoint (default: the one recorded in the deployment)")
        if signs:
            p.add_argument("--keystore", help="encrypted keystore of the signing key (password in $IMO_KEYSTORE_PASSWORD); or set $IMO_PRIVATE_KEY")
            p.add_argument("--account", help="development chains only: the default mnemonic's key N (signs locally), or an address the RPC node unlocks")

    p = command("deploy", cmd_deploy, "deploy the protocol (RevShareToken and its sale, AIOracle, an example consumer) and write deployment.json")
    p.add_argument("--rpc-url", help="JSON-RPC endpoint (default: start a local anvil in the background, its state kept in --out)")
    p.add_argument("--out", default=".", help="directory for deployment.json (default: the current directory)")
    p.add_argument("--keystore", help="encrypted keystore of the deployer key (password in $IMO_KEYSTORE_PASSWORD); or set $IMO_PRIVATE_KEY")
    p.add_argument("--account", help="development chains only: the default mnemonic's key N (signs locally; default on the local anvil: 0), or an address the RPC node unlocks")

    p = command("register", cmd_register, "deploy a compiled plan's verifiers and register it with the AIOracle; prints the model id and registration digest")
    p.add_argument("plan", help="plan.json compiled with `imo compile`")
    p.add_argument("--name", help="name recorded in deployment.json (default: the model file's name)")
    p.add_argument("--fee", type=_non_negative_int, default=10**15, help="fee per inference in wei (default 1e15)")
    p.add_argument("--bond", type=_non_negative_int, default=2 * 10**16, help="bond of submitters and challengers in wei (default 2e16; must cover a dispute)")
    p.add_argument("--operator-share-bps", type=_basis_points, default=2_000, help="operator's share of the fee in basis points, 0 to 10000 (default 2000)")
    p.add_argument("--window", type=_positive_int, help="plans with op segments: challenge window in seconds (default 600; refused if shorter than a dispute needs)")
    p.add_argument("--response-window", type=_positive_int, help="plans with op segments: seconds the submitter has to answer a dispute (default: --window)")
    chain_options(p)

    p = command("request", cmd_request, "pay for an inference: the input's commitment (private input, the input itself goes to the oracle's inbox) or the input itself (public)")
    p.add_argument("model_id", type=int, help="registered model id (see `imo register`)")
    p.add_argument("input", nargs="?", help='input JSON in ezkl format: {"input_data": [[...]]} (not for a generation model)')
    p.add_argument("--prompt", help="a generation model's prompt (UTF-8 text; its last bytes fill the model's prompt window); the result is the generated text")
    p.add_argument("--inbox", help="private-input models: the oracle node's inbox directory, where the input is delivered off-chain")
    p.add_argument("--callback", help="contract to receive the result (aiOracleCallback); default none")
    p.add_argument("--gas-limit", type=_non_negative_int, default=0, help="gas for the --callback call, paid in the fee (default 0)")
    p.add_argument("--wait", action="store_true", help="wait until the result is final and print it")
    p.add_argument("--timeout", type=_positive_float, help="--wait: give up after this many seconds (default 3600)")
    chain_options(p)

    p = command("status", cmd_status, "show one request (or all) on the oracle: status, fee, submitter, disputes, output")
    p.add_argument("request_id", type=int, nargs="?", help="request id (default: all requests)")
    chain_options(p, signs=False)

    p = command("claim", cmd_claim, "claim your RevShareToken revenue at every snapshot that has some for you")
    p.add_argument("--withdraw", action="store_true", help="also withdraw what the oracle credits you (operator payouts, bonds, refunds)")
    chain_options(p)

    p = command("node", cmd_node, "run an oracle node (answers requests) or a challenger node (fraud proofs, finalize) with sqlite state")
    p.add_argument("role", choices=["oracle", "challenger"])
    p.add_argument("--rpc-url", help="JSON-RPC endpoint of the chain (default: the one recorded in the deployment)")
    p.add_argument("--deployment", default="deployment.json", help="deployment.json written by `imo deploy` (default ./deployment.json)")
    p.add_argument("--plan", required=True, help="the compiled plan.json of the model(s) to serve (matched by plan hash)")
    p.add_argument("--state", help="sqlite file with the node's work; a restart resumes from it (default node-ROLE.sqlite)")
    p.add_argument("--keystore", help="encrypted keystore file of the signing key (password in $IMO_KEYSTORE_PASSWORD); or set $IMO_PRIVATE_KEY")
    p.add_argument("--account", help="development chains only: the default mnemonic's key N, signing locally (on the local anvil of `imo deploy`: 1 oracle, 2 challenger), or an address the RPC node unlocks")
    p.add_argument("--inbox", help="oracle: directory of private inputs named <C_0 as 0x hex>.json (ezkl input format)")
    p.add_argument("--dishonest", choices=["boundary", "output", "proof", "commitment", "random"], help="oracle, tests and demo only: corrupt every answer this way")
    p.add_argument("--seed", type=int, help="oracle: seed of the --dishonest choices (default 0)")
    p.add_argument("--fast-path-logrows", type=_non_negative_int,
                   help="challenger: dispute a wrong op segment with one ezkl proof of the whole segment only up to 2^N circuit "
                        "rows, above that (or with no verifier) with the bisection game (default 17; 0: always the game "
                        "where the segment has a step program)")
    p.add_argument("--poll", type=_positive_float, help="seconds between polls (default 1; not with --once)")
    p.add_argument("--once", action="store_true", help="one poll iteration, then print the request counts by status and any warnings")
    p.add_argument("--quiet", action="store_true", help="log warnings only")

    p = command("demo", cmd_demo, "run the end-to-end story on an embedded anvil and print what happened")
    p.add_argument("--workdir", default="out/demo", help="where artifacts go (default out/demo)")
    p.add_argument("--summary", help="write a JSON summary to this file")
    p.add_argument("--rpc-url", help="use this JSON-RPC node instead of an embedded anvil")
    p.add_argument("--model", default="mlp-wide", help="the classifier the IMO is for (default mlp-wide; mlp is quick)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dashboard", action="store_true", help="at the end, keep the chain up and serve the web dashboard until Ctrl-C (prints its URL)")
    p.add_argument("--port", type=_non_negative_int, help="--dashboard: port on 127.0.0.1 (default: any free port)")
    p.add_argument("--llm", type=_positive_int, nargs="?", const=4, metavar="TOKENS", help="an extra act: the 114M-parameter gpt answers a "
                   "question through the oracle (TOKENS generated, default 4; first run: ~10 min and ~10 GB to export the model and build its step program)")

    p = command("dashboard", cmd_dashboard, "serve a read-only web dashboard of a deployment on 127.0.0.1: requests, segments and proofs, disputes, revenue and claims, AIGC NFTs")
    p.add_argument("--deployment", default="deployment.json", help="deployment.json written by `imo deploy` (default ./deployment.json)")
    p.add_argument("--rpc-url", help="JSON-RPC endpoint (default: the one recorded in the deployment)")
    p.add_argument("--port", type=_non_negative_int, help="port on 127.0.0.1 (default: any free port; the URL is printed)")
    p.add_argument("--once-json", action="store_true", help="print /api/summary once as JSON and exit (for scripts)")
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # misuse of the command line: argparse's usage line, exit 2
    try:
        args.fn(args)
    except ImoError as exc:
        print(f"imo: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imo: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk is full, a permission is missing, ...: the system's own words, one line
        print(f"imo: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug in imo: still one line, saying where, and how to see more
        if os.environ.get("IMO_DEBUG"):
            raise
        import traceback

        frame = traceback.extract_tb(exc.__traceback__)[-1]
        message = _one_line(exc).removeprefix(type(exc).__name__)
        print(f"imo: error: unexpected {type(exc).__name__}{': ' + message if message else ''} at {Path(frame.filename).name}:{frame.lineno} "
              f"(a bug in imo; IMO_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
