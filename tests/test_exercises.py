"""exercises/: every solution passes its checker, every untouched stub says "not written yet" in one line, and
the mistakes learners make (planted in copies of the solutions) are each recognised by their own message."""

import ast
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from exercises import NAMES
from exercises.__main__ import main
from exercises.checker import HERE, SOLUTIONS, check
from exercises.yourgpt import train_both

torch.set_num_threads(1)


@pytest.mark.parametrize("name", NAMES)
def test_every_solution_passes_its_checker(name):
    result = check(name, SOLUTIONS)
    assert result.state == "done", result.report()
    assert result.report().endswith(f"done: {name} behaves exactly as babygpt's.")


def is_untouched_stub(path):
    """Every function of the file is still its docstring and `raise NotImplementedError` (a learner who has
    started on it has changed that, and their file is theirs to check)."""
    def only_raises(body):
        body = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        body = [s for s in body if "super().__init__()" not in ast.unparse(s)]
        return len(body) == 1 and ast.unparse(body[0]) == "raise NotImplementedError"
    functions = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)]
    return functions and all(only_raises(f.body) for f in functions)


@pytest.mark.parametrize("name", NAMES)
def test_every_untouched_stub_says_not_written_yet_in_one_line(name):
    path = HERE / f"{name}.py"
    if not is_untouched_stub(path):
        pytest.skip(f"{path} has been worked on")
    report = check(name).report()
    assert report == (f"{name}: not written yet: open exercises/{name}.py and replace `raise "
                      f"NotImplementedError` with your code"), report


def test_stubs_teach_shapes_and_hints():
    for name in NAMES:
        text = (HERE / f"{name}.py").read_text()
        assert "Hint" in text and f"python -m exercises check {name}" in text, name


# (exercise, [(text of the solution, what the learner wrote instead)], words the verdict must contain)
MISTAKES = [
    ("vocabulary", [("sorted(set(text))", "list(dict.fromkeys(text))")], ["first appear", "sorted"]),
    ("vocabulary", [("enumerate(chars)", "enumerate(chars, 1)")], ["start at 1"]),
    ("vocabulary", [("sorted(set(text))", "sorted(text)")], ["distinct characters"]),
    ("vocabulary", [('return "".join(itos[i] for i in ids)', "return [itos[i] for i in ids]")], ["one string"]),
    ("get_batch", [("data[i + 1 : i + 1 + block_size]", "data[i : i + block_size]")],
     ["y[0, 0] should be x[0, 1]", "not shifted"]),
    ("get_batch", [("astype(np.int64)", "astype(np.int32)")], ["torch.int32", "torch.long"]),
    ("get_batch", [(", generator=generator)", ")")], ["same gave different batches", "generator=generator"]),
    ("get_batch", [("x = torch.stack([torch.from_numpy(data[i : i + block_size]",
                    "x = torch.stack([torch.from_numpy(data[i : i + block_size + 1]")],
     ["x should have shape (4, 8)", "yours has (4, 9)"]),
    ("bigram", [("nn.init.normal_(self.table.weight, mean=0.0, std=0.02)", "pass")], ["ln(65)", "small"]),
    ("bigram", [("logits = self.table(idx)", "logits = self.table(idx).softmax(-1)")], ["probabilities"]),
    ("bigram", [("targets.view(B * T))", "targets.view(B * T), reduction='sum')")], ["do not sum"]),
    ("bigram", [("targets.view(B * T))", "idx.view(B * T))")], ["against idx"]),
    ("attention_head", [("F.softmax(scores, dim=-1)", "F.softmax(scores, dim=1)")],
     ["sums to", "not 1", "softmax over the last dimension"]),
    ("attention_head", [(" / math.sqrt(k.size(-1))", "")], ["2.83x babygpt's", "divide", "sqrt(head_size)"]),
    ("attention_head", [("math.sqrt(k.size(-1))", "k.size(-1)")], ["not by head_size"]),
    ("attention_head", [("q @ k.transpose(-2, -1)", "k @ q.transpose(-2, -1)")], ["query and key swapped"]),
    ("attention_head", [("weights @ v, weights", "weights @ k, weights")], ["averages the keys"]),
    ("causal_mask", [("scores = scores.masked_fill(~past, float(\"-inf\"))", ""),
                     ("weights = F.softmax(scores, dim=-1)", "weights = F.softmax(scores, dim=-1) * past")],
     ["mask was applied after the softmax", "-inf before"]),
    ("causal_mask", [('float("-inf")', "0.0")], ["set to 0, not -inf"]),
    ("causal_mask", [("torch.tril(", "torch.triu(")], ["upside down"]),
    ("causal_mask", [("dtype=torch.bool))", "dtype=torch.bool), diagonal=-1)")], ["NaN", "itself"]),
    ("causal_mask", [("scores = scores.masked_fill(~past, float(\"-inf\"))", "")], ["see the future"]),
    ("multi_head", [("return c_proj(y)", "return y")], ["before c_proj"]),
    ("multi_head", [("B, T, C = x.shape", "B, T, C = x.shape\n    n_head = 1")], ["one head of size C"]),
    ("multi_head", [("/ math.sqrt(hs)", "/ math.sqrt(C)")], ["divided by sqrt(C)"]),
    ("multi_head", [("(weights @ v).transpose(1, 2).contiguous().view(B, T, C)", "(weights @ v).reshape(B, T, C)")],
     ["put back together", "transpose(1, 2) first"]),
    ("multi_head", [('scores.masked_fill(future, float("-inf"))', "scores")], ["see the future"]),
    ("block", [("x = x + attn(ln_1(x))", "x = ln_1(x + attn(x))"), ("x = x + mlp(ln_2(x))", "x = ln_2(x + mlp(x))")],
     ["post-norm"]),
    ("block", [("x = x + attn(ln_1(x))", "x = attn(ln_1(x))"), ("x = x + mlp(ln_2(x))", "x = mlp(ln_2(x))")],
     ["no residual"]),
    ("block", [("x = x + attn(ln_1(x))  # communicate\n    x = x + mlp(ln_2(x))  # compute",
                "x = x + mlp(ln_2(x))\n    x = x + attn(ln_1(x))")], ["MLP runs before attention"]),
    ("block", [("mlp(ln_2(x))", "mlp(ln_1(x))")], ["own LayerNorm"]),
    ("lm_loss", [("targets.reshape(B * T))", "targets.reshape(B * T), reduction='sum')")], ["15x", "do not sum"]),
    ("lm_loss", [("targets.reshape(B * T))", "targets.reshape(B * T), reduction='none')")],
     ["single number", "(15,)"]),
    ("lm_loss", [("logits.reshape(B * T, V)", "logits.reshape(B * T, V).softmax(-1)")], ["softmax before"]),
    ("lm_loss", [("return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))",
                  "return F.cross_entropy(logits[:, -1], targets[:, -1])")], ["only the last position"]),
    ("lm_loss", [("return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))",
                  "import torch\n    return torch.tensor(F.cross_entropy(logits.reshape(B * T, V), "
                  "targets.reshape(B * T)).item())")], ["no gradient"]),
    ("lr_schedule", [("learning_rate * (it + 1) / (warmup_iters + 1)", "learning_rate * it / warmup_iters")],
     ["at step 0", "starts at 0"]),
    ("lr_schedule", [("(it - warmup_iters) / max(1, decay_iters - warmup_iters)", "it / decay_iters")],
     ["at step 10", "end of warmup", "(it - warmup_iters)"]),
    ("lr_schedule", [("    if it >= decay_iters:\n        return min_lr\n", "")], ["stays at min_lr"]),
    ("lr_schedule", [("min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)",
                      "learning_rate + progress * (min_lr - learning_rate)")], ["straight line", "cosine"]),
    ("lr_schedule", [("min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)",
                      "0.5 * (1.0 + math.cos(math.pi * progress)) * learning_rate")], ["decays to 0"]),
    ("adamw", [("m / (1 - beta1**step)", "m"), ("v / (1 - beta2**step)", "v")], ["no bias correction"]),
    ("adamw", [("    m = beta1 * m", "    grad = grad + weight_decay * param\n    m = beta1 * m"),
               ("param = param * (1 - lr * weight_decay)", "pass")], ["Adam with L2"]),
    ("adamw", [("(v_hat.sqrt() + eps)", "(v_hat + eps).sqrt()")], ["inside the square root"]),
    ("adamw", [("grad * grad", "grad")], ["*squared* gradients"]),
    ("adamw", [("param = param * (1 - lr * weight_decay)", "param.mul_(1 - lr * weight_decay)")],
     ["changed its input `param` in place"]),
    ("generate", [("model(idx[:, -block_size:])", "model(idx)")],
     ["given 9 tokens", "block_size = 8", "idx[:, -block_size:]"]),
    ("generate", [("model(idx[:, -block_size:])", "model(idx[:, :block_size])")],
     ["first 8 tokens", "other end"]),
    ("generate", [("logits = logits / temperature", "logits = logits * temperature")], ["do not multiply"]),
    ("generate", [("logits[:, -1, :]", "logits[:, 0, :]")], ["first position's logits"]),
    ("generate", [("if top_k is not None:", "if False:")], ["keeps 20 tokens", "5 largest"]),
    ("generate", [(", generator=generator)", ")")], ["seeded the same wrote different tokens"]),
    ("kv_cache", [("torch.cat((cache_k, k), dim=2)", "torch.cat((k, cache_k), dim=2)")], ["front of the cache"]),
    ("kv_cache", [("F.softmax(scores, dim=-1) @ cache_v,", "(F.softmax(scores, dim=-1) @ cache_v).squeeze(2),")],
     ["at step 1, the output should have shape (2, 2, 1, 4)", "yours has (2, 2, 4)"]),
    ("kv_cache", [(" / math.sqrt(q.size(-1))", "")], ["sqrt(head_size)"]),
    ("kv_cache", [("    cache_k = torch.cat((cache_k, k), dim=2)", "    old_k, old_v = cache_k, cache_v\n"
                   "    cache_k = torch.cat((cache_k, k), dim=2)"),
                  ("q @ cache_k.transpose(-2, -1)", "q @ old_k.transpose(-2, -1)"),
                  ("@ cache_v, cache_k", "@ old_v, cache_k")], ["does not read itself"]),
]


def plant(folder, name, replacements):
    """exercises/solutions/NAME.py with each (old, new) replaced: a learner's file with that mistake."""
    source = (SOLUTIONS / f"{name}.py").read_text()
    for old, new in replacements:
        assert old in source, (name, old)
        source = source.replace(old, new)
    (folder / f"{name}.py").write_text(source)


@pytest.mark.parametrize("name, replacements, words", MISTAKES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_a_planted_mistake_is_recognised_by_its_own_message(tmp_path, name, replacements, words):
    plant(tmp_path, name, replacements)
    result = check(name, tmp_path)
    assert result.state == "wrong", result.report()
    for word in words:
        assert word in result.problem, (word, result.problem)


def test_enough_planted_mistakes_each_with_its_own_message():
    assert len(MISTAKES) >= 25
    assert {m[0] for m in MISTAKES} == set(NAMES)  # every exercise has some


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_exits_0_when_done_and_1_when_wrong(tmp_path, capsys):
    assert run_main(capsys, "check", "block", "--solutions")[0] == 0
    plant(tmp_path, "block", [("mlp(ln_2(x))", "mlp(ln_1(x))")])
    code, out, _ = run_main(capsys, "check", "block", "--dir", tmp_path)
    assert code == 1 and "WRONG" in out and "Traceback" not in out


def test_the_list_shows_every_exercise_and_its_state(tmp_path, capsys):
    for name in NAMES[:2]:
        plant(tmp_path, name, [])
    plant(tmp_path, "block", [("mlp(ln_2(x))", "mlp(ln_1(x))")])
    code, out, _ = run_main(capsys, "--dir", tmp_path)
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("  ")}
    assert list(lines) == NAMES
    assert " done " in lines["vocabulary"] and " wrong " in lines["block"]
    assert "Next: python -m exercises check bigram" in out


def test_an_unknown_name_is_one_line_listing_the_names():
    done = subprocess.run([sys.executable, "-m", "exercises", "check", "atention"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "no exercise called 'atention'; the exercises are: " + ", ".join(NAMES)]


def test_a_syntax_error_is_its_file_line_and_message(tmp_path, capsys):
    (tmp_path / "block.py").write_text("def block(x, ln_1, attn, ln_2, mlp):\n    x = x + attn(ln_1(x)\n"
                                       "    return x\n")
    code, out, _ = run_main(capsys, "check", "block", "--dir", tmp_path)
    assert code == 1
    assert "block.py line 2: SyntaxError" in out and "Traceback" not in out


def test_an_exception_in_the_learners_code_is_their_file_and_line(tmp_path):
    plant(tmp_path, "lm_loss", [("return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))",
                                 "return F.cross_entropy(logits, targets)")])
    problem = check("lm_loss", tmp_path).problem
    assert problem.startswith("your code raised RuntimeError") or problem.startswith("your code raised ValueError")
    assert "lm_loss.py line 8 (`return F.cross_entropy(logits, targets)`)" in problem
    assert "checker.py" not in problem


def test_a_function_that_never_returns_meets_the_time_limit(tmp_path):
    plant(tmp_path, "attention_head", [("q, k, v = query(x), key(x), value(x)", "while True:\n        pass")])
    result = check("attention_head", tmp_path, time_limit=1.0)  # (a child's start-up on a busy machine: < 1 s)
    assert result.state == "wrong"
    assert "did not return within 1 s" in result.problem and "never ends" in result.problem


def test_a_loop_at_import_meets_the_time_limit_too(tmp_path):
    (tmp_path / "block.py").write_text("while True:\n    pass\n")
    result = check("block", tmp_path, time_limit=1.0)
    assert "did not finish in 1 s" in result.problem


def test_a_function_that_changes_its_inputs_is_told_so(tmp_path):
    plant(tmp_path, "causal_mask", [("T = q.size(1)", "T = q.size(1)\n    q *= 2")])
    problem = check("causal_mask", tmp_path).problem
    assert "changed its input `q` in place" in problem


def test_a_partly_written_exercise_is_not_not_started(tmp_path):
    plant(tmp_path, "vocabulary", [('return "".join(itos[i] for i in ids)', "raise NotImplementedError")])
    result = check("vocabulary", tmp_path)
    assert result.state == "wrong" and "still raises NotImplementedError" in result.problem


def test_train_with_the_solutions_matches_babygpts_model(slice_dir, capsys):
    code = train_both(SOLUTIONS, iters=8, data_dir=slice_dir)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "difference           0.0000  (the same model" in out
    assert "your GPT writes" in out


def test_train_asks_for_the_unfinished_pieces_first(tmp_path, slice_dir, capsys):
    for name in NAMES:
        plant(tmp_path, name, [])
    plant(tmp_path, "block", [("mlp(ln_2(x))", "mlp(ln_1(x))")])
    (tmp_path / "adamw.py").write_text((HERE / "adamw.py").read_text())  # the stub
    assert train_both(tmp_path, iters=2, data_dir=slice_dir) == 1
    assert "finish these first: block (wrong), adamw (not started)" in capsys.readouterr().err


@pytest.mark.slow
def test_train_for_a_minute_reaches_babygpts_val_loss(shakespeare_text, tmp_path, capsys):
    from prepare import prepare
    prepare(shakespeare_text, tmp_path)
    code = train_both(SOLUTIONS, data_dir=tmp_path)
    out = capsys.readouterr().out
    assert code == 0, out
    losses = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("  babygpt's model.GPT  ")
              or line.startswith("  your GPT  ")]
    assert len(losses) == 2 and abs(losses[0] - losses[1]) <= 0.01 and losses[0] < 2.6, out
