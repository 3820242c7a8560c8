"""
device.py -- decides where and in what precision a run computes: the device (cuda > mps > cpu), bfloat16
autocast or float32, torch.compile on or off, the fused AdamW kernel. Skip on a first read: train.py calls
set_up(cfg) once and gets a Machine that says all of it.
"""

import contextlib
import os
import re
import sys
from dataclasses import dataclass

import torch

from babygpt.cli import UserError
from babygpt.distributed import setup_distributed
from babygpt.threads import ThreadPicker, use_threads


@dataclass
class Machine:
    """Where and how this process trains."""
    rank: int  # this process's number under torchrun (0 without it)
    world_size: int  # how many processes train together (1 without torchrun)
    device: str  # "cpu", "cuda", "cuda:N" or "mps"
    dtype: str  # "float32", or "bfloat16" for autocast
    compile: bool  # torch.compile the model
    fused: bool  # the fused AdamW kernel (CUDA and CPU)
    threads: "ThreadPicker" = None  # the CPU threads: fixed by --threads N, or adapting to the load (auto)

    @property
    def master(self):  # only rank 0 evaluates, logs, samples and writes checkpoints
        return self.rank == 0

    @property
    def device_type(self):
        return self.device.split(":")[0]

    def autocast(self):
        return autocast_context(self.device_type, self.dtype)

    def describe(self, compiled):
        processes = f", {self.world_size} processes" if self.world_size > 1 else ""
        auto = self.threads is not None and self.threads.adapts
        threads = f"auto threads (1 to {self.threads.most})" if auto else f"{torch.get_num_threads()} threads"
        return f"device {self.device}, {self.dtype}, compile {'on' if compiled else 'off'}, {threads}{processes}"


def set_up(cfg):
    """Join torchrun's process group if there is one, pick the device and the speed settings for it."""
    rank, world_size, ddp_device = setup_distributed()
    device = ddp_device or pick_device(cfg.device)
    device_type = device.split(":")[0]
    threads = use_threads(cfg.threads, adapt=device_type == "cpu" and world_size == 1)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls that do run (outside autocast) use TF32
        torch.backends.cudnn.allow_tf32 = True
    settings = system_settings(cfg, device_type, fast_bf16(device_type))
    if rank:
        sys.stdout = open(os.devnull, "w")  # only rank 0 talks (errors still reach stderr)
    return Machine(rank, world_size, device, **settings, threads=threads)


def pick_device(name):
    """'auto' -> the best available of cuda, mps, cpu; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name not in ("cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", name):
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but this torch sees no CUDA GPU (use --device cpu or auto)")
    check_gpu_index(name)
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but MPS is not available here (use --device cpu or auto)")
    return name


def check_gpu_index(name):
    """cuda:N names one of the GPUs this process sees (CUDA_VISIBLE_DEVICES counts): cuda:7 on a one-GPU machine
    is one line here, not a traceback at the first tensor moved there."""
    if name.startswith("cuda:") and int(name[len("cuda:"):]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise UserError(f"--device {name} asked for, but this machine has {count} CUDA GPU{'s' * (count != 1)} "
                        f"({names}); use one of them or --device cuda")


def fast_bf16(device_type):
    """Whether this device multiplies bfloat16 matrices faster than float32: a CUDA GPU that supports it, or an
    x86 CPU with AVX-512 BF16 or AMX instructions (on this repo's 2-core machine: 1.3x per classic step, see
    docs/experiments.md). Other CPUs emulate bfloat16, which is slower than float32. torch has no public call
    for the CPU's instructions: Linux lists them in /proc/cpuinfo; elsewhere a CPU stays in float32."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def cpu_flags():
    """The instruction-set flags of this machine's CPU, from Linux's /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pick_dtype(requested, device_type, bf16_supported):
    """'auto' means bfloat16 autocast where the device does it fast (CUDA, or a CPU with bf16 instructions), else
    float32."""
    if requested == "auto":
        return "bfloat16" if device_type in ("cuda", "cpu") and bf16_supported else "float32"
    return requested


def autocast_context(device_type, dtype):
    """Mixed precision: matmuls in bfloat16, weights and the optimizer in float32. A no-op for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def system_settings(cfg, device_type, bf16_supported):
    """The speed settings that depend on the device: dtype (bfloat16 autocast on CUDA when it can), whether to
    torch.compile (auto: CUDA only; on a CPU it was no faster, see docs/experiments.md) and the fused AdamW
    kernel (one kernel for the whole update instead of several per parameter; CUDA and CPU)."""
    return {"dtype": pick_dtype(cfg.dtype, device_type, bf16_supported),
            "compile": cfg.compile == "on" or (cfg.compile == "auto" and device_type == "cuda"),
            "fused": device_type in ("cuda", "cpu")}
