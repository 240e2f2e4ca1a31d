"""The ``labkit`` command: the sandbox's lifecycle, the lessons (``lab``, ``tour``) and exports.

    labkit sandbox up [--replicas N] [--copies N] [--time-scale F] [--dir DIR]
    labkit sandbox status [--json]
    labkit sandbox down
    labkit tour --out DIR [--notebooks '01-*']
    labkit lab [--lessons DIR]          (your copy of the lessons, default ./labkit-lessons)
    labkit export NOTEBOOK --to html|hugo [--out DIR]
    labkit workshop provision --attendees N [--kubeconfig F [--context C]] [--out DIR] [--prefix P] [--dry-run]
    labkit workshop teardown [--kubeconfig F [--context C]] [--out DIR] [--prefix P] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from labkit.sandbox import Sandbox, SandboxError


def _progress_printer(stream: Any = None) -> Any:
    stream = stream or sys.stderr
    tty = stream.isatty()
    last = {"line": ""}

    def show(ready: int, total: int) -> None:
        width = 26
        filled = int(width * ready / total) if total else 0
        line = f"starting the sandbox [{'#' * filled}{'.' * (width - filled)}] {ready}/{total} pods Ready"
        if tty:
            stream.write("\r" + line)
        elif line != last["line"] and (ready == total or ready % 4 == 0):
            stream.write(line + "\n")
        last["line"] = line
        stream.flush()

    return show


def _print_status(info: dict[str, Any]) -> None:
    if not info.get("running"):
        print(f"no sandbox is running in {info['dir']} (start one with `labkit sandbox up`)")
        return
    print(f"labkit sandbox (pid {info['pid']}) in {info['dir']}")
    print(f"  API server      {info['api']}")
    print(f"  kubeconfig      {info['kubeconfig']}")
    print(f"  productpage     {info['productpage_url']}")
    if info.get("gateway_url"):
        print(f"  istio-ingressgateway {info['gateway_url']}")
    print(f"  pod network     {info.get('pod_network', '')}   time scale {info.get('time_scale', 1)}")
    print(f"  use kubectl:    export KUBECONFIG={info['kubeconfig']}")
    pods = info.get("pods", [])
    if pods:
        w = max(len(p["name"]) for p in pods) + 3
        # Several copies of the lesson: a NAMESPACE column first, as `kubectl get pods -A` has.
        namespaces = len({p.get("namespace", "default") for p in pods}) > 1
        nw = max(len(p.get("namespace", "")) for p in pods) + 3 if namespaces else 0
        print()
        print(f"  {'NAMESPACE' if namespaces else '':<{nw}}{'NAME':<{w}}{'READY':<8}{'STATUS':<18}{'RESTARTS':<14}"
              f"{'AGE':<8}IP")
        for p in pods:
            ns = p.get("namespace", "") if namespaces else ""
            print(f"  {ns:<{nw}}{p['name']:<{w}}{p['ready']:<8}{p['status']:<18}{p['restarts']:<14}{p['age']:<8}"
                  f"{p['ip']}")


def cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        sb = Sandbox(args.dir, replicas=getattr(args, "replicas", 3), time_scale=getattr(args, "time_scale", 1.0),
                     copies=getattr(args, "copies", 1), tie_to_process=False)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action == "up":
        if sb.running():
            print(f"a sandbox is already running in {sb.dir}")
            _print_status(sb.status())
            return 0
        try:
            sb.start(progress=_progress_printer())
        except SandboxError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
        print(f"\nsandbox ready in {sb.info.get('boot_seconds', '?')} s")
        _print_status(sb.status())
        return 0
    if args.action == "status":
        info = sb.status()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_status(info)
        return 0 if info.get("running") else 3
    if args.action == "down":
        if sb.stop():
            print(f"sandbox in {sb.dir} stopped; all its processes are gone")
        else:
            print(f"no sandbox was running in {sb.dir}")
        return 0
    return 2


def cmd_workshop(args: argparse.Namespace) -> int:
    """``labkit workshop provision|teardown``: many attendees, each in a namespace of their own."""
    from labkit import provision
    from labkit.client import Client, connect
    from labkit.errors import LabkitError

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    client = None
    try:
        if args.action == "provision":
            provision.namespaces_for(args.attendees, args.prefix)  # bad input is refused before connecting
        if not (args.action == "provision" and args.dry_run):
            try:
                client = connect(Client, kubeconfig=args.kubeconfig, context=args.context, start=False)
            except LabkitError as exc:
                raise LabkitError(f"{exc} (name the cluster with --kubeconfig FILE [--context NAME])") from exc
            say(f"cluster {client.server} (context {client.context})")
        if args.action == "provision":
            result: object = provision.provision(
                client, args.attendees, prefix=args.prefix, out_dir=args.out, dry_run=args.dry_run,
                replicas=args.replicas, token_seconds=int(args.token_hours * 3600), mesh=args.mesh, progress=say)
        else:
            assert client is not None
            result = provision.teardown(client, prefix=args.prefix, out_dir=args.out, dry_run=args.dry_run,
                                        progress=say)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    print(result)
    return 0


def _add_workshop(sub: Any) -> None:
    w = sub.add_parser("workshop", help="many attendees on one cluster: a namespace, an account and a kubeconfig "
                                        "each")
    wsub = w.add_subparsers(dest="action", required=True)
    for name, help_text in (("provision", "give each attendee a namespace, a Role limited to it, Bookinfo and a "
                                          "kubeconfig with their token"),
                            ("teardown", "delete the workshop's namespaces (only those it made) and kubeconfigs")):
        a = wsub.add_parser(name, help=help_text)
        if name == "provision":
            a.add_argument("--attendees", type=int, required=True, help="how many attendees (1 or more)")
            a.add_argument("--replicas", type=int, default=3, help="pods per Bookinfo deployment (default 3)")
            a.add_argument("--token-hours", type=float, default=12.0,
                           help="how long the attendees' tokens last (default 12)")
            a.add_argument("--mesh", action="store_true", help="label the namespaces istio-injection=enabled")
        a.add_argument("--kubeconfig", default=None,
                       help="the cluster's kubeconfig (default: the running sandbox, or $LABKIT_KUBECONFIG)")
        a.add_argument("--context", default=None, help="the kubeconfig's context (default: its current one)")
        a.add_argument("--out", default="workshop", help="folder of the attendees' kubeconfigs (default ./workshop)")
        a.add_argument("--prefix", default="attendee", help="namespaces are PREFIX-01, PREFIX-02... "
                                                            "(default attendee)")
        a.add_argument("--dry-run", action="store_true",
                       help="print the objects (provision) or what would be deleted (teardown); change nothing")
    w.set_defaults(func=cmd_workshop)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit", description="Test microservices in production, from Jupyter.")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("sandbox", help="the embedded Kubernetes sandbox running Bookinfo")
    ssub = sp.add_subparsers(dest="action", required=True)
    for name, help_text in (("up", "start it in the background and wait until every pod is Ready"),
                            ("status", "show its addresses, kubeconfig and pods"),
                            ("down", "stop it and every process it started")):
        a = ssub.add_parser(name, help=help_text)
        a.add_argument("--dir", default=os.environ.get("LABKIT_SANDBOX_DIR"),
                       help="state folder (default: $LABKIT_SANDBOX_DIR or ~/.labkit/sandbox)")
        if name == "up":
            a.add_argument("--replicas", type=int, default=3, help="replicas per Bookinfo deployment (default 3)")
            a.add_argument("--copies", type=int, default=1,
                           help="copies of the lesson, each in its own namespace: default, bookinfo-2, ... "
                                "(default 1)")
            a.add_argument("--time-scale", type=float, default=1.0,
                           help="multiply back-off and restart delays (default 1; 0.1 is ten times faster)")
        if name == "status":
            a.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_sandbox)
    _add_workshop(sub)

    try:
        from labkit import lessons
    except ImportError:  # the lessons' commands arrive with their module
        lessons = None  # type: ignore[assignment]
    if lessons is not None:
        lessons.add_commands(sub)
        from labkit import classroom, room

        classroom.add_commands(sub)
        room.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `labkit sandbox status | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
