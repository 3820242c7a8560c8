"""
The format of what comes back from a learner's child process (exercises/sandbox.py): plain data only.

    blobs = []; tree = encode(value, blobs)   # in the child: a JSON-able tree, tensors' and arrays' bytes apart
    payload = frame(header, blobs)            # one length-prefixed message on the pipe
    FrameReader().feed(data)                  # in the parent: the messages whole, as the bytes arrive
    decode(tree, blobs)                       # the value again: numbers, strings, lists, dicts, tensors, arrays

Never pickle: unpickling what the learner's code returned could run that code in the checker's own process. What
is not plain data (a model, a generator) comes back as a description (Made), and a tensor the checker cannot
rebuild (not on the CPU) as what it was (Foreign).
"""

import json
import struct

import numpy as np
import torch




def encode(value, blobs, depth=0):
    """value as a JSON-able tree; tensors' and arrays' bytes appended to blobs. What is not plain data (a module,
    a generator, a class instance) comes back as its description."""
    if depth > 20:
        return ["object", "a structure nested too deep", None]
    if value is None or isinstance(value, (bool, str)):
        return ["plain", value]
    if isinstance(value, (int, np.integer)):
        return ["plain", int(value)]
    if isinstance(value, (float, np.floating)):
        return ["float", repr(float(value))]
    if isinstance(value, torch.Tensor):
        return encode_tensor(value, blobs)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        blobs.append(np.ascontiguousarray(value).tobytes())
        return ["ndarray", value.dtype.str, list(value.shape), len(blobs) - 1]
    if isinstance(value, (list, tuple, torch.Size)) and len(value) <= 100_000:
        kind = "list" if type(value) is list else "tuple"
        return [kind, [encode(item, blobs, depth + 1) for item in value]]
    if isinstance(value, dict) and len(value) <= 100_000:
        return ["dict", [[encode(k, blobs, depth + 1), encode(v, blobs, depth + 1)] for k, v in value.items()]]
    if isinstance(value, torch.nn.Module):
        n = sum(p.numel() for p in value.parameters())
        return ["module", type(value).__name__, n]
    return ["object", describe_object(value), None]


def describe_object(value):
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 -- the learner's __repr__ may raise anything
        text = "?"
    return f"{type(value).__name__} {text}"[:80]


def encode_tensor(t, blobs):
    meta = [str(t.dtype).removeprefix("torch."), list(t.shape), str(t.device), bool(t.requires_grad)]
    if t.device.type != "cpu" or t.layout != torch.strided or t.is_quantized or t.is_nested:
        return ["tensor", *meta, None]
    data = t.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
    blobs.append(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return ["tensor", *meta, len(blobs) - 1]


class Made:
    """An object the learner's code made that cannot cross the pipe (a model): what it is. (A later call in the
    same child uses the object itself: Checker.script's Later.)"""

    def __init__(self, description, class_name, n_params=None):
        self.description, self.class_name, self.n_params = description, class_name, n_params
        self.is_module = n_params is not None

    def __repr__(self):
        return self.description


class Foreign:
    """A tensor the checker cannot rebuild (not on the CPU, or of an unusual layout): what it was."""

    def __init__(self, dtype, shape, device):
        self.dtype, self.shape, self.device = dtype, tuple(shape), device


def decode(tree, blobs):
    kind = tree[0]
    if kind == "plain":
        return tree[1]
    if kind == "float":
        return float(tree[1])
    if kind in ("list", "tuple"):
        items = [decode(item, blobs) for item in tree[1]]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        out = {}
        for k, v in tree[1]:
            k = decode(k, blobs)
            out[k if isinstance(k, (str, int, float, bool, tuple, type(None))) else repr(k)] = decode(v, blobs)
        return out
    if kind == "ndarray":
        return np.frombuffer(blobs[tree[3]], dtype=np.dtype(tree[1])).reshape(tree[2]).copy()
    if kind == "tensor":
        dtype_name, shape, device, requires_grad, blob = tree[1:]
        dtype = getattr(torch, dtype_name, None)
        if blob is None or not isinstance(dtype, torch.dtype):
            return Foreign(dtype_name, shape, device)
        data = blobs[blob]
        t = (torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(shape) if data
             else torch.empty(shape, dtype=dtype))
        return t.requires_grad_() if requires_grad and (t.is_floating_point() or t.is_complex()) else t
    if kind == "module":
        return Made(f"a {tree[1]} (an nn.Module)", tree[1], tree[2])
    return Made(tree[1], tree[1].split(" ", 1)[0])


def frame(header, blobs=()):
    header = dict(header, blobs=[len(b) for b in blobs])
    text = json.dumps(header).encode()
    payload = struct.pack("!Q", len(text)) + text + b"".join(blobs)
    return struct.pack("!Q", len(payload)) + payload


class FrameReader:
    """Frames out of the bytes of the result pipe, as they arrive."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data):
        self.buffer += data
        frames = []
        while len(self.buffer) >= 8:
            (size,) = struct.unpack("!Q", self.buffer[:8])
            if len(self.buffer) < 8 + size:
                break
            payload = bytes(self.buffer[8:8 + size])
            del self.buffer[:8 + size]
            (header_size,) = struct.unpack("!Q", payload[:8])
            header = json.loads(payload[8:8 + header_size])
            blobs, at = [], 8 + header_size
            for n in header["blobs"]:
                blobs.append(payload[at:at + n])
                at += n
            frames.append((header, blobs))
        return frames
