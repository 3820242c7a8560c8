"""
Lesson: patches as tokens -- a Vision Transformer (ViT) made of model.py's Blocks reads digits.

    python -m lessons.vit                 # train on generated digit images; prints test accuracy
    python -m lessons.vit --show 8        # also save docs/figures/vit_digits.png with 8 training images

What differs from the GPT (model.py):
  * The tokens are not characters: a 28x28 image is cut into 4x4 = 16 patches of 7x7 pixels, and each patch,
    flattened to 49 numbers, is projected to n_embd by one Linear layer (that replaces the token embedding).
  * A learned class token is put in front of the 16 patch tokens; position embeddings say where each patch was.
  * The Blocks run with the mask off, `block(x, causal=False)`: every patch may look at every other patch.
  * The head reads only the class token's final vector and scores the 10 classes (instead of a next token).
The data needs no download: digits drawn with the fonts bundled with matplotlib, each glyph rendered once and
then moved, scaled, rotated and covered in noise with torch, so a fresh batch costs milliseconds.
Training images come from one random seed, test images from another.
"""

import math
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from babygpt import threads
from babygpt.cli import MAX_SEED, MAX_STEPS, MAX_THREADS, Parser, UserError, check_range
from babygpt.optimizer import make_optimizer
from babygpt.runner import run
from model import GPT, Block, GPTConfig

IMAGE_SIZE, PATCH_SIZE, CLASSES = 28, 7, "0123456789"
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
         "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "cmr10.ttf",
         "cmss10.ttf"]
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "vit_digits.png"


# ----------------------------------------------------------------------------------------------------------------
# patches: an image becomes a sequence of tokens, and back


def patchify(images, p):
    """(B, H, W) -> (B, H/p * W/p, p*p): patches in reading order (left to right, top to bottom), flattened."""
    B, H, W = images.shape
    x = images.view(B, H // p, p, W // p, p)  # (B, rows, p, cols, p)
    x = x.permute(0, 1, 3, 2, 4)  # (B, rows, cols, p, p): each patch's pixels together
    return x.reshape(B, (H // p) * (W // p), p * p)  # (B, N, p*p)


def unpatchify(patches, p, H, W):
    """The exact inverse of patchify: (B, N, p*p) -> (B, H, W)."""
    B = patches.size(0)
    x = patches.view(B, H // p, W // p, p, p)  # (B, rows, cols, p, p)
    x = x.permute(0, 1, 3, 2, 4)  # (B, rows, p, cols, p)
    return x.reshape(B, H, W)  # (B, H, W)


# ----------------------------------------------------------------------------------------------------------------
# data: digits from matplotlib's bundled fonts, placed at random


def render_glyphs(size=IMAGE_SIZE, height=20):
    """Every digit in every font, once: (n_fonts, 10, size, size) floats in [0, 1], centred, `height` px tall."""
    from matplotlib import ft2font

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    bank = torch.zeros(len(FONTS), len(CLASSES), size, size)
    for f, name in enumerate(FONTS):
        font = ft2font.FT2Font(str(font_dir / name))
        for c, char in enumerate(CLASSES):
            font.set_size(48, 72)  # render big, then shrink: smoother edges
            font.set_text(char)
            font.draw_glyphs_to_bitmap()
            glyph = torch.from_numpy(np.asarray(font.get_image(), dtype=np.float32) / 255.0)  # (h, w)
            h, w = glyph.shape
            new_h, new_w = height, max(1, round(w * height / h))
            small = F.interpolate(glyph[None, None], size=(new_h, new_w), mode="area")[0, 0]  # (height, w')
            top, left = (size - new_h) // 2, (size - new_w) // 2
            bank[f, c, top:top + new_h, left:left + new_w] = small
    return bank


def make_images(n, bank, generator):
    """n random images and labels: a glyph from a random font, scaled 0.7-1.2x, rotated up to 15 degrees,
    shifted up to 4 pixels, plus Gaussian noise. Returns images (n, 28, 28) and labels (n,)."""
    fonts = torch.randint(0, bank.size(0), (n,), generator=generator)
    labels = torch.randint(0, bank.size(1), (n,), generator=generator)
    glyphs = bank[fonts, labels][:, None]  # (n, 1, H, W)
    scale = 0.7 + 0.5 * torch.rand(n, generator=generator)  # (n,)
    angle = (torch.rand(n, generator=generator) - 0.5) * math.radians(30)  # (n,)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (8 / IMAGE_SIZE) * 2  # (n, 2) in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(theta, glyphs.shape, align_corners=False)  # (n, H, W, 2): where each output pixel reads
    images = F.grid_sample(glyphs, grid, align_corners=False)[:, 0]  # (n, H, W)
    noise = 0.1 + 0.2 * torch.rand(n, 1, 1, generator=generator)  # (n, 1, 1) a noise level per image
    images = images + noise * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1), labels


# ----------------------------------------------------------------------------------------------------------------
# the model


class ViT(nn.Module):
    """images (B, 28, 28) -> patches (B, 16, 49) -> tokens (B, 17, C) -> Blocks, no mask -> class logits (B, 10)."""

    def __init__(self, config: GPTConfig, patch_size=PATCH_SIZE, image_size=IMAGE_SIZE, n_classes=len(CLASSES)):
        super().__init__()
        self.config = config
        self.patch_size = patch_size
        n_patches = (image_size // patch_size) ** 2
        self.patch_embedding = nn.Linear(patch_size * patch_size, config.n_embd)  # a patch's pixels -> a token
        self.class_token = nn.Parameter(torch.zeros(1, 1, config.n_embd))  # learned; the head reads it at the end
        self.position_embedding = nn.Embedding(n_patches + 1, config.n_embd)  # where each patch was (0: class)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, n_classes)
        self.apply(lambda module: GPT._init_weights(self, module))  # the GPT's initialisation

    def forward(self, images, labels=None):
        patches = patchify(images, self.patch_size)  # (B, N, p*p)
        x = self.patch_embedding(patches)  # (B, N, C)
        cls = self.class_token.expand(x.size(0), 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1)  # (B, N+1, C)
        x = x + self.position_embedding(torch.arange(x.size(1)))  # (B, N+1, C)
        for block in self.blocks:
            x = block(x, causal=False)  # (B, N+1, C) every patch may look at every other: no mask
        logits = self.head(self.ln_f(x[:, 0]))  # (B, n_classes): only the class token is read out
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return logits, loss


@torch.no_grad()
def accuracy(model, images, labels, batch_size=500):
    model.eval()
    correct = sum((model(images[i:i + batch_size])[0].argmax(-1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    model.train()
    return correct / len(images)


def train(iters=1500, batch_size=128, learning_rate=3e-3, n_layer=3, n_head=4, n_embd=64, n_test=2000,
          eval_every=250, seed=0, log=print):
    """Train on fresh images from seed `seed`; test on n_test images from seed + 1000.
    Returns (model, test accuracy, (wall seconds, CPU seconds) of training)."""
    torch.manual_seed(seed)
    bank = render_glyphs()
    model = ViT(GPTConfig(block_size=1, vocab_size=1, n_layer=n_layer, n_head=n_head, n_embd=n_embd))
    optimizer = make_optimizer(model, learning_rate, weight_decay=0.05, betas=(0.9, 0.99))
    train_gen = torch.Generator().manual_seed(seed)
    test_images, test_labels = make_images(n_test, bank, torch.Generator().manual_seed(seed + 1000))
    start, cpu_start = time.perf_counter(), time.process_time()
    for it in range(1, iters + 1):
        warmup = max(1, min(100, iters // 10))
        lr = learning_rate * min(1.0, it / warmup) * 0.5 * (1 + math.cos(math.pi * it / iters))  # warmup + cosine
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = make_images(batch_size, bank, train_gen)
        _, loss = model(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if it % eval_every == 0 or it == iters:
            acc = accuracy(model, test_images[:500], test_labels[:500])
            log(f"step {it}: loss {loss.item():.4f}, test accuracy (500 images) {acc:.1%}, "
                f"{time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU")
    seconds = (time.perf_counter() - start, time.process_time() - cpu_start)  # wall, CPU
    return model, accuracy(model, test_images, test_labels), seconds


def save_examples(path, n):
    """A strip of n training images, to see what the model reads."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = make_images(n, render_glyphs(), torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, n, figsize=(n, 1.3))
    for ax, image, label in zip(np.atleast_1d(axes), images, labels):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(CLASSES[label], fontsize=9)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = Parser(prog="python -m lessons.vit", description=__doc__.split("\n")[1])
    parser.add_argument("--iters", type=int, default=1500, help="training steps")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--show", type=int, default=0, help="save this many training images to " + str(FIGURE))
    args = parser.parse_args(argv)
    if args.iters < 1 or args.batch_size < 1:
        raise UserError("--iters and --batch_size must be at least 1")
    check_range("iters", args.iters, 1, MAX_STEPS)
    check_range("batch_size", args.batch_size, 1, 65536)
    check_range("learning_rate", args.learning_rate, 1e-12, 10.0)
    check_range("seed", args.seed, 0, MAX_SEED)
    check_range("threads", args.threads, 1, MAX_THREADS)
    check_range("show", args.show, 0, 1000)
    threads.use_threads(args.threads)
    if args.show:
        save_examples(FIGURE, args.show)
        print(f"saved {args.show} training images to {FIGURE}")
    _, acc, seconds = train(args.iters, args.batch_size, args.learning_rate, seed=args.seed)
    print(f"ViT on generated digits: test accuracy {acc:.1%} on 2000 images (chance 10%) after {args.iters} steps "
          f"({seconds[0]:.0f} s wall, {seconds[1]:.0f} s CPU, {torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    run(main)
