"""The workshop's commands: ``labkit reset LESSON`` and ``labkit progress``.

    labkit reset 04 [--dry-run] [--namespace NS] [--kubeconfig FILE] [--context CTX]
    labkit progress [--file FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import checks
from .errors import LabkitError

__all__ = ["add_commands", "cmd_progress", "cmd_reset"]


def cmd_reset(args: argparse.Namespace) -> int:
    from .lab import connect

    try:
        with connect(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace,
                     sandbox_dir=args.dir, start=not args.dry_run) as lab:
            record = lab.reset(args.lesson, dry_run=args.dry_run)
    except LabkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(record.summary())
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    path = checks.progress_path(args.file)
    results = checks.read_results(path)
    if not results:
        print(f"no check results yet in {path} (they are recorded as you run the lessons' checks)")
        return 0
    print(f"check results in {path}")
    print(checks.progress_table(results))
    return 0


def add_commands(subparsers: Any) -> None:
    r = subparsers.add_parser("reset", help="return the lab to the state a lesson starts from (fresh pods)")
    r.add_argument("lesson", help="the lesson: 04, 4 or 04-chaos-all-pods")
    r.add_argument("--dry-run", action="store_true", help="say what it would do, touch nothing")
    r.add_argument("--namespace", default=os.environ.get("LABKIT_NAMESPACE"), help="the lab namespace")
    r.add_argument("--kubeconfig", default=None, help="a real cluster's kubeconfig (default: the sandbox)")
    r.add_argument("--context", default=None, help="a context in that kubeconfig")
    r.add_argument("--dir", default=os.environ.get("LABKIT_SANDBOX_DIR"), help="the sandbox's state folder")
    r.set_defaults(func=cmd_reset)
    p = subparsers.add_parser("progress", help="the lessons' check results: lesson, step, pass/fail, attempts")
    p.add_argument("--file", default=None,
                   help="the results file (default: $LABKIT_PROGRESS or ~/.labkit/progress.jsonl)")
    p.set_defaults(func=cmd_progress)
