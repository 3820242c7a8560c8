"""The exercises' hints are right: a hint that names a mistake fires only when the learner's numbers are what that
mistake computes (at several steps or inputs); a near miss gets the neutral "yours ..., babygpt's ..." line, never
another mistake's hint. Each case is a solution with the mistake planted in it, as a learner would write it."""

import pytest
import torch

from exercises.checker import check
from test_exercises import plant  # a solution with one mistake planted

torch.set_num_threads(1)

LR_DECAY = "min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)"
LR_WARMUP = "learning_rate * (it + 1) / (warmup_iters + 1)"
CAUSAL_SOFTMAX = "weights = F.softmax(scores, dim=-1)  # (B, T, T)"
MH_SOFTMAX = 'weights = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)'

# every hint a check can give, by a word that only it uses: a case's verdict holds its own and no other
HINTS = {
    "warmup from 0": "your warmup starts at 0",
    "progress from 0": "Measure its progress from there",
    "rising cosine": "your cosine rises",
    "no 0.5": "halve it",
    "straight line": "decays in a straight line",
    "decays to 0": "decays to 0",
    "no clamp": "climbs again",
    "mask after softmax": "applied after the softmax",
    "softmax over queries": "the queries",
    "inverted mask": "your mask is inverted",
    "keep the diagonal": "keep the diagonal",
    "upside down": "upside down",
    "zero not -inf": "not -inf",
    "no mask yet": "no mask yet",
    "sees the future": "lets it see the future",
}

# (exercise, [(old, new)], the hint it must get, or None for the neutral line; words the verdict must hold)
CASES = [
    ("lr_schedule", [(LR_DECAY, "min_lr + 0.5 * (1.0 - math.cos(math.pi * progress)) * (learning_rate - min_lr)")],
     "rising cosine", ["at step 10 yours is 0.0001, babygpt's 0.001"]),
    ("lr_schedule", [(LR_DECAY, "learning_rate - 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - "
                                "min_lr)")], "rising cosine", []),
    ("lr_schedule", [(LR_DECAY, "min_lr + (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)")],
     "no 0.5", ["at step 10 yours is 0.0019"]),
    ("lr_schedule", [(LR_WARMUP, "0.0"), (LR_DECAY, "0.0"), ("return min_lr", "return 0.0")], None,
     ["at step 0 yours is 0, babygpt's 9.091e-05 (during warmup"]),
    ("lr_schedule", [(LR_WARMUP, "learning_rate * it / warmup_iters")], "warmup from 0", ["at step 0"]),
    ("lr_schedule", [(LR_WARMUP, "learning_rate * it / warmup_iters + 1e-5")], None, []),  # near: not from 0
    ("lr_schedule", [(LR_DECAY, "min_lr")], None, ["at step 10 yours is 0.0001"]),  # the rising cosine's start only
    ("lr_schedule", [("(it - warmup_iters) / max(1, decay_iters - warmup_iters)", "it / decay_iters")],
     "progress from 0", []),
    ("lr_schedule", [("    if it >= decay_iters:\n        return min_lr\n", "")], "no clamp", ["at step 150"]),
    ("lr_schedule", [("    if it >= decay_iters:\n        return min_lr\n",
                      "    if it >= decay_iters:\n        return min_lr * 1.5\n")], None, ["at step 110"]),
    ("causal_mask", [(CAUSAL_SOFTMAX, "weights = torch.zeros_like(scores)")], None,
     ["row 0 of the attention weights sums to 0.00, not 1 (babygpt's weights are a softmax over the keys"]),
    ("causal_mask", [("masked_fill(~past,", "masked_fill(past,")], "inverted mask", ["row 6 of the weights is NaN"]),
    ("causal_mask", [("dtype=torch.bool))", "dtype=torch.bool), diagonal=-1)")], "keep the diagonal", []),
    ("causal_mask", [("scores = scores.masked_fill(~past, float(\"-inf\"))", ""),
                     (CAUSAL_SOFTMAX, "weights = F.softmax(scores, dim=-1) * past")], "mask after softmax", []),
    ("causal_mask", [("scores = scores.masked_fill(~past, float(\"-inf\"))", ""),
                     (CAUSAL_SOFTMAX, "weights = F.softmax(scores, dim=-1) * past * 0.5")], None, []),  # near miss
    ("causal_mask", [(CAUSAL_SOFTMAX, "weights = F.softmax(scores, dim=1)")], "softmax over queries", []),
    ("causal_mask", [("torch.tril(", "torch.triu(")], "upside down", []),
    ("attention_head", [("weights = F.softmax(scores, dim=-1)", "weights = 0 * scores")], None,
     ["sums to 0.00, not 1"]),
    ("attention_head", [("weights = F.softmax(scores, dim=-1)", "weights = F.softmax(scores.masked_fill(torch.ones("
                         "scores.shape[-1], scores.shape[-1], dtype=torch.bool).triu(1), float('-inf')), dim=-1)"),
                        ("import math", "import math\nimport torch")], "no mask yet", []),
    ("multi_head", [(MH_SOFTMAX, "weights = F.softmax(scores, dim=-1).masked_fill(future, 0.0)")],
     "mask after softmax", []),
    ("multi_head", [(MH_SOFTMAX, 'weights = F.softmax(scores.masked_fill(future, float("-inf")), dim=-2)')],
     "softmax over queries", []),
    ("multi_head", [(MH_SOFTMAX, "weights = F.softmax(scores, dim=-2)")], None,  # near: no mask and wrong axis
     ["position 0's output changes when position 4's input changes (babygpt's position 0 depends only on "
      "positions 0..0)"]),
    ("multi_head", [(MH_SOFTMAX, "weights = F.softmax(scores, dim=-1).masked_fill(future, 0.0) * 0.9")], None, []),
]


@pytest.mark.parametrize("name, replacements, hint, words", CASES,
                         ids=[f"{c[0]}-{c[2] or 'neutral'}-{i}" for i, c in enumerate(CASES)])
def test_each_mistake_gets_its_own_hint_or_the_neutral_line(tmp_path, name, replacements, hint, words):
    plant(tmp_path, name, replacements)
    problem = check(name, tmp_path).problem
    assert problem, "the planted mistake passed"
    given = [h for h, word in HINTS.items() if word in problem]
    assert given == ([hint] if hint else []), (given, problem)
    for word in words:
        assert word in problem, (word, problem)
