"""The `rollouts` command line. Exit codes: 0 success, 1 rejected input or failed operation, 2 usage error."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from shared import subjects
from shared.settings import DEFAULT_NATS_URL, Settings

VERBS = ("promote", "abort", "retry", "pause", "resume", "undo", "restart", "delete")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--nats",
        default=os.environ.get("NATS_URL", DEFAULT_NATS_URL),
        help="NATS URL (default $NATS_URL, else %(default)s)",
    )
    p = argparse.ArgumentParser(
        prog="rollouts", description="Progressive delivery over NATS JetStream", parents=[common]
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up", parents=[common], help="run the four services (and optionally an embedded nats-server)"
    )
    up.add_argument("--embedded-nats", action="store_true", help="start a nats-server with JetStream too")
    up.add_argument(
        "--state-dir", type=Path, default=None, help="where JetStream and replica logs are stored"
    )
    up.add_argument("--platform", choices=("local", "noop"), default="local")
    up.add_argument(
        "--router",
        choices=("proxy", "nginx", "noop"),
        default=None,
        help="the traffic-shifter's router: the built-in proxy (default with local) or a local nginx",
    )
    up.add_argument("--analyzers", type=int, default=1, help="number of analyzer processes")
    up.add_argument(
        "--planners", type=int, default=1, help="planner processes (one leads, the others stand by)"
    )
    up.add_argument("--admin-port", type=int, default=None, help="traffic-shifter admin port")

    run = sub.add_parser("run", parents=[common], help="run one service in the foreground")
    run.add_argument("service", choices=("planner", "traffic-shifter", "analyzer", "scaler"))
    run.add_argument(
        "--platform",
        choices=("local", "noop", "kubernetes"),
        default="local",
        help="local processes (default), noop (benchmarks), or Kubernetes (ReplicaSets, Rollout resources)",
    )
    run.add_argument(
        "--router",
        choices=("proxy", "nginx", "kubernetes", "noop"),
        default=None,
        help="traffic-shifter: the built-in proxy, a local nginx, Kubernetes routers (Istio, NGINX Ingress, "
        "Gateway API, SMI); default: the platform's own",
    )
    run.add_argument("--concurrency", type=int, default=None, help="analyzer: measurements taken at once")

    apply = sub.add_parser("apply", parents=[common], help="apply Rollouts and AnalysisTemplates from a file")
    apply.add_argument("-f", "--filename", required=True, help="YAML or JSON file ('-' for stdin)")
    apply.add_argument("-n", "--namespace", default=None)

    lint = sub.add_parser("lint", parents=[common], help="validate a file without applying it")
    lint.add_argument("-f", "--filename", required=True)

    plan = sub.add_parser(
        "plan", parents=[common], help="print the timeline each Rollout in a file will follow"
    )
    plan.add_argument("-f", "--filename", required=True, help="YAML or JSON file ('-' for stdin)")
    plan.add_argument("-o", "--output", choices=("json",), default=None)

    status = sub.add_parser(
        "status", parents=[common], help="print a rollout's status (exit 1 when Degraded)"
    )
    status.add_argument("name")
    status.add_argument("-n", "--namespace", default="default")
    status.add_argument("-w", "--watch", action="store_true", help="follow until Healthy or Degraded")
    status.add_argument(
        "--timeout", type=float, default=None, help="with --watch: give up after SECONDS (0: never)"
    )

    get = sub.add_parser("get", parents=[common], help="show a rollout")
    get.add_argument("name")
    get.add_argument("-n", "--namespace", default="default")
    get.add_argument("-o", "--output", choices=("json", "wide"), default=None)
    get.add_argument("-w", "--watch", action="store_true", help="redraw on every event")

    ls = sub.add_parser("list", parents=[common], help="list rollouts")
    ls.add_argument("-o", "--output", choices=("json",), default=None)

    hist = sub.add_parser("history", parents=[common], help="print a rollout's event history")
    hist.add_argument("name")
    hist.add_argument("-n", "--namespace", default="default")

    analysis = sub.add_parser("analysis", parents=[common], help="inspect analysis runs")
    asub = analysis.add_subparsers(dest="analysis_cmd", required=True, metavar="COMMAND")
    alist = asub.add_parser("list", parents=[common], help="list analysis runs")
    alist.add_argument("-n", "--namespace", default=None)
    alist.add_argument("--rollout", default=None, help="only the runs of this rollout")
    alist.add_argument("-o", "--output", choices=("json",), default=None)
    aget = asub.add_parser("get", parents=[common], help="one run with its measurements")
    aget.add_argument("name")
    aget.add_argument("-o", "--output", choices=("json",), default=None)

    for verb in VERBS:
        v = sub.add_parser(verb, parents=[common], help=f"{verb} a rollout")
        v.add_argument("name")
        v.add_argument("-n", "--namespace", default="default")
        if verb == "promote":
            v.add_argument(
                "--full", action="store_true", help="skip all remaining steps, pauses and analyses"
            )
        if verb == "undo":
            v.add_argument("--to-revision", type=int, default=None, help="default: the previous revision")

    set_ = sub.add_parser("set", parents=[common], help="change a rollout's spec")
    set_sub = set_.add_subparsers(dest="set_cmd", required=True, metavar="WHAT")
    image = set_sub.add_parser(
        "image", parents=[common], help="set a container's image: NAME CONTAINER=IMAGE"
    )
    image.add_argument("name")
    image.add_argument(
        "assignments", nargs="+", metavar="CONTAINER=IMAGE", help="'*=IMAGE' sets every container"
    )
    image.add_argument("-n", "--namespace", default="default")

    demo = sub.add_parser("demo", parents=[common], help="run the end-to-end demo on this machine")
    demo.add_argument(
        "--time-scale", type=float, default=0.02, help="factor applied to pause durations (5m -> 6s)"
    )
    demo.add_argument("--replicas", type=int, default=10)
    demo.add_argument("--state-dir", type=Path, default=None)
    demo.add_argument(
        "--no-prometheus",
        action="store_true",
        help="use the web provider even when prometheus is on the PATH",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = asyncio.run(_dispatch(args))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _err(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


async def _dispatch(args: argparse.Namespace) -> int:
    from services.cli.client import CliError

    try:
        return await _run(args)
    except CliError as e:
        return _err(str(e))
    except subjects.SubjectError as e:
        return _err(str(e))


async def _run(args: argparse.Namespace) -> int:
    cmd = args.cmd
    if cmd == "run":
        from services.cli.processes import run_service

        settings = Settings.from_env(nats_url=args.nats, analyzer_concurrency=args.concurrency)
        return await run_service(args.service, settings, platform=args.platform, router=args.router)
    if cmd == "up":
        from services.cli.processes import run_up

        settings = Settings.from_env(
            nats_url=args.nats, state_dir=args.state_dir, admin_port=args.admin_port, router=args.router
        )
        return await run_up(
            settings,
            embedded_nats=args.embedded_nats,
            platform=args.platform,
            analyzers=args.analyzers,
            planners=args.planners,
        )
    if cmd == "lint":
        return _lint(args.filename)
    if cmd == "plan":
        from services.cli.timeline import plan_command

        return plan_command(_load(args.filename), args.filename, args.output)
    if cmd == "demo":
        from services.cli.demo import run_demo

        return await run_demo(
            time_scale=args.time_scale,
            replicas=args.replicas,
            state_dir=args.state_dir,
            use_prometheus=not args.no_prometheus,
        )
    from services.cli.client import Client

    async with Client(args.nats) as client:
        if cmd == "apply":
            return await _apply(client, args.filename, args.namespace)
        if cmd == "get":
            return await _get(client, args)
        if cmd == "list":
            return await _list(client, args)
        if cmd == "analysis":
            return await _analysis(client, args)
        if cmd == "status":
            from services.cli.timeline import status_command

            return await status_command(
                client, args.namespace, args.name, watch=args.watch, timeout=args.timeout
            )
        if cmd == "history":
            from services.cli.render import event_line

            for ev in await client.history(args.namespace, args.name):
                print(event_line(ev))
            return 0
        if cmd == "set":
            for assignment in args.assignments:
                container, sep, image = assignment.partition("=")
                if not sep or not container or not image:
                    print(
                        f"rollouts set image: expected CONTAINER=IMAGE, got {assignment!r}", file=sys.stderr
                    )
                    return 2
                body = json.dumps({"container": container, "image": image}).encode()
                reply = await client.command(args.namespace, args.name, "set-image", body)
                if not reply.ok:
                    return _err(f"rollout {args.namespace}/{args.name}: {reply.error}")
                print(f"rollout '{args.name}' image updated: {container}={image}")
            return 0
        if cmd in VERBS:
            payload = json.dumps({"full": True}).encode() if cmd == "promote" and args.full else b""
            if cmd == "undo" and args.to_revision is not None:
                payload = json.dumps({"toRevision": args.to_revision}).encode()
            reply = await client.command(args.namespace, args.name, cmd, payload)
            if not reply.ok:
                return _err(f"rollout {args.namespace}/{args.name}: {reply.error}")
            st = reply.status or {}
            print(
                f"rollout '{args.name}' {_past(cmd)}: {st.get('phase', '?')}"
                + (f" ({st['message']})" if st.get("message") else "")
            )
            return 0
    return 2


def _past(verb: str) -> str:
    return {
        "promote": "promoted",
        "undo": "rolled back",
        "restart": "restarting",
        "abort": "aborted",
        "retry": "retried",
        "pause": "paused",
        "resume": "resumed",
        "delete": "deleted",
    }[verb]


def _read(filename: str) -> bytes:
    if filename == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(filename).read_bytes()
    except OSError as e:
        from services.cli.client import CliError

        raise CliError(f"{filename}: {e.strerror}") from e


def _load(filename: str, *, compile_plans: bool = True) -> list[Any]:
    """Every document of the file, validated; Rollouts also compiled into their plan unless only
    linted (lint accepts `plugin` steps, which apply refuses). Errors name the file and object."""
    from services.analyzer.providers.judge import check_template
    from services.cli.client import CliError
    from services.planner.plan import compile_plan
    from services.planner.service import check_condition
    from shared.specs import (
        AnalysisTemplate,
        ClusterAnalysisTemplate,
        Rollout,
        SpecError,
        SpecErrors,
        load_documents,
    )

    try:
        docs = load_documents(_read(filename), check_condition=check_condition)
        for d in docs:
            if isinstance(d, Rollout) and compile_plans:
                compile_plan(d)
            elif isinstance(d, (AnalysisTemplate, ClusterAnalysisTemplate)):
                check_template(d)
    except (SpecError, SpecErrors) as e:
        obj = getattr(e, "obj", None)
        raise CliError(f"{filename}: {obj + ': ' if obj else ''}{e}") from e
    return docs


def _lint(filename: str) -> int:
    from services.cli.client import CliError
    from shared.specs import AnalysisTemplate, ClusterAnalysisTemplate, Rollout

    try:
        docs = _load(filename, compile_plans=False)
    except CliError as e:
        return _err(str(e))
    checked = [d for d in docs if isinstance(d, (Rollout, AnalysisTemplate, ClusterAnalysisTemplate))]
    for d in checked:
        print(f"✔ {type(d).__name__}/{d.metadata.name if d.metadata else '?'}: valid")
    ignored = len(docs) - len(checked)
    print(
        f"{filename}: {len(checked)} object(s) valid"
        + (f", {ignored} other object(s) ignored" if ignored else "")
    )
    return 0


async def _apply(client: Any, filename: str, namespace: str | None) -> int:
    from shared.specs import AnalysisTemplate, ClusterAnalysisTemplate, Rollout, encode

    docs = _load(filename)
    targets = [d for d in docs if isinstance(d, (Rollout, AnalysisTemplate, ClusterAnalysisTemplate))]
    if not targets:
        return _err(f"{filename}: no Rollout, AnalysisTemplate or ClusterAnalysisTemplate in the file")
    # Templates first, so a Rollout's first analysis finds them.
    targets.sort(key=lambda d: 0 if not isinstance(d, Rollout) else 1)
    code = 0
    for d in targets:
        name = d.metadata.name if d.metadata else None
        ns = namespace or (d.metadata.namespace if d.metadata else None) or "default"
        if isinstance(d, ClusterAnalysisTemplate):
            ns = "_cluster"
        kind = type(d).__name__
        reply = await client.command(ns, name, "apply", encode(d))
        if reply.ok:
            print(f"{kind.lower()}.argoproj.io/{name} applied")
        else:
            code = _err(f"{kind}/{name}: {reply.error}")
    return code


async def _get(client: Any, args: argparse.Namespace) -> int:
    from services.cli.render import rollout_view

    def show(state: Any) -> None:
        if args.output == "json":
            from services.planner.service import rollout_document

            print(json.dumps(rollout_document(state), indent=2))
        else:
            print(rollout_view(state))

    state = await client.state(args.namespace, args.name)
    if not args.watch:
        show(state)
        return 0
    clear = sys.stdout.isatty() and args.output != "json"
    last_seq = -1
    async for ev in client.events(args.namespace, args.name, history=False):
        state = await client.state(args.namespace, args.name)
        if state.event_seq == last_seq:
            continue
        last_seq = state.event_seq
        if clear:
            print("\033[2J\033[H", end="")
        show(state)
        print(f"\n{ev.type}: {ev.message}", flush=True)
    return 0


async def _analysis(client: Any, args: argparse.Namespace) -> int:
    from services.cli.render import run_view, runs_view
    from shared.analysis_runs import as_document

    if args.analysis_cmd == "get":
        record = await client.run(args.name)
        print(json.dumps(as_document(record), indent=2) if args.output == "json" else run_view(record))
        return 0
    records = [
        r
        for r in await client.runs()
        if (args.namespace is None or r.namespace == args.namespace) and (args.rollout in (None, r.rollout))
    ]
    if args.output == "json":
        print(json.dumps({"items": [as_document(r) for r in records]}, indent=2))
    else:
        print(runs_view(records))
    return 0


async def _list(client: Any, args: argparse.Namespace) -> int:
    from services.cli.render import list_view
    from services.planner.service import rollout_document

    states = await client.states()
    if args.output == "json":
        print(json.dumps({"items": [rollout_document(s) for s in states]}, indent=2))
    else:
        print(list_view(states))
    return 0


if __name__ == "__main__":
    main()
