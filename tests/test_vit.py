"""The ViT lesson: cutting an image into patches loses nothing, each patch is the pixels it claims, the
classifier sees the whole image, and a short run clearly beats chance on held-out digits."""

import pytest
import torch

from lessons.vit import IMAGE_SIZE, ViT, make_images, patchify, render_glyphs, train, unpatchify
from model import GPTConfig


def test_patchify_then_unpatchify_is_exact():
    images = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    patches = patchify(images, 7)
    assert patches.shape == (3, 16, 49)
    assert torch.equal(unpatchify(patches, 7, 28, 28), images)


def test_each_patch_holds_its_block_of_pixels_in_reading_order():
    images = torch.arange(2 * 12 * 8, dtype=torch.float32).view(2, 12, 8)  # not square, every pixel distinct
    patches = patchify(images, 4)  # 3 rows x 2 columns of 4x4 patches
    for n in range(6):
        row, col = divmod(n, 2)
        assert torch.equal(patches[:, n], images[:, 4 * row: 4 * row + 4, 4 * col: 4 * col + 4].reshape(2, 16))


def test_train_and_test_images_differ_but_come_from_the_same_glyphs():
    bank = render_glyphs()
    assert bank.shape == (10, 10, IMAGE_SIZE, IMAGE_SIZE) and bank.amax(dim=(2, 3)).min() > 0.5  # every glyph drawn
    a, labels_a = make_images(64, bank, torch.Generator().manual_seed(0))
    b, _ = make_images(64, bank, torch.Generator().manual_seed(1000))
    again, labels_again = make_images(64, bank, torch.Generator().manual_seed(0))
    assert torch.equal(a, again) and torch.equal(labels_a, labels_again)  # a seed fixes the data set
    assert not torch.allclose(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_every_patch_can_change_the_prediction():
    """No mask: the class token reads every patch, the last one included."""
    torch.manual_seed(0)
    model = ViT(GPTConfig(block_size=1, vocab_size=1, n_layer=1, n_head=2, n_embd=32)).eval()
    images = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))
    changed = images.clone()
    changed[:, 21:, 21:] = 1 - changed[:, 21:, 21:]  # the bottom-right patch only
    with torch.no_grad():
        assert not torch.allclose(model(images)[0], model(changed)[0])


@pytest.mark.slow
def test_a_short_run_clearly_beats_chance():
    torch.set_num_threads(1)
    _, acc, _ = train(iters=400, batch_size=64, learning_rate=3e-3, n_layer=1, n_embd=64, n_test=500,
                      eval_every=10**9, log=lambda *_: None)  # about 4 s of CPU; reaches 42-50% over seeds 0-2
    assert acc >= 0.3  # chance is 10%
