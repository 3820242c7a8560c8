"""
distributed.py -- decides how several processes (torchrun) train as one: the process group, DDP's wrapper, when
gradients are averaged, each rank's share of the micro-batches, and that every rank stops at the same step.
Alone (no torchrun) each of these does nothing. Skip on a first read.
"""

import contextlib
import os

import torch
import torch.distributed as dist

from babygpt import locks, memory
from babygpt.cli import UserError


def setup_distributed():
    """Under torchrun (which sets RANK, LOCAL_RANK, WORLD_SIZE) join the process group: nccl between GPUs, gloo
    between CPU processes. Returns (rank, world_size, device or None); without torchrun (0, 1, None)."""
    if "RANK" not in os.environ:
        return 0, 1, None
    rank, local_rank, world_size = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        device = f"cuda:{local_rank}"  # one GPU per process
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        device = "cpu"
        dist.init_process_group("gloo")
    return rank, world_size, device


def wrap_for_ranks(model, machine):
    """Under torchrun, DDP averages the gradients of all ranks during backward(); alone, the model itself."""
    if machine.world_size == 1:
        return model
    device_ids = [machine.device] if machine.device_type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def gradient_sync(train_model, last_micro_step):
    """Under DDP, gradients are averaged across ranks only once per step, in the last micro-step's backward:
    the others run inside no_sync(). Alone, nothing to do."""
    if last_micro_step or not hasattr(train_model, "no_sync"):
        return contextlib.nullcontext()
    return train_model.no_sync()


def micro_steps_per_rank(gradient_accumulation_steps, machine):
    """Each process runs an equal share of a step's micro-batches."""
    if gradient_accumulation_steps % machine.world_size:
        raise UserError(f"--gradient_accumulation_steps ({gradient_accumulation_steps}) must be a multiple of the "
                        f"number of processes ({machine.world_size}): each process runs an equal share of the "
                        f"micro-batches")
    local_steps = gradient_accumulation_steps // machine.world_size
    memory.check_accumulation(local_steps)  # a random stream per micro-batch: one line if too many
    return local_steps


def barrier(world_size):
    if world_size > 1:
        dist.barrier()


def any_rank_says(flag, machine):
    """True on every rank if `flag` is true on any: under torchrun every rank must stop at the same step, even if
    only one of them got the signal. Alone, just bool(flag)."""
    if machine.world_size == 1:
        return bool(flag)
    vote = torch.tensor([float(bool(flag))], device=machine.device)
    dist.all_reduce(vote, op=dist.ReduceOp.MAX)
    return bool(vote.item())


def shut_down(machine):
    if machine.world_size > 1:
        dist.destroy_process_group()
    locks.release_locks()
