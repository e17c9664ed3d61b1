"""The `kubestill` command. Each sub-command group lives in its own module with a `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import crds, dev, operator, rollout, status

Command = Callable[[argparse.Namespace], int]

# Sub-command modules, in help order. Each defines register(subparsers) and sets `func` on its parsers.
MODULES = [crds, dev, operator, status, rollout]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubestill", description="kubestill: knowledge distillation as Kubernetes resources."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
