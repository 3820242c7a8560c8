"""
Attention as message passing on a directed graph, one node at a time -- the way the lecture first tells it.

    python -m lessons.message_passing        # runs it next to model.py's batched attention; they agree

Forget sequences for a moment. There is a directed graph; every node holds a private vector. In one round of
communication each node, on its own:
    1. emits a query ("what I am looking for"), a key ("what I have") and a value ("what I will tell you"),
       each a linear map of its private vector -- the same three maps for every node;
    2. gathers the keys of the nodes that point to it (its incoming edges),
    3. scores each of them by a dot product with its own query (scaled by 1/sqrt(head size)),
    4. turns the scores into weights that sum to 1 with a softmax,
    5. and receives the weighted sum of those nodes' values: its message.
Several heads do this in parallel with their own slices of the maps; their messages are put side by side and
mixed by one more linear map (c_proj). A Block then adds the message to the node's vector (the residual).

A text of T characters is a graph of T nodes. In a decoder (GPT) node t is pointed to by nodes 0..t -- no
edges from the future, which would give away the next character: that is the causal mask. In an encoder every
node points to every node. model.CausalSelfAttention does exactly this for all nodes, heads and sequences at
once with a few matrix multiplications; the tests (tests/test_lessons.py) check that the two agree.
"""

import math
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python lessons/message_passing.py`: make the repo's modules importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babygpt.cli import Parser  # noqa: E402
from babygpt.runner import run
from model import CausalSelfAttention, GPTConfig  # noqa: E402


def causal_graph(num_nodes):
    """{node: the nodes that point to it}. Node t hears from 0..t: itself and everything before it."""
    return {t: list(range(t + 1)) for t in range(num_nodes)}


def fully_connected_graph(num_nodes):
    """Every node hears from every node, the future included: an encoder's graph."""
    return {t: list(range(num_nodes)) for t in range(num_nodes)}


def linear(weight, bias, x):
    """One linear map of a single vector: weight (out, in) @ x (in,) + bias -> (out,)."""
    return weight @ x if bias is None else weight @ x + bias


def emit(attn, vector):
    """A node's query, key and value: linear maps of its private vector (C,), using the weights of an
    attention module (c_attn holds the three maps stacked). Returns three (C,) vectors (all heads)."""
    C = vector.numel()
    qkv = linear(attn.c_attn.weight, attn.c_attn.bias, vector)  # (3C,)
    return qkv[:C], qkv[C : 2 * C], qkv[2 * C :]  # query, key, value


@torch.no_grad()  # a demonstration: no gradients needed
def message_passing_attention(attn, vectors, graph):
    """One round of communication on `graph`, node by node, head by head, in plain Python loops.

    attn: a model.CausalSelfAttention (only its weights are used); vectors: a list of T tensors (C,), one per
    node; graph: {node: list of nodes pointing to it}. Returns the T messages (C,), one per node."""
    n_head = attn.n_head
    head_size = vectors[0].numel() // n_head
    emitted = [emit(attn, v) for v in vectors]  # every node emits its query, key and value
    messages = []
    for node, sources in graph.items():
        query = emitted[node][0]
        heads = []
        for h in range(n_head):
            part = slice(h * head_size, (h + 1) * head_size)  # this head's slice of the vectors
            scores = [float(query[part] @ emitted[s][1][part]) / math.sqrt(head_size) for s in sources]
            top = max(scores)  # subtracted before exp() for numerical safety; it cancels in the division
            exps = [math.exp(score - top) for score in scores]
            weights = [e / sum(exps) for e in exps]  # softmax: positive, sums to 1
            heads.append(sum(w * emitted[s][2][part] for w, s in zip(weights, sources)))  # (hs,)
        gathered = torch.cat(heads)  # (C,): the heads' results side by side
        messages.append(linear(attn.c_proj.weight, attn.c_proj.bias, gathered))  # (C,)
    return messages


def main(argv=None):
    Parser(prog="python -m lessons.message_passing", description=__doc__.split("\n")[1]).parse_args(argv)
    compare()


@torch.no_grad()
def compare():
    torch.manual_seed(0)
    config = GPTConfig(n_embd=16, n_head=2, block_size=6)
    attn = CausalSelfAttention(config).eval()
    x = torch.randn(1, 6, config.n_embd)  # one sequence of 6 nodes, each holding a 16-wide private vector
    nodes = list(x[0])

    print("the causal graph (node: the nodes pointing to it):")
    for node, sources in causal_graph(6).items():
        print(f"  {node}: {sources}")
    for name, graph, causal in (("causal graph (decoder)", causal_graph(6), True),
                                ("fully connected graph (encoder)", fully_connected_graph(6), False)):
        looped = torch.stack(message_passing_attention(attn, nodes, graph))  # (T, C)
        batched = attn(x, causal=causal)[0]  # (T, C)
        difference = (looped - batched).abs().max().item()
        print(f"{name}: node-by-node loop vs model.CausalSelfAttention(causal={causal}): "
              f"largest difference {difference:.1e}")


if __name__ == "__main__":
    run(main)
