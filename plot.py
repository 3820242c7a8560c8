"""
plot.py -- look inside a run and a model: loss curves, attention maps, embeddings. Writes PNG files.

    python plot.py loss out                          # out/loss.png: train/val loss, learning rate, ln(V)
    python plot.py loss out-a out-b --out cmp.png    # several runs overlaid, to compare experiments
    python plot.py attention --ckpt out --text "ROMEO: But soft"   # out/attention.png: layer x head grid
    python plot.py embeddings --ckpt out             # out/embeddings.png: characters in 2-D, positions
    python plot.py explore --ckpt out                # all of it live in the browser, for any text you type
    python plot.py attention --help                  # the flags of one subcommand

Each picture has two halves here: a function that prepares the numbers (loss_curves, attention_maps,
embedding_pca, position_similarity -- the tests check these against the metrics file and the model) and
a function that draws them. matplotlib is imported only when drawing, with the Agg backend, so this works
without a display (on a server, in tests). The loss curves are in babygpt/loss_plot.py.
"""

import math
import signal
from pathlib import Path

from babygpt import files, runner

# Ctrl-C during the slow imports below (torch: a second or two): "interrupted", not a traceback
if __name__ == "__main__":
    signal.signal(signal.SIGINT, runner.exit_quietly)

import torch
from torch.nn import functional as F

from babygpt import checkpoint
from babygpt.cli import Parser, UserError

# the loss curves live in loss_plot.py (train.py draws loss.png with it after each evaluation)
from babygpt.loss_plot import draw_loss, new_figure, save_png
from babygpt.metrics import loss_curves, read_metrics
from babygpt.runner import run
from babygpt.tokenizer import TokenizerUnavailable, UnknownCharacters, tokenizer_from_meta
from model import layer_mask

# Characters that are invisible as tick labels get a visible stand-in.
SHOWN_AS = {"\n": "⏎", " ": "␣", "\t": "⇥"}


def shown(ch):
    """A visible stand-in for a whitespace or control character (a byte-level BPE has tokens for all 256 bytes)."""
    return SHOWN_AS.get(ch, ch if ch.isprintable() else ascii(ch)[1:-1])


# ----------------------------------------------------------------------------------------------------------------
# loss curves, from OUT_DIR/metrics.jsonl (drawn by loss_plot.py)


def vocab_size_of_run(out_dir):
    """The vocabulary size stored in the run's checkpoint (None if it has none yet)."""
    for name in ("ckpt.pt", "last.pt"):
        try:
            return checkpoint.load(Path(out_dir) / name)["meta"]["vocab_size"]
        except checkpoint.CheckpointError:
            continue
    return None


def loss_command(args):
    runs = [(str(d), loss_curves(read_metrics(d)), vocab_size_of_run(d)) for d in args.out_dirs]
    out = args.out or (Path(args.out_dirs[0]) / "loss.png" if len(args.out_dirs) == 1 else "loss.png")
    files.output_file(out, "png", "--out")  # never a checkpoint, a device, a link: checked before drawing
    print(f"wrote {draw_loss(runs, out)}")


# ----------------------------------------------------------------------------------------------------------------
# attention maps: the real weights, recomputed from what each attention module received


def attention_weights(attn, x, causal=True, rope=None):
    """softmax(q k^T / sqrt(hs)) for one CausalSelfAttention module `attn` and its input x (B, T, C), computed
    with the module's own qkv() (the same projections, QK-norm and rotary positions as its forward) and its own
    mask (causal, sliding window or BigBird). Returns (B, nh, T, T): row t says how much position t takes from each
    position; with causal=True nothing goes to the future."""
    T = x.size(1)
    q, k, _ = attn.qkv(x, rope)  # 2 x (B, nh, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (B, nh, T, T)
    if causal:
        allowed = layer_mask(attn, T, device=x.device, explicit=True)  # (T, T): causal, sliding or BigBird
        scores = scores.masked_fill(~allowed.to(x.device), float("-inf"))  # (B, nh, T, T)
    return F.softmax(scores, dim=-1)  # (B, nh, T, T)


@torch.no_grad()
def record_attention_calls(model, idx):
    """Run model(idx) once and record, for every block, what its attention module received and returned:
    a list of dicts {x (B, T, C), causal, out (B, T, C)}, one per layer. Forward hooks do the recording, so
    model.py needs no extra code for it; they are removed again before returning."""
    calls, handles = [], []

    def hook(module, args, kwargs, output):
        calls.append({"x": args[0].detach(), "causal": kwargs.get("causal", True), "rope": kwargs.get("rope"),
                      "out": output.detach()})

    for block in model.blocks:
        handles.append(block.attn.register_forward_hook(hook, with_kwargs=True))
    try:
        model(idx)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@torch.no_grad()
def attention_maps(model, idx):
    """The attention weights of every layer and head for the tokens idx (B, T): (n_layer, B, nh, T, T)."""
    calls = record_attention_calls(model, idx)
    return torch.stack([attention_weights(block.attn, c["x"], c["causal"], c["rope"]) for block, c in zip(model.blocks, calls)])


def encode_text(tokenizer, text, block_size):
    """--text -> (1, T) token ids; longer texts keep their last block_size characters (what the model sees)."""
    if not text:
        raise UserError("--text is empty: give a few characters, e.g. --text 'ROMEO: But soft'")
    try:
        ids = tokenizer.encode(text)
    except UnknownCharacters as e:
        raise UserError(f"--text has {e}") from None
    return torch.tensor([ids[-block_size:]], dtype=torch.long)  # (1, T)


def token_labels(tokenizer, ids):
    """Each token as text, for tick labels: a character (char), or the piece of text a BPE token stands for, with
    invisible characters shown; bytes that are only part of a UTF-8 character become U+FFFD."""
    labels = []
    for token_id in ids:
        text = tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")
        labels.append("".join(shown(ch) for ch in text))
    return labels


def draw_attention(maps, labels, path, dpi=100):
    """maps: (n_layer, nh, T, T) for one text; labels: its T tokens as text (token_labels). One heatmap per layer
    (rows) and head (columns). In each, row = the position that asks (query), column = the position it reads."""
    n_layer, n_head, T, _ = maps.shape
    fig = new_figure(3.2 * n_head + 1.0, 3.2 * n_layer + 0.4)
    axes = fig.subplots(n_layer, n_head, squeeze=False)
    labels = [shown(c) for c in labels]
    fontsize = max(3, min(9, 220 // T))  # as large as fits: 8 points for 27 characters, 3 for 64
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer][head]
            image = ax.imshow(maps[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(T), labels, fontsize=fontsize)
            ax.set_yticks(range(T), labels, fontsize=fontsize)
            ax.tick_params(length=0, pad=1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            if layer == n_layer - 1:
                ax.set_xlabel("key: the position read", fontsize=8)
            if head == 0:
                ax.set_ylabel("query: the position asking", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight (each row sums to 1)")
    return save_png(fig, path, dpi)


def tokenizer_of(state):
    """The checkpoint's tokenizer (gpt2's needs tiktoken's cached file: one line if it is missing)."""
    try:
        return tokenizer_from_meta(state["meta"])
    except TokenizerUnavailable as e:
        raise UserError(str(e)) from None


def load_checkpoint_arg(ckpt):
    """--ckpt is a run's folder (its ckpt.pt is read) or a checkpoint file."""
    path = checkpoint.resolve(ckpt) if Path(ckpt).is_dir() else Path(ckpt)
    try:
        state = checkpoint.load(path)
    except checkpoint.CheckpointError as e:
        raise UserError(str(e)) from None
    return state, checkpoint.load_model(state), path.parent


def attention_command(args):
    state, model, run_dir = load_checkpoint_arg(args.ckpt)
    out = files.output_file(args.out or run_dir / "attention.png", "png", "--out")
    tokenizer = tokenizer_of(state)
    idx = encode_text(tokenizer, args.text, model.config.block_size)  # (1, T)
    maps = attention_maps(model, idx)[:, 0]  # (n_layer, nh, T, T)
    labels = token_labels(tokenizer, idx[0].tolist())  # one per token (a BPE token can be a whole word)
    print(f"wrote {draw_attention(maps, labels, out)}")


# ----------------------------------------------------------------------------------------------------------------
# embeddings: what the model learned a character and a position to be


@torch.no_grad()
def embedding_pca(weight):
    """Project the rows of weight (N, C) onto their 2 directions of largest variance (PCA via the SVD).
    Returns (coords (N, 2), the fraction of the total variance those 2 directions hold)."""
    centered = weight.float() - weight.float().mean(dim=0)  # (N, C)
    _, singular_values, vh = torch.linalg.svd(centered, full_matrices=False)  # vh: (min(N, C), C)
    coords = centered @ vh[:2].T  # (N, 2), or (N, 1) when N or C is 1
    coords = F.pad(coords, (0, 2 - coords.shape[1]))  # one token, or n_embd 1: all on a line (N, 2)
    variance = singular_values**2
    total = float(variance.sum())
    return coords, float(variance[:2].sum()) / total if total > 0 else 1.0  # one token: no variance at all


@torch.no_grad()
def position_similarity(weight):
    """Cosine similarity between every pair of position embeddings: weight (T, C) -> (T, T)."""
    unit = F.normalize(weight.float(), dim=1)  # (T, C), each row of length 1
    return unit @ unit.T  # (T, T)


MAX_LABELS = 400  # a 50,257-token vocabulary cannot be read as text anyway: label an even sample of the tokens


def labelled_tokens(vocab_size):
    """The token ids whose label is drawn: all of a small vocabulary, every k-th of a large one."""
    return list(range(0, vocab_size, math.ceil(vocab_size / MAX_LABELS)))


def draw_embeddings(model, vocab, path, dpi=100):
    """vocab: every token as text (token_labels). All tokens are points; at most MAX_LABELS carry their text."""
    coords, explained = embedding_pca(model.token_embedding.weight)
    learned_positions = model.config.pos_emb == "learned"  # a rotary model has no table of position vectors
    similarity = position_similarity(model.position_embedding.weight) if learned_positions else None
    fig = new_figure(12, 5.4)
    chars_ax, pos_ax = fig.subplots(1, 2, width_ratios=[1.15, 1])
    chars_ax.scatter(coords[:, 0], coords[:, 1], s=0 if len(vocab) <= MAX_LABELS else 1, color="lightgrey")
    for token_id in labelled_tokens(len(vocab)):
        (x, y), ch = coords[token_id].tolist(), vocab[token_id]
        color = "C0" if ch.islower() else "C3" if ch.isupper() else "C2" if ch.isdigit() else "black"
        chars_ax.text(x, y, shown(ch), ha="center", va="center", fontsize=10, color=color)
    chars_ax.set_title(f"character embeddings, PCA to 2-D ({100 * explained:.0f}% of the variance)\n"
                       f"blue: lower case, red: upper case, green: digits, black: punctuation, space, newline", fontsize=10)
    chars_ax.set_xlabel("principal component 1")
    chars_ax.set_ylabel("principal component 2")
    chars_ax.grid(alpha=0.3)
    if similarity is None:
        pos_ax.axis("off")
        pos_ax.text(0.5, 0.5, "rotary positions (pos_emb = 'rope'):\nposition is a rotation of q and k,\n"
                    "not a learned vector, so there is\nno position embedding to compare", ha="center", va="center")
    else:
        image = pos_ax.imshow(similarity.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        pos_ax.set_title("position embeddings: cosine similarity", fontsize=10)
        pos_ax.set_xlabel("position")
        pos_ax.set_ylabel("position")
        fig.colorbar(image, ax=pos_ax, shrink=0.8)
    return save_png(fig, path, dpi)


def embeddings_command(args):
    state, model, run_dir = load_checkpoint_arg(args.ckpt)
    out = files.output_file(args.out or run_dir / "embeddings.png", "png", "--out")
    labels = token_labels(tokenizer_of(state), range(model.config.vocab_size))
    print(f"wrote {draw_embeddings(model, labels, out)}")


def explore_command(args):
    from babygpt import explore  # the page's web server (babygpt/explore.py), imported only here
    explore.serve(args.ckpt, args.port, open_browser=not args.no_open)


# ----------------------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = Parser(prog="plot.py", description="Draw what a run and a model contain, as PNG files.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("loss", help="train/val loss against iteration and tokens, learning rate, ln(vocab_size)",
                            description="Loss curves of one or more runs, overlaid (read from OUT_DIR/metrics.jsonl).")
    p.add_argument("out_dirs", nargs="+", metavar="OUT_DIR", help="the --out_dir of a training run")
    p.add_argument("--out", help="PNG to write (default: OUT_DIR/loss.png for one run, ./loss.png for several)")
    p.set_defaults(func=loss_command)

    p = commands.add_parser("attention", help="layer x head grid of attention heatmaps for a text",
                            description="The attention weights of every layer and head for --text, as heatmaps.")
    p.add_argument("--ckpt", required=True, help="a run's folder (its ckpt.pt is read) or a checkpoint file")
    p.add_argument("--text", required=True, help="the text to look at (its last block_size characters are used)")
    p.add_argument("--out", help="PNG to write (default: attention.png beside the checkpoint)")
    p.set_defaults(func=attention_command)

    p = commands.add_parser("embeddings", help="character embeddings in 2-D (PCA), position-embedding similarity",
                            description="Character embeddings projected to 2-D by PCA, and the cosine similarity "
                                        "of the position embeddings.")
    p.add_argument("--ckpt", required=True, help="a run's folder (its ckpt.pt is read) or a checkpoint file")
    p.add_argument("--out", help="PNG to write (default: embeddings.png beside the checkpoint)")
    p.set_defaults(func=embeddings_command)

    p = commands.add_parser("explore", help="a live page: next-token probabilities, attention, generation, ...",
                            description="A page on 127.0.0.1 for any text you type: next-token probabilities, "
                                        "loss, attention, step-by-step generation, embeddings, the loss curves.")
    p.add_argument("--ckpt", required=True, help="a run's folder (its ckpt.pt is read) or a checkpoint file")
    p.add_argument("--port", type=int, default=0, help="the port to listen on (default: a free one)")
    p.add_argument("--no_open", action="store_true", help="only print the address; open no browser")
    p.set_defaults(func=explore_command)

    args = parser.parse_args(argv)
    if getattr(args, "out", None):  # a folder named by the user must exist; checked before any work
        files.output_file(args.out, "png", "--out")
    args.func(args)


if __name__ == "__main__":
    run(main)
