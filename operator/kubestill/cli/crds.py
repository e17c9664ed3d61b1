"""`kubestill crds`: write the CRD YAML generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kubestill.api.crd import all_crds, render

def cmd_crds(args: argparse.Namespace) -> int:
    """Write (or with --check, compare) the generated CRD YAML."""
    out = Path(args.out)
    stale = []
    for name, crd in all_crds().items():
        text = render(crd)
        path = out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date, run `kubestill crds`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    crds = sub.add_parser("crds", help="write the CRD YAML generated from the API models")
    crds.add_argument("--out", default="crds", help="directory to write to (default: crds)")
    crds.add_argument("--check", action="store_true", help="exit 1 when the files differ from the models")
    crds.set_defaults(func=cmd_crds)
