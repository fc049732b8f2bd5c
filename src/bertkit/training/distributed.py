"""One process or many: torchrun's process group, DDP or FSDP, activation checkpointing, full state dicts.

Launched by ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous in the environment), a
process joins the group: NCCL when it has a GPU, gloo on CPU. Multi-node runs use torchrun's
rendezvous, the same command on every node::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m bertkit pretrain --data DATA --model-config base --output RUN ...

(``RUN`` on a filesystem every node sees: checkpoints hold one file per rank.)

DDP keeps a replica per process and all-reduces gradients; ``gradient_sync(engine, False)`` skips
that all-reduce on all but the last micro-batch of a step. FSDP (``fully_shard`` on every
Transformer block, then on the whole model) shards parameters, gradients and optimizer state for
models that do not fit one device; checkpoints then gather full state dicts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bertkit.errors import BertkitError


@dataclass(frozen=True)
class Dist:
    """This process's place: rank of world_size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> Dist:
    """This process's Dist; joins torchrun's process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return Dist(rank, world, local, dev)


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``name`` if given, else this rank's GPU when there is one, else the CPU."""
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BertkitError(f"--device {name} asked for a GPU, but torch sees none")
        torch.cuda.set_device(dev)
    return dev


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: Tensor, d: Dist, op: str = "sum") -> Tensor:
    """Sum (or max) ``tensor`` over all ranks, in place; a no-op in one process."""
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


# --- wrapping the model -----------------------------------------------------------------------


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: every member of the model's ModuleLists (BERT: ``bert.encoder.layer``)."""
    return [block for module in model.modules() if isinstance(module, nn.ModuleList) for block in module]


def apply_grad_checkpointing(model: nn.Module) -> None:
    """Recompute each Transformer block's activations in the backward pass instead of storing them.

    The wrapper keeps state-dict keys unchanged (it strips its own prefix), so checkpoints and
    saved models are the same with or without it.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
    )

    blocks = {id(b) for b in transformer_blocks(model)}
    apply_activation_checkpointing(model, check_fn=lambda m: id(m) in blocks)


def wrap_model(model: nn.Module, d: Dist, sharding: str = "ddp") -> nn.Module:
    """The module the loop runs forward on: ``model`` itself, a DDP replica or FSDP-sharded in place."""
    if not d.enabled:
        return model
    if sharding == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in transformer_blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    device_ids = [d.device.index] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(engine: nn.Module, enabled: bool) -> Iterator[None]:
    """Let this forward/backward all-reduce gradients (the step's last micro-batch) or not."""
    inner = getattr(engine, "_orig_mod", engine)  # the module under torch.compile
    if enabled:
        yield
    elif isinstance(inner, nn.parallel.DistributedDataParallel):
        with inner.no_sync():
            yield
    elif is_fsdp(inner):
        inner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)
    else:
        yield


# --- full state dicts -------------------------------------------------------------------------


def model_state(model: nn.Module) -> dict[str, Any]:
    """The full model state dict (FSDP: gathered to rank 0 on the CPU; {} on other ranks)."""
    if not is_fsdp(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_state(model: nn.Module, state: dict[str, Any]) -> None:
    if not is_fsdp(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
    )

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    if not is_fsdp(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    if not is_fsdp(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
