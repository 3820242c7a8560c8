"""
GPT-2's weights in babygpt's own model.py: `--init_from gpt2` on train.py and sample.py.

model.py is GPT-2's architecture (pre-norm blocks, learned positions, a GELU MLP 4x wide, a tied LM head),
so OpenAI's weights fit it once three things are translated:
  * the names:  transformer.h.3.attn.c_attn.weight  ->  blocks.3.attn.c_attn.weight, wte -> token_embedding,
                wpe -> position_embedding (the full table is in babygpt_name below);
  * the matrices: GPT-2 stores its Linear layers as "Conv1D", a (in, out) matrix used as x @ W, where
                nn.Linear keeps (out, in) and computes x @ W.T: each of them is transposed;
  * the GELU:   GPT-2 uses the tanh approximation of GELU, mlp_act 'gelu_tanh' (the lecture's 'gelu' is
                the exact one; they differ by at most 0.00047, at x = 2.70, in float64: enough to change a
                greedy token now and then, so a loaded GPT-2 computes GPT-2's).
The tokenizer is GPT-2's BPE, tiktoken's r50k_base (babygpt/tokenizer.py GPT2Tokenizer).

Where the weights come from: a name (gpt2, gpt2-medium, gpt2-large, gpt2-xl) is downloaded once by
huggingface_hub into its usual cache (~/.cache/huggingface, or HF_HOME), with a progress bar; a folder is read
as transformers writes one: config.json and model.safetensors (or pytorch_model.bin, read with
torch.load(weights_only=True): no pickled code). Needs the optional packages: pip install -e .[gpt2]
"""

import dataclasses
import importlib
import json
import math
from pathlib import Path

import torch

from babygpt import memory
from babygpt.checkpoint import CheckpointError, check_unpacked_size
from babygpt.cli import UserError
from babygpt.tokenizer import GPT2Tokenizer
from model import GPT, GPTConfig

# --init_from NAME -> the model's repository on the Hugging Face hub. The parameter counts (the tied head
# once) are GPT(config).num_params() of each shape, built on torch's meta device (docs/walkthrough.md, step 10)
HUB_MODELS = {
    "gpt2": "openai-community/gpt2",  # 124,439,808 parameters: 12 layers, 12 heads, 768 wide
    "gpt2-medium": "openai-community/gpt2-medium",  # 354,823,168: 24 layers, 16 heads, 1024 wide
    "gpt2-large": "openai-community/gpt2-large",  # 774,030,080: 36 layers, 20 heads, 1280 wide
    "gpt2-xl": "openai-community/gpt2-xl",  # 1,557,611,200: 48 layers, 25 heads, 1600 wide
}
INSTALL = "pip install -e .[gpt2]"
# transformers' activation_function values and the mlp_act that computes the same function
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
# the model.py settings GPT-2 fixes (its width, depth and vocabulary come from config.json)
GPT2_ARCHITECTURE = dict(bias=True, pos_emb="learned", norm="layernorm", qk_norm=False,
                         attn_pattern="causal", zero_init_proj=False)
# config.json entries that must have these values, else model.py computes something else
REQUIRED = {"model_type": "gpt2", "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False}


def missing_packages(*names):
    """The first of the optional packages that cannot be imported, or None."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def require(*names, what="loading GPT-2's weights"):
    if missing := missing_packages(*names):
        raise UserError(f"{what} needs the {missing} package: {INSTALL}")


def fetch(name):
    """The folder holding NAME's config.json and model.safetensors: huggingface_hub downloads them once
    (with a progress bar) and finds them in its cache afterwards. Without network and cache, one line."""
    require("huggingface_hub", "safetensors")
    import huggingface_hub
    try:
        return Path(huggingface_hub.snapshot_download(HUB_MODELS[name],
                                                      allow_patterns=["config.json", "model.safetensors"]))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 -- no network, hub offline, a proxy: all mean "not fetched"
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200] or type(e).__name__
        raise UserError(f"could not fetch GPT-2's weights ({name}) from the Hugging Face hub, and they are not "
                        f"in its cache {huggingface_hub.constants.HF_HUB_CACHE} ({type(e).__name__}: {reason}); "
                        f"connect to the internet once, or pass --init_from FOLDER, a folder holding GPT-2's "
                        f"config.json and model.safetensors") from None


def locate(init_from):
    """--init_from's folder: an existing folder as given, else a hub name fetched into the cache."""
    if Path(init_from).is_dir():
        return Path(init_from)
    if init_from in HUB_MODELS:
        return fetch(init_from)
    raise UserError(f"--init_from {init_from}: not a folder, and not one of {', '.join(HUB_MODELS)}")


def read_config(folder):
    """config.json as a dict (transformers' GPT2Config, written by save_pretrained)."""
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{folder} is not a GPT-2 folder in transformers' format: it has no config.json "
                        f"(it needs config.json and model.safetensors or pytorch_model.bin)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object")
    return config


def model_config_of(config, source, block_size=None):
    """The GPTConfig that computes what config.json's GPT-2 computes, or one line naming what differs.
    block_size: use the first block_size positions only (a shorter context trains faster)."""
    for key, value in REQUIRED.items():
        got = config.get(key, value if key != "model_type" else None)
        if got != value and not (isinstance(value, float) and isinstance(got, (int, float))
                                 and math.isclose(got, value)):
            raise UserError(f"{source}: {key} is {got!r}; babygpt's model.py computes {key} {value!r} only")
    activation = config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise UserError(f"{source}: activation_function {activation!r}; babygpt's model.py has "
                        f"{', '.join(ACTIVATIONS)} only")
    sizes = {key: config.get(key) for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")}
    for key, value in sizes.items():
        if type(value) is not int or value < 1:
            raise UserError(f"{source}: {key} must be a positive integer, got {value!r}")
    if config.get("n_inner") not in (None, 4 * sizes["n_embd"]):
        raise UserError(f"{source}: n_inner is {config['n_inner']}; babygpt's MLP is 4 x n_embd "
                        f"({4 * sizes['n_embd']}) wide")
    positions = sizes["n_positions"]
    if block_size is not None and block_size > positions:
        raise UserError(f"--block_size {block_size} is longer than the {positions} positions GPT-2 "
                        f"({source}) learned; use at most {positions}")
    try:
        return GPTConfig(block_size=block_size or positions, vocab_size=sizes["vocab_size"],
                         n_layer=sizes["n_layer"], n_head=sizes["n_head"], n_embd=sizes["n_embd"],
                         mlp_act=ACTIVATIONS[activation],
                         tie_head=bool(config.get("tie_word_embeddings", True)), **GPT2_ARCHITECTURE)
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None


def babygpt_name(name):
    """GPT-2's parameter name -> model.py's (None for what model.py does not keep), and whether the
    matrix must be transposed (GPT-2's Conv1D layers store (in, out); nn.Linear stores (out, in))."""
    name = name.removeprefix("transformer.")
    if name.endswith((".attn.bias", ".attn.masked_bias")):  # the causal mask, stored as a buffer
        return None, False
    whole = {"wte.weight": "token_embedding.weight", "wpe.weight": "position_embedding.weight",
             "lm_head.weight": "lm_head.weight", "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias"}
    if name in whole:
        return whole[name], False
    if name.startswith("h."):  # h.3.attn.c_attn.weight -> blocks.3.attn.c_attn.weight
        layer, rest = name[2:].split(".", 1)
        conv1d = rest.endswith(".weight") and rest.split(".")[1] in ("c_attn", "c_proj", "c_fc")
        return f"blocks.{layer}.{rest}", conv1d
    return name, False  # unknown: load_state_dict names it


def read_weights(folder):
    """GPT-2's tensors by name, from model.safetensors (or its shards) or pytorch_model.bin."""
    shards = folder / "model.safetensors.index.json"
    files = [folder / "model.safetensors"]
    if shards.is_file():
        weight_map = json.loads(shards.read_text(encoding="utf-8")).get("weight_map", {})
        files = [folder / name for name in sorted(set(weight_map.values()))]
    if all(path.is_file() for path in files):
        require("safetensors")
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        weights = {}
        for path in files:
            try:
                weights.update(load_file(path))
            except (SafetensorError, OSError) as e:
                raise UserError(f"cannot read {path}: {e}") from None
        return weights
    path = folder / "pytorch_model.bin"
    if not path.is_file():
        raise UserError(f"{folder} is not a GPT-2 folder in transformers' format: it has config.json but "
                        f"neither model.safetensors nor pytorch_model.bin")
    try:
        check_unpacked_size(path)
        weights = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    except CheckpointError as e:
        raise UserError(str(e)) from None
    except Exception as e:  # noqa: BLE001 -- weights_only refuses pickled objects; torch raises many kinds
        raise UserError(f"{path} cannot be read as plain tensors ({type(e).__name__}); refusing it") from None
    if not isinstance(weights, dict):
        raise UserError(f"{path} does not hold a dict of tensors")
    return weights


def state_dict_of(weights, model_config, source):
    """GPT-2's tensors renamed and transposed into model.py's state_dict (positions cropped to
    block_size); a tied head is the token embedding itself."""
    state = {}
    for name, tensor in weights.items():
        ours, transpose = babygpt_name(name)
        if ours is None:
            continue
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise UserError(f"{source}: {name} is not a floating-point tensor")
        state[ours] = tensor.t().contiguous() if transpose else tensor
    if model_config.tie_head and "token_embedding.weight" in state:  # one matrix, read in and out
        state["lm_head.weight"] = state["token_embedding.weight"]
    if "position_embedding.weight" in state:
        state["position_embedding.weight"] = state["position_embedding.weight"][: model_config.block_size]
    return {name: tensor.float() for name, tensor in state.items()}


def load(init_from, device="cpu", batch_size=0, **settings):
    """GPT-2 (a hub name or a folder) as babygpt's own model.GPT, in float32 on `device`. settings:
    block_size (the first that many positions), dropout, attn_impl."""
    folder = locate(init_from)
    model_config = model_config_of(read_config(folder), folder, settings.pop("block_size", None))
    model_config = dataclasses.replace(model_config, **settings)
    memory.check_model_fits(model_config, batch_size, device)  # one line, not a MemoryError
    state = state_dict_of(read_weights(folder), model_config, folder)
    model = GPT(model_config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # a name missing, unexpected or of another shape: name the first
        reason = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"{folder}: the weights do not fit its config.json ({reason})") from None
    return model.to(device)


GPT2_META = {"tokenizer": GPT2Tokenizer.kind, "encoding": GPT2Tokenizer.ENCODING,
             "vocab_size": GPT2Tokenizer.VOCAB_SIZE}


def check_vocabulary(model_config, init_from):
    if model_config.vocab_size != GPT2Tokenizer.VOCAB_SIZE:
        raise UserError(f"--init_from {init_from} has vocab_size {model_config.vocab_size}; babygpt runs GPT-2's "
                        f"weights with GPT-2's tokenizer, {GPT2Tokenizer.VOCAB_SIZE} tokens")


def as_checkpoint(init_from):
    """sample.py --init_from: GPT-2 as a checkpoint dict that checkpoint.load_model reads (no run behind it:
    iteration 0, val loss nan)."""
    model = load(init_from)
    check_vocabulary(model.config, init_from)
    return {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config), "meta": GPT2_META,
            "iter_num": 0, "best_val_loss": float("nan"), "init_from": init_from}


def start_from(cfg, model, meta, resumed):
    """train.py --init_from: GPT-2's architecture and weights instead of the fresh `model` (keeping its
    block_size, dropout, attn_impl and device); returns (its config, the model). A resumed run, or no
    --init_from, keeps `model` (last.pt holds the weights). The data must be tokenized for GPT-2."""
    if not cfg.init_from or resumed:
        return model.config, model
    if meta["tokenizer"] != GPT2Tokenizer.kind:
        raise UserError(f"--init_from {cfg.init_from} needs data tokenized for GPT-2: run `python prepare.py "
                        f"--tokenizer gpt2` and pass --data_dir data/shakespeare_gpt2 (this data is "
                        f"{meta['tokenizer']})")
    mine = model.config
    loaded = load(cfg.init_from, str(next(model.parameters()).device), cfg.batch_size, block_size=mine.block_size,
                  dropout=mine.dropout, attn_impl=mine.attn_impl)
    config = loaded.config
    check_vocabulary(config, cfg.init_from)
    print(f"init_from {cfg.init_from}: GPT-2's weights, {config.n_layer} layers, {config.n_head} heads, "
          f"{config.n_embd} wide, vocab {config.vocab_size}, block_size {config.block_size}")
    return config, loaded
