"""`python -m kubestill_trainer <label|train|evaluate|export|all> --config FILE --workdir URI`.

Exit codes: 0 success; 3 a gate of the spec refused the run (the evaluation gates, labeling.maxDroppedShare,
data.maxBadRowShare): the stage's outputs are written, `all` stops there (nothing is exported), and one line says
why; 2 a bad config or command line (the message names the field); 1 any other failure. The reason goes to
stderr and the termination log, which the operator copies into the DistillationJob's status."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubestill.api.v1alpha1 import DistillationJobSpec

from .config import ConfigError, load_config
from .refusal import GATE_EXIT_CODE, GateRefusal
from .termination import install_redaction, report_failure

STAGE_NAMES = ("label", "train", "evaluate", "export")


def _stages() -> dict[str, Callable[[Any], dict[str, Any]]]:
    # Imported lazily so `--help` and config errors do not pay for importing torch and transformers.
    from .stages.evaluate import run_evaluate
    from .stages.export import run_export
    from .stages.label import run_label
    from .stages.train import run_train

    return {"label": run_label, "train": run_train, "evaluate": run_evaluate, "export": run_export}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kubestill_trainer",
                                description="Run stages of a kubestill DistillationJob: label, train, evaluate, "
                                "export.")
    p.add_argument("stage", choices=[*STAGE_NAMES, "all"], help="stage to run; all runs the four in order")
    p.add_argument("--config", required=True, type=Path, help="DistillationJob manifest or spec (YAML/JSON)")
    p.add_argument("--workdir", help="artifact URI (file://, pvc://, s3://, a path); default "
                   "spec.output.artifactUri")
    p.add_argument("--log-level", default=os.environ.get("KUBESTILL_LOG_LEVEL", "INFO"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()  # no credential of the environment ever reaches a log line
    for noisy in ("onnx_ir", "onnxscript", "httpx", "urllib3"):  # per-pass chatter of the ONNX exporter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        spec, metadata = load_config(args.config)
    except ConfigError as e:
        report_failure(f"invalid config: {e}")
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local directories, never a hub
    try:
        return _run_stages(args, spec, metadata)
    except GateRefusal as e:
        report_failure(f"gate failed at stage {args.stage}: {e}")
        return GATE_EXIT_CODE
    except KeyboardInterrupt:
        report_failure(f"stage {args.stage} interrupted")
        return 130
    except Exception as e:
        logging.getLogger("kubestill_trainer").debug("%s", traceback.format_exc())
        report_failure(f"stage {args.stage} failed: {type(e).__name__}: {e}")
        if os.environ.get("KUBESTILL_TRACEBACK"):
            traceback.print_exc()
        return 1


def _run_stages(args: argparse.Namespace, spec: DistillationJobSpec, metadata: dict[str, Any]) -> int:
    """The stage, or all four in order; GATE_EXIT_CODE as soon as one reports a failed gate (after pushing
    its outputs: metrics.json and report.md say the rest), so `all` never exports a refused student."""
    from .context import RunContext
    from .distributed import is_torchrun_worker, relaunch_train, should_relaunch

    log = logging.getLogger("kubestill_trainer")
    ctx = RunContext.create(spec, metadata, args.workdir or spec.output.artifact_uri)
    stages = _stages()
    # A torchrun worker shares its launcher's scratch directory: the launcher pulls and pushes.
    syncs = not is_torchrun_worker()
    for name in STAGE_NAMES if args.stage == "all" else (args.stage,):
        log.info("stage %s: starting (workdir %s)", name, ctx.workdir.uri)
        if syncs:
            ctx.workdir.pull(name)
        if name == "train" and should_relaunch(spec):  # DDP: the train stage runs under torchrun
            result = relaunch_train(spec, args.config, args.workdir or spec.output.artifact_uri, args.log_level,
                                    ctx.path())
        else:
            result = stages[name](ctx)
        if syncs:
            ctx.workdir.push(name)
        log.info("stage %s: done %s", name, _short(result))
        if result.get("gatePassed") is False:
            ctx.workdir.close()
            reasons = result.get("gateReasons")
            report_failure(f"gate failed at stage {name}: "
                           + ("; ".join(str(r) for r in reasons) if isinstance(reasons, list) else "see eval/"))
            return GATE_EXIT_CODE
    ctx.workdir.close()
    return 0


def _short(result: dict[str, Any]) -> str:
    text = str({k: v for k, v in result.items() if not isinstance(v, (list, dict))})
    return text[:300]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
