"""
Learn by doing: write babygpt's pieces yourself, and let the checker say what is wrong in plain words.

    python -m exercises                      # every exercise and its state: not started, wrong or done
    python -m exercises check attention_head # check one: what holds, and the first thing that does not
    python -m exercises check NAME --solutions   # the same checks, run on exercises/solutions/NAME.py
    python -m exercises train                # your pieces as a GPT, trained next to babygpt's own model

Each exercise is one file, exercises/NAME.py: a function's signature, a docstring with the shapes in and out,
a hint, and `raise NotImplementedError` where your code goes. They follow docs/walkthrough.md step by step.
The checker (exercises/checker.py) runs your function on small random inputs and compares it with babygpt's
own code (model.py, train.py) and with torch; exercises/solutions/ holds one answer for each.

Your code runs in a child process, never in the checker's own (exercises/sandbox.py): each check has a time
limit after which the child is killed, and whatever your file does -- sys.exit, an endless loop, patching torch
or train, printing -- cannot change babygpt's reference values, the other exercises' verdicts or the command's
exit status. What your code prints is shown apart, above the verdict. A hint names a known mistake only when your
numbers are exactly what that mistake computes; otherwise the verdict says what was expected, what came back and
where.
"""

# (name, the walkthrough step it belongs to, what you write) in the order of the walkthrough
EXERCISES = [
    ("vocabulary", 1, "a character vocabulary: encode and decode"),
    ("get_batch", 2, "random windows of the text, and targets shifted by one"),
    ("bigram", 3, "the bigram model and its first loss (about ln V)"),
    ("attention_head", 4, "one head of attention, written out"),
    ("causal_mask", 5, "the causal mask: no peeking at the future"),
    ("multi_head", 6, "multi-head attention: split, attend, concatenate, project"),
    ("block", 7, "a pre-norm residual block"),
    ("lm_loss", 8, "the language-model loss over all B x T positions"),
    ("lr_schedule", 8, "the learning rate: linear warmup, then cosine decay"),
    ("adamw", 8, "one AdamW update"),
    ("generate", 9, "sampling (temperature, top-k) and generation cropped to block_size"),
    ("kv_cache", 9, "one KV-cache step, equal to recomputing"),
]
NAMES = [name for name, _, _ in EXERCISES]


def unknown_name_message(name):
    """The one line for a misspelt exercise name."""
    return f"no exercise called {name!r}; the exercises are: {', '.join(NAMES)}"
