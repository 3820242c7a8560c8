"""
The checks, one per exercise, in the walkthrough's order: check_NAME(c) calls the learner's code through
c.call(...) or c.script(...) (in a child process, see exercises/sandbox.py), records what holds with c.ok(...),
and raises Wrong(message) at the first thing that does not. A known mistake is named only when the learner's
numbers equal what that mistake computes (c.match, and the mistake tables); otherwise the verdict is the
neutral "yours ..., babygpt's ... at ..." line. Every reference value is computed in the checker's own process,
which never runs the learner's code.

    checks_text.py        steps 1-3: vocabulary, get_batch, bigram
    checks_attention.py   steps 4-7 and 9: attention_head, causal_mask, multi_head, block, kv_cache
    checks_training.py    step 8: lm_loss, lr_schedule, adamw
    checks_generation.py  step 9: generate
"""

from exercises import NAMES, checks_attention, checks_generation, checks_text, checks_training

# check_NAME for every exercise, from the file of its walkthrough steps
CHECKS = {name: getattr(module, f"check_{name}") for name in NAMES
          for module in (checks_text, checks_attention, checks_training, checks_generation)
          if hasattr(module, f"check_{name}")}
