"""Fully sharded data parallel training (``trainer.strategy=fsdp``) on torch's FSDP2 (``fully_shard``).

Each process holds a 1/N slice of every parameter, frozen and trained alike, and gathers a layer's full
weights only while that layer runs, so a model N times larger than one device's memory still trains.
Lightning's own ``FSDPStrategy`` wraps torch's older FSDP, which refuses the CPU; FSDP2 runs anywhere
torch.distributed does (gloo on the CPU, NCCL on GPUs), through Lightning's ``ModelParallelStrategy``.

What this module adds to that strategy is the project's checkpoint rule (``common.py``): a checkpoint
holds the trained tensors only, gathered whole, so it loads on any process count and with any strategy,
and the frozen weights' fingerprint is taken before sharding (a slice would not match the full model's).
"""
from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from ..adapters.io import frozen_fingerprint
from ..adapters.rank_parallel import rank_parallel_layers
from ..errors import UserError
from .common import trainable_state

STRATEGY_NAME = "fsdp"


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (a collective for a sharded one: every process must call it)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_units(module: nn.Module) -> list[nn.Module]:
    """What each gathers its weights as one unit: every layer of every layer list (encoder and decoder
    layers, with the adapter sites that wrap them), innermost first; adapters stay inside their layer."""
    units = []
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList) and ".adapters." not in f".{name}.":
            units += [layer for layer in child if any(True for _ in layer.parameters())]
    depth = {id(m): n.count(".") for n, m in module.named_modules()}
    return sorted(units, key=lambda m: -depth[id(m)])


def shard_module(module: L.LightningModule) -> None:
    """``configure_model`` of every task: under ``strategy=fsdp`` shard each layer, then each of the task's
    parts (encoder, head, decoder) as one unit around its layers; otherwise, or when already sharded (a
    second fit in the same process), do nothing. The task itself is not a unit: Lightning calls its
    ``training_step``, not its ``forward``, so a unit there would never gather its weights."""
    mesh = module.device_mesh
    if mesh is None or is_sharded(module):
        return
    from torch.distributed.fsdp import fully_shard

    loose = [name for name, _ in module.named_parameters(recurse=False)]
    if loose:
        raise UserError(f"strategy=fsdp shards a task's parts, but {type(module).__name__} holds parameters "
                         f"of its own ({', '.join(loose)}): move them into a submodule")
    if rank_parallel_layers(module):
        raise UserError("rank-parallel adapters (HD-PiSSA, LTE) keep a different slice on each process and "
                         "merge them over whole replicas: train them with strategy=ddp, not fsdp")
    module.frozen_fingerprint = frozen_fingerprint(module)  # of the whole weights, before they are sliced
    data_parallel = mesh["data_parallel"]
    units = shard_units(module)
    # A layer list held by the task itself is opened into parts that are already layer units.
    parts = [part for part in _parts(module) if any(True for _ in part.parameters()) and
             not any(part is unit for unit in units)]
    for unit in units + parts:
        fully_shard(unit, mesh=data_parallel)


def _parts(module: nn.Module) -> list[nn.Module]:
    """The modules the task calls: its children, with containers (never called themselves) opened."""
    parts = []
    for child in module.children():
        parts += _parts(child) if isinstance(child, (nn.ModuleList, nn.ModuleDict)) else [child]
    return parts


class FullyShardedStrategy(ModelParallelStrategy):
    """FSDP2 over every process (data-parallel size = processes, no tensor parallelism), writing the
    project's single-file checkpoints of the trained tensors."""

    def __init__(self, processes: int, **kwargs: Any):
        super().__init__(data_parallel_size=processes, tensor_parallel_size=1, save_distributed_checkpoint=False,
                         **kwargs)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {k: full_tensor(v).detach().cpu() for k, v in trainable_state(self.lightning_module).items()}

    @property
    def lightning_restore_optimizer(self) -> bool:
        """The parent restores optimizers inside its ``load_checkpoint``, which this class replaces."""
        return True

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The state a single process's optimizer would hold: keyed the same way, with whole tensors."""
        state = getattr(optimizer, "_optimizer", optimizer).state_dict()
        return {**state, "state": {key: {name: full_tensor(value).detach().cpu() for name, value in values.items()}
                                   for key, values in state["state"].items()}}

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        return torch.load(self.broadcast(checkpoint_path), map_location="cpu", weights_only=True)

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        targets = trainable_state(self.lightning_module)
        with torch.no_grad():
            for key, target in targets.items():
                target.copy_(like(target, checkpoint["state_dict"][key]))

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"]):
            optimizer = getattr(optimizer, "_optimizer", optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            sliced = {key: {name: like(params[key], value) if value.shape == params[key].shape else value
                            for name, value in values.items()} for key, values in state["state"].items()}
            optimizer.load_state_dict({**state, "state": sliced})


def like(target: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """``whole`` laid out as ``target``: this process's slice where ``target`` is sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    whole = whole.to(device=target.device, dtype=target.dtype)
    if isinstance(target, DTensor):
        return distribute_tensor(whole, target.device_mesh, target.placements, src_data_rank=None)
    return whole


def resolve_strategy(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Trainer keyword arguments with ``strategy: fsdp`` turned into the strategy object."""
    if trainer_kwargs.get("strategy") != STRATEGY_NAME:
        return trainer_kwargs
    devices, nodes = trainer_kwargs.get("devices", 1), trainer_kwargs.get("num_nodes", 1)
    if not isinstance(devices, int) or devices < 1:
        raise UserError(f"strategy=fsdp needs trainer.devices as a number of processes per node, got {devices!r}")
    return {**trainer_kwargs, "strategy": FullyShardedStrategy(devices * nodes)}
