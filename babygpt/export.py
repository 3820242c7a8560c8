"""
A babygpt checkpoint as a Hugging Face transformers model folder: the other direction of gpt2.py.

    python -m babygpt.export out-classic hf-classic       # OUT_DIR/ckpt.pt (or a checkpoint file) -> DEST_DIR
    python -c "from transformers import pipeline; print(pipeline('text-generation', model='hf-classic')('ROMEO:'))"

DEST_DIR gets what transformers.AutoModelForCausalLM and AutoTokenizer read:
    config.json             a GPT2Config (the sizes, and activation_function 'gelu' or 'gelu_new')
    model.safetensors       the weights under GPT-2's names, the Linear matrices transposed into Conv1D's (in, out)
    tokenizer.json          the same text -> ids as babygpt's tokenizer, written with the `tokenizers` package:
                            char: one token per character; bpe and gpt2: a byte-level BPE of the same ranks
    tokenizer_config.json   which tokenizer class reads tokenizer.json
Only a model GPT-2 can compute exports: learned positions, LayerNorm, GELU, causal attention (the classic
preset's model). Biases off export as zeros (the same function); an untied head as its own lm_head.weight.
Needs safetensors and tokenizers (pip install -e .[gpt2]); not transformers, which only reads the result.
DEST_DIR is written whole or not at all (a temporary folder renamed into place), and a folder that holds
something is replaced only with --overwrite.
"""

import json
import os
from pathlib import Path

import torch

from babygpt import checkpoint, files
from babygpt.cli import Parser, UserError
from babygpt.runner import run
from babygpt.gpt2 import require
from babygpt.tokenizer import TokenizerUnavailable, tokenizer_from_meta

# What GPT-2 cannot compute, in the order checked: (setting, the value GPT-2 has, what it is instead)
GPT2_HAS = (("pos_emb", "learned", "learned position embeddings"), ("norm", "layernorm", "LayerNorm"),
            ("qk_norm", False, "no norm on queries and keys"), ("mlp_act", ("gelu", "gelu_tanh"), "a GELU MLP"),
            ("attn_pattern", "causal", "plain causal attention"))
ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}  # model.py's mlp_act -> transformers' activation_function
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
BIASES = {"ln_1.bias": 1, "attn.c_attn.bias": 3, "attn.c_proj.bias": 1, "ln_2.bias": 1, "mlp.c_fc.bias": 4,
          "mlp.c_proj.bias": 1}  # each block's biases, in multiples of n_embd (zeros when bias is off)
END_OF_TEXT = "<|endoftext|>"  # GPT-2's token 50256


def obstacle(model_config, source):
    """One line naming the first setting that GPT-2 cannot compute, or None."""
    for name, allowed, gpt2_has in GPT2_HAS:
        value = model_config[name]
        if value not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            return (f"{source}: GPT-2 cannot express {name} {value!r} (it has {gpt2_has}); a model trained with "
                    f"--preset classic exports")
    return None


def hf_config(model_config, meta):
    """transformers' GPT2Config, as the dict its config.json holds."""
    C, gpt2_tokens = model_config["n_embd"], meta["tokenizer"] == "gpt2"
    dropout = model_config["dropout"]
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": model_config["vocab_size"],
            "n_positions": model_config["block_size"], "n_embd": C, "n_layer": model_config["n_layer"],
            "n_head": model_config["n_head"], "n_inner": None,
            "activation_function": ACTIVATION[model_config["mlp_act"]], "resid_pdrop": dropout,
            "embd_pdrop": dropout, "attn_pdrop": dropout, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
            "scale_attn_weights": True, "use_cache": True, "tie_word_embeddings": model_config["tie_head"],
            "bos_token_id": 50256 if gpt2_tokens else None, "eos_token_id": 50256 if gpt2_tokens else None,
            "dtype": "float32"}


def hf_weights(state, model_config):
    """model.py's state_dict under GPT-2's names: Linear (out, in) -> Conv1D (in, out), missing biases as 0."""
    C = model_config["n_embd"]
    names = {"token_embedding.weight": "transformer.wte.weight", "position_embedding.weight": "transformer.wpe.weight",
             "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias"}
    weights = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            if not model_config["tie_head"]:
                weights[name] = tensor
            continue
        if name.startswith("blocks."):
            _, layer, rest = name.split(".", 2)
            weights[f"transformer.h.{layer}.{rest}"] = tensor.t() if rest in CONV1D else tensor
        else:
            weights[names[name]] = tensor
    for layer in range(model_config["n_layer"]):
        for rest, times in BIASES.items():
            weights.setdefault(f"transformer.h.{layer}.{rest}", torch.zeros(times * C))
    weights.setdefault("transformer.ln_f.bias", torch.zeros(C))
    return {name: tensor.float().contiguous().clone() for name, tensor in weights.items()}


def byte_level_bpe(token_bytes, n_tokens, special=()):
    """A byte-level BPE for `tokenizers` from babygpt's ranks (token id -> its bytes): the vocabulary in GPT-2's
    byte-to-character alphabet, and one merge per token after the 256 bytes: the two parts tiktoken itself
    joins to make it (the lowest-ranked merges first, stopping below the token's own rank), as GPT-2's own
    merges.txt does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable characters that stand for bytes
    byte_char = byte_to_char(alphabet)
    ranks = {token_bytes(i): i for i in range(n_tokens)}
    spelled = {i: "".join(byte_char[b] for b in token) for token, i in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        if len(token) > 1:
            left, right = tiktoken_parts(ranks, token, rank)
            merges.append((spelled[ranks[left]], spelled[ranks[right]]))
    vocab = {spelled[i]: i for i in range(n_tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    if special:
        tokenizer.add_special_tokens(list(special))
    return tokenizer


def byte_to_char(alphabet):
    """GPT-2's bytes_to_unicode table: printable bytes stand for themselves, the others for chr(256 + i)."""
    printable = [b for b in range(256) if chr(b) in alphabet]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b], extra = chr(256 + extra), extra + 1
    return table


def tiktoken_parts(ranks, token, rank):
    """The two tokens whose merge makes `token` in tiktoken's BPE: merge the lowest-ranked neighbouring pair
    again and again, using only merges ranked below `rank`."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, i = min(pairs)
        if best >= rank:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise UserError(f"token {rank} of the BPE is not a merge of two earlier tokens")
    return parts


def char_tokenizer(vocab):
    """One token per character: a BPE without merges splits text into characters and looks each one up."""
    from tokenizers import Tokenizer, decoders, models
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(vocab)}, merges=[]))
    tokenizer.decoder = decoders.Fuse()  # characters joined as they are, no spaces between them
    return tokenizer


def hf_tokenizer(meta):
    """(tokenizer.json's Tokenizer, tokenizer_config.json's dict) for the checkpoint's tokenizer."""
    try:
        ours = tokenizer_from_meta(meta)
    except TokenizerUnavailable as e:
        raise UserError(str(e)) from None
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    if meta["tokenizer"] == "char":
        return char_tokenizer(meta["vocab"]), config
    if meta["tokenizer"] == "bpe":
        return byte_level_bpe(ours.token_bytes, meta["vocab_size"]), config
    tokenizer = byte_level_bpe(ours.token_bytes, meta["vocab_size"] - 1, special=(END_OF_TEXT,))
    return tokenizer, {**config, "bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}


def write_folder(dest, contents, overwrite):
    """DEST holding `contents` (file name -> write(path)), whole or not at all: written into a temporary folder
    beside it, then renamed into place; a previous DEST is removed only after that."""
    dest = Path(dest)
    if os.path.lexists(dest) and not dest.is_dir():
        raise UserError(f"{dest} exists and is not a folder; name a new folder")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise UserError(f"{dest} already holds files; use --overwrite to replace them, or name a new folder")
    staging, old = dest.with_name(f".{dest.name}.export-new"), dest.with_name(f".{dest.name}.export-old")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        files.fresh_folder(staging)
        for name, write in contents.items():
            write(staging / name)
        if dest.is_dir():
            files.remove_folder(old)
            os.replace(dest, old)
        os.replace(staging, dest)
        files.sync_folder(dest.parent)
        files.remove_folder(old)
    except OSError as e:
        files.remove_folder(staging)
        raise UserError(f"cannot write {dest}: {e.strerror or e}") from None
    except BaseException:
        files.remove_folder(staging)
        raise


def export(source, dest, overwrite=False):
    """Write the checkpoint at `source` (a file, or a run folder's ckpt.pt) to `dest`; return its files."""
    path = checkpoint.resolve(source, source)
    try:
        ckpt = checkpoint.load(path)
    except checkpoint.CheckpointError as e:
        raise UserError(str(e)) from None
    if problem := obstacle(ckpt["model_config"], path):
        raise UserError(problem)
    require("safetensors", "tokenizers", what="python -m babygpt.export")
    from safetensors.torch import save_file
    weights = hf_weights(ckpt["model"], ckpt["model_config"])
    tokenizer, tokenizer_config = hf_tokenizer(ckpt["meta"])
    tokenizer_config["model_max_length"] = ckpt["model_config"]["block_size"]
    contents = {
        "config.json": lambda p: write_json(p, hf_config(ckpt["model_config"], ckpt["meta"])),
        "model.safetensors": lambda p: save_file(weights, str(p), metadata={"format": "pt"}),
        "tokenizer.json": lambda p: tokenizer.save(str(p)),
        "tokenizer_config.json": lambda p: write_json(p, tokenizer_config),
    }
    write_folder(dest, contents, overwrite)
    return path, list(contents)


def write_json(path, value):
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def main(argv=None):
    parser = Parser(prog="python -m babygpt.export",
                    description="Write a babygpt checkpoint as a Hugging Face transformers folder (GPT-2).")
    parser.add_argument("out_dir", help="a training run's folder (its ckpt.pt) or a checkpoint file")
    parser.add_argument("dest_dir", help="the folder to write (config.json, model.safetensors, tokenizer)")
    parser.add_argument("--overwrite", action="store_true", help="replace what dest_dir holds")
    args = parser.parse_args(argv)
    path, files = export(args.out_dir, args.dest_dir, args.overwrite)
    print(f"{path} -> {args.dest_dir}: {', '.join(files)}; transformers reads it: "
          f"pipeline('text-generation', model={str(args.dest_dir)!r})")


if __name__ == "__main__":
    run(main)
