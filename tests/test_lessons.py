"""lessons/: the lecture's node-by-node message passing is the same computation as model.py's batched attention."""

import pytest
import torch

from lessons.message_passing import (causal_graph, fully_connected_graph, main,
                                     message_passing_attention)
from model import CausalSelfAttention, GPTConfig


def attention_and_nodes(attn_impl="sdpa", bias=True, T=7, seed=0):
    torch.manual_seed(seed)
    attn = CausalSelfAttention(GPTConfig(n_embd=24, n_head=3, block_size=T, attn_impl=attn_impl, bias=bias)).eval()
    for p in attn.parameters():  # larger weights than the init's, so the softmax is far from uniform
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(1, T, 24)  # (1, T, C)
    return attn, x


@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("bias", [True, False])
@torch.no_grad()
def test_causal_graph_equals_the_models_causal_self_attention(attn_impl, bias):
    attn, x = attention_and_nodes(attn_impl, bias)
    looped = torch.stack(message_passing_attention(attn, list(x[0]), causal_graph(7)))  # (T, C)
    torch.testing.assert_close(looped, attn(x)[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_fully_connected_graph_equals_attention_without_the_mask():
    attn, x = attention_and_nodes()
    looped = torch.stack(message_passing_attention(attn, list(x[0]), fully_connected_graph(7)))
    torch.testing.assert_close(looped, attn(x, causal=False)[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(looped, attn(x)[0], atol=1e-3)  # and the mask does change the result


@torch.no_grad()
def test_a_node_hears_only_the_nodes_pointing_to_it():
    attn, x = attention_and_nodes()
    nodes = list(x[0])
    graph = {0: [0], 1: [0, 1], 2: [0, 2]}  # node 2 is not pointed to by node 1
    before = message_passing_attention(attn, nodes[:3], graph)
    nodes[1] = nodes[1] + 5.0  # change node 1's private vector
    after = message_passing_attention(attn, nodes[:3], graph)
    torch.testing.assert_close(before[2], after[2])  # node 2 did not hear it
    assert not torch.allclose(before[1], after[1])  # node 1 itself did


def test_main_shows_agreement(capsys):
    main([])
    lines = [line for line in capsys.readouterr().out.splitlines() if "largest difference" in line]
    assert len(lines) == 2 and all(float(line.split()[-1]) < 1e-5 for line in lines)
