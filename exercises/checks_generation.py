"""The checks of walkthrough step 9: sampling and generation (see exercises/checks.py)."""


import torch

from exercises.checker import Verdict, Wrong, describe


def spy_model(block_size=8, vocab_size=20, seed=0):
    """A small model.GPT with weights large enough that its next-token distributions are peaked (so that a
    mistake changes the tokens drawn), and a stand-in that records what it is given and stops the check (a
    Verdict) when it is given more than block_size tokens."""
    from model import GPT, GPTConfig
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.normal_(0.0, 0.7)

    class Spy:
        def __init__(self):
            self.inputs = []

        def __call__(self, idx, targets=None):
            self.inputs.append(idx.clone())
            if idx.size(1) > block_size:
                raise Verdict(f"at step {len(self.inputs)} the model was given {idx.size(1)} tokens, but it has "
                              f"only block_size = {block_size} positions: crop the context to the last "
                              f"block_size tokens, idx[:, -block_size:]")
            with torch.no_grad():
                return gpt(idx)
    return gpt, Spy()


def reference_probs(logits, temperature=1.0, top_k=None):
    logits = logits / temperature
    if top_k is not None:
        values, indices = torch.topk(logits, top_k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)
    return logits.softmax(-1)


def check_generate(c):
    B, V = 2, 20
    logits = torch.randn(B, V) * 2
    temperatures = (0.5, 2.0)
    results = c.script(("next_token_probs", (logits,)),
                       *[("next_token_probs", (logits,), {"temperature": t}) for t in temperatures],
                       ("next_token_probs", (logits,), {"top_k": 5}))
    probs = c.tensor(results[0], "the probabilities", (B, V), "(B, V)")
    sums = probs.detach().sum(-1)
    if not torch.allclose(sums, torch.ones(B), atol=1e-4):
        raise Wrong(f"row 0 of the probabilities sums to {sums[0].item():.3f}, not 1: softmax over the "
                    f"vocabulary, the last dimension")
    c.match(probs, reference_probs(logits), "the probabilities", [
        (logits, "these are the logits themselves: turn them into probabilities with a softmax")])
    c.ok("next_token_probs: softmax of the logits, each row sums to 1")
    for i, temperature in enumerate(temperatures, 1):
        got = results[i]
        c.match(got, reference_probs(logits, temperature), f"with temperature {temperature}, the probabilities", [
            (reference_probs(logits), f"temperature {temperature} changed nothing: divide the logits by it"),
            (reference_probs(logits, 1 / temperature),
             f"temperature {temperature} made the distribution {'flatter' if temperature < 1 else 'sharper'}: "
             f"divide the logits by the temperature (below 1: sharper), do not multiply"),
        ])
    c.ok("temperature divides the logits: 0.5 sharper, 2.0 flatter")
    got = c.tensor(results[3], "with top_k=5, the probabilities", (B, V))
    kept = int((got.detach()[0] > 0).sum())
    if kept != 5:
        raise Wrong(f"with top_k=5 row 0 keeps {kept} tokens with probability above 0: set all but the 5 largest "
                    f"logits to -inf before the softmax")
    if (got.detach().sum(-1) < 0.999).any():
        raise Wrong(f"with top_k=5 row 0 sums to {got.detach()[0].sum().item():.2f}, not 1: cut to the top k "
                    f"on the logits (-inf) before the softmax, not on the probabilities after it")
    c.match(got, reference_probs(logits, top_k=5), "with top_k=5, the probabilities")
    c.ok("top_k keeps exactly the k most likely tokens, and they sum to 1")

    gpt, spy = spy_model()
    block_size, n_new = gpt.config.block_size, 14
    prompt = torch.randint(V, (B, 3))
    every_settings = ({}, {"temperature": 0.7, "top_k": 5})
    spies = [spy_model()[1] for _ in every_settings]  # fresh ones, for babygpt's tokens with these settings

    def seeded(seed):
        return {"generator": torch.Generator().manual_seed(seed)}
    # the second run, with a generator seeded the same, sees another global random state (the first run's
    # draws moved it on): only the generator may fix the tokens
    runs = c.script(("generate", (spy, prompt, n_new, block_size), seeded(0), lambda: spy.inputs),
                    ("generate", (spy, prompt, n_new, block_size), seeded(0)),
                    *[("generate", (each, prompt, n_new, block_size), seeded(1) | settings)
                      for each, settings in zip(spies, every_settings)])
    out, inputs = runs[0], runs.watched[0]
    c.tensor(out, "the output", (B, 3 + n_new), "(B, T + max_new_tokens)", dtype=torch.long)
    if not torch.equal(out[:, :3], prompt):
        raise Wrong("the output should start with the prompt, unchanged, then the new tokens")
    c.ok(f"the output is the prompt followed by {n_new} new tokens")
    if len(inputs) != n_new:
        raise Wrong(f"the model was called {len(inputs)} times for {n_new} new tokens: once per new token")
    for step, given in enumerate(inputs):
        seen = out[:, :3 + step]
        if given.shape == seen[:, -block_size:].shape and torch.equal(given, seen[:, -block_size:]):
            continue
        if given.shape == seen[:, :block_size].shape and torch.equal(given, seen[:, :block_size]):
            raise Wrong(f"at step {step + 1} the model was given the first {block_size} tokens of the text: crop "
                        f"the other end, the last block_size tokens, idx[:, -block_size:]")
        raise Wrong(f"at step {step + 1} the model should be given the last {min(block_size, seen.size(1))} "
                    f"tokens of the text so far, yours gave it {describe(given)}")
    c.ok(f"the model always sees the last block_size = {block_size} tokens at most")
    again = c.tensor(runs[1], "the output", (B, 3 + n_new), dtype=torch.long)
    if not torch.equal(again, out):
        raise Wrong("two runs with generators seeded the same wrote different tokens: draw with "
                    "torch.multinomial(probs, num_samples=1, generator=generator)")
    for i, settings in enumerate(every_settings, 2):
        got = c.tensor(runs[i], "the output", (B, 3 + n_new), dtype=torch.long)
        expected = gpt.generate(prompt, n_new, generator=torch.Generator().manual_seed(1), **settings)
        if not torch.equal(got, expected):
            first = first_logits_generate(gpt, prompt, n_new, block_size, settings)
            if first is not None and torch.equal(got, first):
                raise Wrong("your tokens come from the first position's logits: the next token is predicted at "
                            "the last position, logits[:, -1, :]")
            t = int((got != expected).any(0).nonzero()[0])
            said = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the defaults"
            raise Wrong(f"with {said} and the same seed, token {t} is {got[0, t].item()}, babygpt's "
                        f"{expected[0, t].item()}: take the last position's logits, next_token_probs, then "
                        f"torch.multinomial(probs, num_samples=1, generator=generator)")
    c.ok("the same tokens as babygpt's GPT.generate for the same seed, temperature and top_k")


def first_logits_generate(gpt, idx, n_new, block_size, settings):
    """What generation gives when it samples from the first position's logits (a known mistake)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(n_new):
            logits, _ = gpt(idx[:, -block_size:])
            probs = reference_probs(logits[:, 0, :], **settings)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
    return idx
