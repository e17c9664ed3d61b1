"""Data-parallel training (DistributedDataParallel) across the GPUs of one node.

When `spec.resources.train.gpus > 1` the train stage re-launches itself under
`torchrun --standalone --nproc_per_node=<gpus>`: every process trains a replica on its own shard of each
epoch's order (a DistributedSampler-style strided split: rank r takes examples r, r + W, ...; every rank
runs the same number of steps), gradients are averaged by DDP, and only rank 0 writes (progress,
checkpoints, the student). The same code runs single-process (world size 1) everywhere else, and on the
CPU with the gloo backend (`KUBESTILL_DDP_BACKEND=gloo`, or automatically without CUDA), which is how the
tests exercise it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kubestill.api.v1alpha1 import DistillationJobSpec

# Set by torchrun in every worker; its presence means "already launched".
_RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def requested_processes(spec: DistillationJobSpec, env: Mapping[str, str] | None = None) -> int:
    """Processes the train stage should run: `KUBESTILL_TRAIN_PROCESSES` (tests, CPU runs) else the GPUs."""
    env = os.environ if env is None else env
    forced = env.get("KUBESTILL_TRAIN_PROCESSES")
    if forced:
        return max(1, int(forced))
    return max(1, spec.resources.train.gpus)


def should_relaunch(spec: DistillationJobSpec, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return requested_processes(spec, env) > 1 and not all(v in env for v in _RANK_VARS)


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that runs `python -m kubestill_trainer <argv>` in `nproc` processes on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "kubestill_trainer", *argv]


def relaunch(spec: DistillationJobSpec, argv: Sequence[str]) -> int:
    """Run the given trainer command under torchrun and return its exit code."""
    nproc = requested_processes(spec)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(torchrun_command(nproc, argv), env=env, check=False).returncode


def init(default_device: str) -> DistInfo:
    """Join the process group when launched by torchrun (world size > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=default_device)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and not default_device.startswith("cpu")
    backend = os.environ.get("KUBESTILL_DDP_BACKEND") or ("nccl" if cuda else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    device = f"cuda:{local}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(local)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def shard(order: Sequence[int], info: DistInfo) -> list[int]:
    """This rank's share of an epoch order: strided, truncated so every rank gets the same count."""
    if not info.enabled:
        return list(order)
    per_rank = len(order) // info.world_size
    return list(order[info.rank :: info.world_size][:per_rank])


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP around the model when distributed (forward only: task methods stay on the plain model)."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.local_rank] if info.device.startswith("cuda") else None
    # Students cut from a teacher may carry unused parts (e.g. BERT's pooler), hence find_unused_parameters.
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def main_says(flag: bool, info: DistInfo) -> bool:
    """Rank 0's value of a decision, on every rank. Ranks that decided apart (a validation loss differing in the
    last bit) would leave one waiting forever on the other's gradients."""
    if not info.enabled:
        return flag
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device=info.device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def finish(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def is_torchrun_worker(env: Mapping[str, str] | None = None) -> bool:
    """Launched by torchrun (the launcher owns pulling and pushing the workdir)."""
    env = os.environ if env is None else env
    return all(v in env for v in _RANK_VARS)


def relaunch_train(spec: DistillationJobSpec, config: os.PathLike[str] | str, workdir: str, log_level: str = "INFO",
                   local_root: os.PathLike[str] | str | None = None) -> dict[str, object]:
    """The train stage in `requested_processes` processes under torchrun; its summary (train/done.json under
    `local_root`, the workdir's local directory, which the workers share)."""
    import json
    from pathlib import Path

    from .storage import resolve_uri

    argv = ["train", "--config", str(config), "--workdir", workdir, "--log-level", log_level]
    code = relaunch(spec, argv)
    if code != 0:
        raise RuntimeError(f"the distributed train stage (torchrun, {requested_processes(spec)} processes) "
                           f"exited with code {code}")
    done = (Path(local_root) if local_root is not None else resolve_uri(workdir)) / "train" / "done.json"
    return dict(json.loads(done.read_text()))
