"""
memory.py -- decides whether something fits before it is made: a model and its batch, a batch of samples, a
data set to prepare, the random streams of gradient accumulation. One line with the number it would need,
instead of a MemoryError or a machine swapping itself to a halt. Only the standard library at import
(prepare.py uses it and stays free of torch).
"""

from pathlib import Path

from babygpt.cli import UserError

GB = 1024**3


def gigabytes(n_bytes):
    return f"{n_bytes / GB:.1f} GB"


def available_memory():
    """Bytes this process can still allocate: the smallest of the free RAM (MemAvailable), the cgroup's limit
    (containers) and `ulimit -v`. None if none of them can be read (then nothing is refused)."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            limits.append(max(0, int(text) - used))
    except (OSError, ValueError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(0, soft - virtual_memory_used()))
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else None


def virtual_memory_used():
    """This process's address space now (what `ulimit -v` counts)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_memory(needed, what, cure):
    """Refuse, before allocating, what cannot fit: one line with the number it would need."""
    available = available_memory()
    if available is not None and needed > available:
        raise UserError(f"{what} needs about {gigabytes(needed)} of memory but only {gigabytes(available)} is "
                        f"available; {cure}")


GENERATOR_BYTES = 4 << 10  # one torch.Generator: a Mersenne Twister's 2.5 KB state and its object (2.7 KB measured)


def check_accumulation(micro_steps):
    """train.py keeps one random stream (a torch.Generator) per micro-batch of a step, so that a resumed run draws
    the same batches: a billion accumulation steps would need terabytes before the first step."""
    check_memory(micro_steps * GENERATOR_BYTES, f"gradient_accumulation_steps {micro_steps:,} (a random stream "
                 f"per micro-batch)", "use fewer --gradient_accumulation_steps and a larger --batch_size")


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
        import torch  # (here: prepare.py imports this file and stays free of torch)

        available = torch.cuda.mem_get_info(torch.device(device))[0]
        if needed > available:
            raise UserError(f"{params:,} parameters with batch_size {batch_size} need about "
                            f"{gigabytes(needed)} but {device} has {gigabytes(available)} free; use a "
                            f"smaller --n_embd, --n_layer, --block_size or --batch_size")
        return
    what = f"{params:,} parameters" + (f" with batch_size {batch_size}" if batch_size else "")
    check_memory(needed, what, "use a smaller --n_embd, --n_layer, --block_size or --batch_size")


def check_generation_fits(config, num_samples, max_new_tokens, device):
    """Refuse, before the first tensor, a batch of samples that cannot fit: sample.py's --num_samples 10000000
    would otherwise try to allocate its KV cache (tens of GB) and end in a traceback."""
    import torch

    from babygpt import engine  # (imports torch: see check_model_fits)

    on_device, on_host = engine.generation_memory(config, num_samples, max_new_tokens)
    what = (f"{num_samples:,} sample{'s' * (num_samples != 1)} of {max_new_tokens:,} "
            f"token{'s' * (max_new_tokens != 1)}")
    cure = "use a smaller --num_samples or --max_new_tokens"
    if device.startswith("cuda"):
        available = torch.cuda.mem_get_info(torch.device(device))[0]
        if on_device > available:
            raise UserError(f"{what} need about {gigabytes(on_device)} but {device} has "
                            f"{gigabytes(available)} free; {cure}")
        on_device = 0
    check_memory(on_device + on_host, what, cure)
