"""`kubenas` command line: search (local mode), validate, export, operator, dev-cluster."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import yaml

from kubenas import spec as specs

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubenas", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="run a NeuralArchitectureSearch manifest on this machine")
    search.add_argument("manifest", type=Path, help="YAML file holding one NeuralArchitectureSearch")
    search.add_argument("--runs-dir", type=Path, default=Path("runs"), help="results go to RUNS_DIR/<name>/ (default: runs)")
    mode = search.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the search recorded in the run directory")
    mode.add_argument("--restart", action="store_true", help="discard the recorded search and start over")
    search.add_argument("--parallelism", type=int, help="children at once (default: spec.parallelism, capped by the cores)")
    search.add_argument("--max-trials", type=int, help="override spec.maxTrials")
    search.add_argument("--no-live", action="store_true", help="one log line per child instead of a live panel")
    search.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics while the search runs")
    search.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help="address to serve them on (default: 127.0.0.1)")

    validate = commands.add_parser("validate", help="check a manifest and print it with every default filled in")
    validate.add_argument("manifest", type=Path)

    export = commands.add_parser("export", help="write a standalone PyTorch module file for an architecture")
    export.add_argument("architecture", type=Path, help="architecture JSON, or a best.json (any JSON object with an `architecture` field)")
    export.add_argument("-o", "--output", type=Path, required=True, help="the .py file to write")
    export.add_argument("--in-channels", type=int, default=3, help="image channels build() defaults to (digits: 1)")
    export.add_argument("--num-classes", type=int, default=10, help="classes build() defaults to")
    export.add_argument("--weights", type=Path, metavar="PT",
                        help="a state_dict (a retrained child's model.pt) to bundle: copied beside the module as "
                             "<output>.pt, loaded by the module's load()")

    operator = commands.add_parser("operator", help="run the Kubernetes operator (kopf) against a cluster")
    operator.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
    operator.add_argument("--context", help="kubeconfig context (default: the current one)")
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    operator.add_argument("--liveness", metavar="URL", help="serve a liveness probe, e.g. http://0.0.0.0:8081/healthz")
    operator.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on PORT (/metrics)")
    operator.add_argument("--metrics-host", default="0.0.0.0", metavar="HOST", help="address to serve them on (default: 0.0.0.0)")
    operator.add_argument("--trainer-defaults", metavar="FILE",
                          help="YAML defaults for children's pods (image, resources, tolerations, …) that a search's "
                               "trial.template leaves unset")
    operator.add_argument("--tabular-dir", metavar="DIR", type=Path,
                          help="Tabular searches may read CSV tables under DIR (paths relative to it; nothing outside "
                               "it, symlinks included). Default: none, only the built-in tables")
    operator.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    from kubenas.localcluster import devcluster

    dev_cluster = commands.add_parser(
        "dev-cluster", help="run real Kubernetes on this machine (etcd, API server, controllers, scheduler and a "
                            "kubelet whose pods are local processes), built by `make tools`"
    )
    devcluster.add_arguments(dev_cluster)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "search":
            return _search(args)
        if args.command == "validate":
            manifest = specs.load_manifest(args.manifest)
            print(yaml.safe_dump(manifest.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False), end="")
            return EXIT_OK
        if args.command == "operator":
            from kubenas.operator import run
            from kubenas.operator.trainer_defaults import TrainerDefaultsError

            try:
                return run(kubeconfig=args.kubeconfig, context=args.context, namespaces=args.namespace,
                           verbose=args.verbose, liveness=args.liveness, metrics_port=args.metrics_port,
                           metrics_host=args.metrics_host, trainer_defaults=args.trainer_defaults,
                           tabular_dir=args.tabular_dir)
            except TrainerDefaultsError as error:
                print(f"kubenas: --trainer-defaults {error}", file=sys.stderr)
                return EXIT_USAGE
        if args.command == "dev-cluster":
            from kubenas.localcluster import devcluster

            return devcluster.run(args)
        if args.command == "export":
            from kubenas.export import export_model

            bundled = export_model(
                source=args.architecture, output=args.output, in_channels=args.in_channels, num_classes=args.num_classes,
                weights=args.weights,
            )
            print(f"wrote {args.output}" + (f" and {bundled} (its weights: load())" if bundled else ""))
            return EXIT_OK
    except specs.SpecError as error:
        print(f"kubenas: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE


def _search(args: argparse.Namespace) -> int:
    from kubenas.local import RunExists, run_search
    from kubenas.search import CheckpointMismatch
    from kubenas.spaces import summarize
    from kubenas.progress import Progress

    raw = specs.read_manifest_document(args.manifest)
    if args.max_trials is not None and isinstance(raw.get("spec"), dict):
        raw["spec"]["maxTrials"] = args.max_trials
    manifest = specs.parse_manifest(raw, source=str(args.manifest))
    name = manifest.metadata.name
    progress = Progress(name=name, live=False if args.no_live else None)
    try:
        result = asyncio.run(
            run_search(
                manifest, raw, runs_dir=args.runs_dir, resume=args.resume, restart=args.restart,
                parallelism=args.parallelism, progress=progress, metrics_port=args.metrics_port,
                metrics_host=args.metrics_host,
            )
        )
    except RunExists as error:
        print(f"kubenas: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointMismatch as error:
        print(f"kubenas: cannot resume {name}: {error}", file=sys.stderr)
        return EXIT_USAGE
    search, run = result.search, result.run
    counters = search.counters
    print(
        f"[{name}] {result.phase}: {counters.succeeded} succeeded, {counters.failed} failed, "
        f"{len(search.in_flight)} unfinished; policy version {search.controller.version}"
    )
    if search.best is not None:
        best = search.best
        accuracy = "" if best.validation_accuracy is None else f", validation accuracy {best.validation_accuracy:.4f}"
        print(f"[{name}] best: child {best.index}, reward {best.reward:.4f}{accuracy} -> {run.best_file}")
        for rank, child in enumerate(search.top_k(5), start=1):
            print(f"[{name}]   #{rank} child {child.index} reward {child.reward:.4f}  {summarize(child.architecture)}")
    if result.usage is not None:
        print(f"[{name}] compute: {result.usage['cpuHours']:.4f} CPU-hours, {result.usage['gpuHours']:.4f} GPU-hours"
              + (f"; stopped by spec.budget ({result.reason})" if result.reason == "BudgetExhausted" else ""))
    for entry in result.retrain or []:
        figures = (f"test accuracy {entry['testAccuracy']:.4f}, validation accuracy {entry['validationAccuracy']:.4f}"
                   if entry["phase"] == "Succeeded" else f"failed: {entry['reason']}")
        print(f"[{name}] retrained #{entry['rank']} child {entry['index']}: {figures}"
              + (f" -> {entry['modelPath']}" if entry["modelPath"] else ""))
    if result.cache is not None and result.cache.hits:
        print(f"[{name}] cache: {result.cache.hits} children reused an identical child's result, "
              f"{result.cache.saved_seconds:.0f}s of training saved")
    print(f"[{name}] records: {run.path}/ (trials.jsonl, best.json, reward.png)")
    if result.phase == "Interrupted":
        print(f"[{name}] interrupted: continue with `kubenas search {args.manifest} --resume`")
        return EXIT_INTERRUPTED
    if result.phase == "Failed":
        print(f"[{name}] failed: {result.reason}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
