"""
runtime.py -- how the training loop runs on this machine, and how it survives it. Skip on a first read.

train.py calls each of these in one line:
    set_up(cfg)              torchrun's process group, the device, dtype (autocast), threads, compile, fused AdamW
    use_threads              --threads N: N CPU threads; 0 (auto): a ThreadPicker that keeps the count right
    compile_or_fallback      torch.compile, tried once; eager if the compiler is missing or broken
    gradient_sync            DDP averages gradients only in the last micro-step's backward
    any_rank_says            under torchrun, every rank stops at the same step if one of them got Ctrl-C
    StopSignal               Ctrl-C / SIGTERM set a flag; the loop saves and stops between two steps
    Progress                 the progress bar (or a printed line per log interval) and the speed in ms per step;
                             it feeds the step times to the ThreadPicker
    diverged_message         the one line for a run whose loss or weights stopped being finite
    check_model_fits         the memory a model (and a batch) would need, checked before a single tensor is made
    shut_down                leave the process group, drop the out_dir and data locks
"""

import contextlib
import os
import re
import shlex
import signal
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from babygpt import engine
from babygpt import guards
from babygpt.cli import UserError


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


def maybe_compile(model, example_batch, machine):
    """The model torch.compile'd when the settings ask for it (tried on one real batch), else the model itself."""
    if not machine.compile:
        return model
    x, y = (t.to(machine.device) for t in example_batch)
    compiled = compile_or_fallback(model, x, y, machine.autocast())
    return model if compiled is model else CompileGuard(model, compiled, trial_backward=machine.world_size == 1)


def compile_or_fallback(model, x, y, autocast, backend="inductor"):
    """torch.compile(model), tried once on a real batch (compiling happens lazily, at the first call). If it
    fails (no C++ compiler, an unsupported GPU, a torch bug), say so in one line and train uncompiled instead.
    The trial runs with forked random streams and its gradients are dropped, so it changes nothing."""
    compiled = torch.compile(model, backend=backend)
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), autocast:
            compiled(x, y)[1].backward()
    except Exception as e:  # noqa: BLE001 -- any compiler failure means: fall back to eager
        print(f"warning: torch.compile failed ({type(e).__name__}: {first_line(e)}); "
              f"training without it", file=sys.stderr)
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


class CompileGuard(torch.nn.Module):
    """The compiled model, and the eager one to fall back on. torch.compile compiles again for every new kind of
    call (the training batch, the evaluation under no_grad; its backward lazily, at the first backward), long
    after compile_or_fallback's trial; any of those compiles can fail (a compile cache left half-written by a
    killed run, a compiler bug for one shape). So each new kind of call is first tried here -- its forward and,
    when gradients are on, its backward, with forked random streams and the gradients so far put aside -- and a
    failure, then or later, is one line and the run goes on uncompiled. Under torchrun the backward is not tried
    (DDP's gradient hooks would fire): a failure there stays a traceback."""

    def __init__(self, model, compiled, trial_backward=True):
        super().__init__()
        self.model, self.compiled, self.trial_backward = model, compiled, trial_backward
        self.tried, self.failed = set(), False

    def forward(self, *inputs):
        if not self.failed:
            kind = (tuple(tuple(t.shape) for t in inputs if t is not None), torch.is_grad_enabled(),
                    self.model.training)
            try:
                if kind not in self.tried:
                    self.try_compiled(inputs)
                    self.tried.add(kind)
                return self.compiled(*inputs)
            except torch.OutOfMemoryError:
                raise  # not the compiler's fault: the eager model would run out of memory too
            except Exception as e:  # noqa: BLE001 -- any compiler failure means: go on eager
                self.failed = True
                print(f"warning: torch.compile failed ({type(e).__name__}: {first_line(e)}); going on without it",
                      file=sys.stderr)
        return self.model(*inputs)

    def try_compiled(self, inputs):
        devices = [t.device for t in inputs if t is not None and t.device.type == "cuda"][:1]
        backward = self.trial_backward and torch.is_grad_enabled()
        grads = [p.grad for p in self.model.parameters()]  # the micro-batches' gradients so far, put aside
        try:
            with torch.random.fork_rng(devices=devices):
                loss = self.compiled(*inputs)[1]
                if backward and loss is not None:
                    loss.backward()
        finally:
            for p, grad in zip(self.model.parameters(), grads):
                p.grad = grad


def first_line(e):
    """What went wrong, in one line: torch's compiler errors start "backend='inductor' raised:", the cause next."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines or [""])[0]


# ----------------------------------------------------------------------------------------------------------------
# several processes (torchrun): DistributedDataParallel


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
    guards.check_accumulation(local_steps)  # a random stream per micro-batch: one line if too many
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
    guards.release_locks()


PYTHON_BYTES_PER_LAYER = 64 << 10  # the Python objects of one block (modules, parameters): ~tens of KB


def memory_needed(config, batch_size, training=True):
    """A generous estimate, in bytes, of what a GPT of this config needs: the weights (x4 when training: gradients
    and AdamW's two moments) plus, for a batch, the activations kept for backward (~20 floats per token, layer
    and channel; the explicit attention's (T, T) maps; the logits, their softmax and its gradient)."""
    C, L, T, V = config.n_embd, config.n_layer, config.block_size, config.vocab_size
    params = V * C * (1 if config.tie_head else 2) + (T * C if config.pos_emb == "learned" else 0) \
        + L * (12 * C * C + 13 * C) + 2 * C
    weights = 4 * params * (4 if training else 1) + L * (PYTHON_BYTES_PER_LAYER + T * T)
    tokens = batch_size * T
    attention_maps = 3 * config.n_head * T if config.attn_impl == "explicit" else 0
    activations = 4 * tokens * (L * (20 * C + attention_maps) + 3 * V)
    return params, weights + activations


def check_model_fits(config, batch_size, device):
    """Refuse, before any tensor is made, a model (and batch) that cannot fit in the device's free memory."""
    params, needed = memory_needed(config, batch_size, training=batch_size > 0)
    if device.startswith("cuda"):
        available = torch.cuda.mem_get_info(torch.device(device))[0]
        if needed > available:
            raise UserError(f"{params:,} parameters with batch_size {batch_size} need about "
                            f"{guards.gigabytes(needed)} but {device} has {guards.gigabytes(available)} free; use a "
                            f"smaller --n_embd, --n_layer, --block_size or --batch_size")
        return
    what = f"{params:,} parameters" + (f" with batch_size {batch_size}" if batch_size else "")
    guards.check_memory(needed, what, "use a smaller --n_embd, --n_layer, --block_size or --batch_size")


def check_generation_fits(config, num_samples, max_new_tokens, device):
    """Refuse, before the first tensor, a batch of samples that cannot fit: sample.py's --num_samples 10000000
    would otherwise try to allocate its KV cache (tens of GB) and end in a traceback."""
    on_device, on_host = engine.generation_memory(config, num_samples, max_new_tokens)
    what = (f"{num_samples:,} sample{'s' * (num_samples != 1)} of {max_new_tokens:,} "
            f"token{'s' * (max_new_tokens != 1)}")
    cure = "use a smaller --num_samples or --max_new_tokens"
    if device.startswith("cuda"):
        available = torch.cuda.mem_get_info(torch.device(device))[0]
        if on_device > available:
            raise UserError(f"{what} need about {guards.gigabytes(on_device)} but {device} has "
                            f"{guards.gigabytes(available)} free; {cure}")
        on_device = 0
    guards.check_memory(on_device + on_host, what, cure)


# ----------------------------------------------------------------------------------------------------------------
# CPU threads that keep their speed when another program takes a core


def use_threads(threads, adapt=True):
    """--threads N: N CPU threads for torch, fixed for the whole run. 0 (auto): start with torch's default count
    (one per core) and let the returned ThreadPicker change it while the run goes, as other programs load the
    machine. Either way the caller feeds it its step times (ThreadPicker.step); a fixed one ignores them. With
    adapt=False (a GPU, or several processes under torchrun), auto is simply torch's default count."""
    if threads < 0:
        raise UserError(f"--threads must not be negative, got {threads}")
    if threads > (os.cpu_count() or 1):
        raise UserError(f"--threads {threads} is more than the {os.cpu_count()} CPUs of this machine")
    if threads:
        torch.set_num_threads(threads)
    return ThreadPicker(most=torch.get_num_threads(), adapts=not threads and adapt)


class ThreadPicker:
    """The thread count that is fastest now, found by timing steps.

    Why: torch splits every operation among its threads and each operation waits for the slowest of them.
    When another program holds a core, one of torch's threads keeps losing that core, and every operation waits
    for it: a step can take many times as long with every core's thread as with one thread fewer (2.5x to 15x
    on this repo's 2-core machine, 75x on another: docs/threads.md). Fewer threads then run at full speed.

    How: the caller calls step() after each step (a training step, or a generated token) and restart() after
    anything that is not a step (an evaluation). The picker starts on one thread (never collapses), times a few
    steps, then tries every core's thread (`most`), then one fewer, and so on, and keeps the fastest. Later it
    tries a count next to the current one every `recheck_seconds`, and at once when the recent steps got much
    slower than when the count was chosen (`slow_factor`). A trial: switch with torch.set_num_threads, skip a
    step (the new threads warm up), time `window` steps and keep the count whose median is faster (the new one
    must win by `margin`); a trial step more than `abort_factor` times the old median ends the trial at once
    (a collapse costs one step, not a window). Medians: a checkpoint save or a hiccup is one slow step.
    step() returns a line saying why the count changed, or None.

    The thread count changes rounding slightly (the sums are split differently): a run whose count changed is
    not bit-identical to one whose count did not. Pass --threads N for bit-identical reruns and resumes."""

    def __init__(self, most, adapts=True, clock=time.perf_counter, window=5, recheck_seconds=30.0,
                 slow_factor=1.5, margin=0.05, abort_factor=2.0):
        self.most, self.adapts, self.clock = most, adapts and most > 1, clock
        self.window, self.recheck_seconds, self.slow_factor = window, recheck_seconds, slow_factor
        self.margin, self.abort_factor = margin, abort_factor
        self.recent = deque(maxlen=window)  # the last step times at self.threads
        self.reference = None  # the median step time when the count was last chosen
        self.trial = None  # (the count being tried, the count to go back to, the median to beat)
        self.starting = self.adapts  # the start-up search: 1 thread, then most, most - 1, ... 2
        self.skip = 1  # steps not timed: the first one, and the first after a switch
        self.last = self.next_check = None
        self.threads = torch.get_num_threads()
        if self.adapts:
            self.switch(1)
        self.restart()

    def restart(self):
        """Time the next step from now (after an evaluation, a prompt typed, anything that is not a step)."""
        self.last = self.clock()

    def step(self):
        """One step is done. Returns a line to show if the thread count just changed, else None."""
        now = self.clock()
        seconds, self.last = now - self.last, now
        if not self.adapts:
            return None
        if self.next_check is None:
            self.next_check = now + self.recheck_seconds
        if self.trial is not None and seconds > self.abort_factor * self.trial[2]:
            return self.end_trial(seconds, now)  # far slower than the count it must beat: a collapse
        if self.skip:
            self.skip -= 1
            return None
        self.recent.append(seconds)
        if len(self.recent) < self.window:
            return None
        median = statistics.median(self.recent)
        if self.trial is not None:
            return self.end_trial(median, now)
        if self.reference is None:  # one thread measured: now every core's thread
            self.reference = median
            return self.begin_trial(self.most, median)
        if median > self.slow_factor * self.reference:  # much slower than when the count was chosen
            if self.threads > 1:
                return self.begin_trial(self.threads - 1, median)
            self.reference = median  # already on one thread: nothing fewer to try
        elif now >= self.next_check:  # every so often: is a count next to this one faster now?
            return self.begin_trial(self.threads + 1 if self.threads < self.most else self.threads - 1, median)
        return None

    def begin_trial(self, count, median):
        self.trial = (count, self.threads, median)
        self.switch(count)
        return None

    def end_trial(self, median, now):
        count, before, to_beat = self.trial
        self.trial = None
        self.next_check = now + self.recheck_seconds
        if median < (1 - self.margin) * to_beat:  # the new count is faster: keep it
            self.reference = median
            fewer = count < before
            if self.starting:  # the first count (from 1 thread) that beats one thread is the start-up's pick
                self.starting = False
                return self.why(count, fewer=True) if count < self.most else None
            if (fewer and count > 1) or (not fewer and count < self.most):  # and try the next one too
                self.begin_trial(count - 1 if fewer else count + 1, median)
            return self.why(count, fewer)
        self.reference = to_beat
        self.switch(before)
        if self.starting and count > 2:  # start-up: every core's thread lost to one thread; try one fewer
            return self.begin_trial(count - 1, to_beat)
        if self.starting:
            self.starting = False
            return self.why(1, fewer=True)
        return None

    def switch(self, count):
        torch.set_num_threads(count)
        self.threads = count
        self.recent.clear()
        self.skip = 1

    def why(self, count, fewer):
        if fewer:
            return f"another program is using a core: {count_threads(count)}"
        quiet = "quiet again" if count == self.most else "less busy"
        return f"the machine is {quiet}: {count_threads(count)}"


def count_threads(count):
    return f"{count} thread" if count == 1 else f"{count} threads"


class Progress:
    """What the user sees while the loop runs: a progress bar in a terminal (rank 0 only), else a printed line
    at every report; and the speed (ms per step) since the last report, evaluation time excluded. Each step's
    time also goes to the machine's ThreadPicker, which may change the thread count (and says why in a line)."""

    def __init__(self, max_iters, iter_num, tokens_per_iter, machine):
        show_bar = machine.master and sys.stdout.isatty()
        self.bar = tqdm(total=max_iters, initial=iter_num, disable=not show_bar, unit="it", dynamic_ncols=True)
        self.tokens_per_iter = tokens_per_iter
        self.threads = machine.threads or ThreadPicker(torch.get_num_threads(), adapts=False)
        self.restart()

    def restart(self):
        """Start a new speed window (after an evaluation: its time is not step time)."""
        self.start, self.steps = time.perf_counter(), 0
        self.threads.restart()

    def step(self):
        self.steps += 1
        self.bar.update(1)
        why = self.threads.step()
        if why and self.bar.disable:
            print(why)
        elif why:
            self.bar.write(why)

    def report(self, iter_num, train_loss, lr):
        """Show this step's loss and the speed since the last report; return them as a metrics record."""
        ms_per_iter = 1000 * (time.perf_counter() - self.start) / max(1, self.steps)
        tokens_per_s = self.tokens_per_iter * 1000 / ms_per_iter
        if self.bar.disable:
            print(f"iter {iter_num}: loss {train_loss:.4f}, lr {lr:.2e}, {ms_per_iter:.1f} ms/iter, "
                  f"{tokens_per_s:,.0f} tokens/s, {count_threads(torch.get_num_threads())}")
        else:
            self.bar.set_postfix(loss=f"{train_loss:.3f}", ms=f"{ms_per_iter:.0f}", threads=torch.get_num_threads())
        self.restart()
        return {"iter": iter_num, "tokens": iter_num * self.tokens_per_iter, "train_loss": train_loss, "lr": lr,
                "ms_per_iter": ms_per_iter, "tokens_per_s": tokens_per_s}

    def close(self):
        self.bar.close()


# ----------------------------------------------------------------------------------------------------------------
# surviving: signals and divergence


class StopSignal:
    """Ctrl-C (SIGINT), SIGTERM (a closing laptop lid, `kill`, a cluster's time limit) or SIGHUP (a closed
    terminal, a dropped ssh connection) during training only sets a flag; the loop looks at it between two
    steps, saves last.pt and returns. Why not stop at once? The signal can arrive in the middle of
    optimizer.step(), with half the weights updated: that state must never be saved.
    A second signal stops immediately (KeyboardInterrupt): even then the last checkpoint on disk is whole,
    because checkpoint.save writes a temporary file and renames it."""

    def __init__(self):
        self.received = None  # the name of the first signal, e.g. "SIGINT"
        self.previous = {}

    def listen(self):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def handle(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def farewell(stopped, signal_name, iter_num, out_dir, seconds, best_val_loss):
    """The run's last line: how to continue a stopped run, or where a finished one's checkpoints are."""
    if stopped:  # under torchrun, a rank that was told to stop by another one has no signal name of its own
        return (f"stopped by {signal_name or 'a signal'} at iteration {iter_num}; saved {Path(out_dir) / 'last.pt'}. "
                f"Continue with: python train.py --out_dir {shlex.quote(str(out_dir))} --resume")
    return (f"done: {iter_num} iterations in {seconds:.1f} s, best val loss {best_val_loss:.4f}; checkpoints in "
            f"{out_dir}/ (sample with: python sample.py --out_dir {shlex.quote(str(out_dir))})")


def diverged_message(what, iter_num, cfg, dtype, last_saved):
    """One line for a run whose loss or weights stopped being finite numbers, with the usual cures."""
    fixes = [f"a lower --learning_rate (it is {cfg.learning_rate:g})", "more --warmup_iters"]
    if dtype != "float32":
        fixes.append("--dtype float32")
    if not cfg.grad_clip:
        fixes.append("--grad_clip 1")
    kept = f"last.pt from iteration {last_saved} is kept" if last_saved is not None else "nothing was saved"
    return f"{what} at iteration {iter_num}: training diverged; try {', '.join(fixes)}; {kept}"
