"""The encoder-decoder lesson: it learns to reverse strings, its decoder cannot see the future of the answer,
and its encoder sees the whole source."""

import torch

from lessons.encoder_decoder import (BOS, VOCAB_SIZE, EncoderDecoder, decoder_inputs, make_examples,
                                     train)
from model import GPTConfig


def small_model(seed=0):
    torch.manual_seed(seed)
    return EncoderDecoder(GPTConfig(block_size=8, vocab_size=VOCAB_SIZE, n_layer=2, n_head=2, n_embd=32)).eval()


def test_a_short_run_learns_to_reverse_held_out_strings():
    torch.set_num_threads(1)
    _, acc, _ = train("reverse", length=6, iters=200, batch_size=32, n_layer=1, n_embd=48, eval_every=10**9,
                      n_test=300, log=lambda *_: None)
    assert acc >= 0.6  # chance of guessing a whole 6-letter answer is 26**-6


def test_decoder_cannot_see_future_answer_tokens():
    model = small_model()
    src, tgt = make_examples(4, 8, "reverse", torch.Generator().manual_seed(1))
    tgt_in = decoder_inputs(tgt)
    assert (tgt_in[:, 0] == BOS).all()
    t = 4
    changed = tgt_in.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 26  # rewrite the answer after position t
    with torch.no_grad():
        before, _ = model(src, tgt_in)
        after, _ = model(src, changed)
    assert torch.equal(before[:, : t + 1], after[:, : t + 1])  # outputs 0..t never saw those tokens
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])


def test_encoder_sees_the_whole_source_and_decoder_reads_it():
    """Unlike the decoder, the encoder has no mask: changing the LAST source letter changes the memory at the
    FIRST source position, and (through cross-attention) the decoder's very first prediction."""
    model = small_model()
    src, tgt = make_examples(2, 8, "reverse", torch.Generator().manual_seed(2))
    changed = src.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 26
    with torch.no_grad():
        assert not torch.allclose(model.encode(src)[:, 0], model.encode(changed)[:, 0])
        first_before = model(src, decoder_inputs(tgt))[0][:, 0]
        first_after = model(changed, decoder_inputs(tgt))[0][:, 0]
    assert not torch.allclose(first_before, first_after)
