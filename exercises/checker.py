"""
The checker: runs a learner's function on small random inputs, compares it with babygpt's own code, and says
in plain words what holds and, for the first thing that does not, what was expected, what came back, and the
mistake that most likely explains it.

    result = check("attention_head")                  # exercises/attention_head.py
    result = check("attention_head", folder=SOLUTIONS)  # exercises/solutions/attention_head.py
    print(result.report())                            # result.state: "done", "wrong" or "not started"

How a check is written: each exercise has a function check_NAME(c) (exercises/checks.py lists them). It calls
the learner's code through c.call(...) or c.script(...), records what holds with c.ok(...), and raises
Wrong(message) at the first thing that does not. Every c.call runs in a child process (exercises/sandbox.py) with a hard time limit: the learner's file
is imported there, the function called, its inputs guarded against changes in place, and only the returned
values come back. So this process never runs the learner's code, and its reference values (model.py, train.py,
torch) cannot be changed by it. Known mistakes are recognised by computing what that mistake would return
(c.match) and naming it only when the numbers are that mistake's.
"""

import copy
import importlib.util
import inspect
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from babygpt.files import kind_of
from exercises import NAMES, unknown_name_message
from exercises.pipe_format import Foreign, Made
from exercises.sandbox import run_in_child

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE / "solutions"
TIME_LIMIT = 5.0  # seconds for any one call of the learner's code (the checks' inputs are tiny)
PRINTED_LINES = 20  # lines of the learner's printed output shown with the verdict


# ----------------------------------------------------------------------------------------------------------------
# the machinery: call the learner's file in a child, collect the verdict


class Wrong(Exception):
    """The first thing that does not hold: its message is the verdict's last line."""


class NotWritten(Exception):
    """The stub still raises NotImplementedError."""


@dataclass
class Result:
    name: str
    path: Path
    state: str  # "done", "wrong" or "not started"
    passed: list = field(default_factory=list)  # what holds, one line each
    problem: str = ""  # the first thing that does not
    printed: str = ""  # what the learner's code printed, shown apart from the verdict

    def report(self):
        """The verdict in plain words, as `python -m exercises check NAME` prints it."""
        where = shown_path(self.path)
        if self.state == "not started":
            return (f"{self.name}: not written yet: open {where} and replace `raise NotImplementedError` "
                    f"with your code")
        lines = [f"{self.name} ({where})"]
        if self.printed:
            shown = self.printed.splitlines()
            lines.append("  your code printed (shown apart from the verdict):")
            lines += [f"    | {line}" for line in shown[:PRINTED_LINES]]
            if len(shown) > PRINTED_LINES:
                lines.append(f"    | ... ({len(shown) - PRINTED_LINES} more lines)")
        lines += [f"  ok     {line}" for line in self.passed]
        if self.state == "done":
            lines.append(f"done: {self.name} behaves exactly as babygpt's.")
        else:
            lines.append(f"  WRONG  {self.problem}")
        return "\n".join(lines)


def shown_path(path):
    """The path relative to the current folder when it is inside it (shorter and clickable)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def exercise_path(name, folder=None):
    return Path(folder or HERE) / f"{name}.py"


def file_problem(path):
    """Why the learner's file cannot be read as Python source (None when it can): a folder, FIFO or device in
    its place is named as such (a FIFO would block the import forever)."""
    where = shown_path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{where} is a symbolic link to {os.readlink(path)}, which does not exist"
        return f"{where} does not exist"
    except OSError as e:
        return f"cannot read {where}: {e.strerror}"
    if not stat.S_ISREG(mode):
        return f"{where} is {kind_of(mode)}, not a file: the exercise is the Python file {path.name}"
    if not os.access(path, os.R_OK):
        return f"cannot read {where}: permission denied"
    return None


def load_module(path):
    """The learner's file as a fresh module (edits are always picked up). In a child process only."""
    spec = importlib.util.spec_from_file_location(f"_exercise_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def learner_problem(outcome, name, path, time_limit):
    """An Outcome that is not a value, as the verdict's line (or NotWritten)."""
    error = outcome.error or {}
    at = f" at {error['where']}" if error.get("where") else ""
    if outcome.kind == "timeout":
        where = f" (it was at {outcome.where})" if outcome.where else ""
        if outcome.stage == "load":
            return Wrong(f"importing {shown_path(path)} did not finish in {time_limit:g} s and was stopped{where}: "
                         f"is there a loop outside a function?")
        return Wrong(f"{name} did not return within {time_limit:g} s on a tiny input and was stopped{where}: is "
                     f"there a loop that never ends?")
    if outcome.kind == "exit":
        return Wrong(f"your code called {error['type']}({error['code']}){at}: the checker cannot see a result; "
                     f"return the value instead of ending the program")
    if outcome.kind == "died":
        return Wrong(f"the process running your code {outcome.status} before {name} returned (your code ended "
                     f"it, or it ran out of memory)")
    if outcome.kind == "garbled":
        return Wrong(f"what {name} returned could not be read back: {error.get('message', '')}")
    kind, message = error.get("type", "?"), error.get("message", "")
    if error.get("class") == f"{__name__}.Wrong":
        return Wrong(message)
    if kind == "NotImplementedError" or error.get("class") == f"{__name__}.NotWritten":
        return NotWritten()
    if kind == "SyntaxError":
        line = f" line {error['line']}" if error.get("line") else ""
        if "null bytes" in message:
            return Wrong(f"{shown_path(path)} holds a null byte (\\0), so it is not Python source: save it "
                         f"again as plain UTF-8 text")
        return Wrong(f"{shown_path(path)}{line}: SyntaxError: {message}")
    if kind == "EOFError" and message.startswith("EOF when reading a line"):
        return Wrong(f"your code waits for input (input()){at}: the checker types nothing; take what the "
                     f"function needs from its arguments")
    said = f"{kind}: {message}" if message else kind
    return Wrong(f"your code raised {said}" + (f", at {error['where']}" if error.get("where") else ""))


def snapshot(value):
    """A copy of an input to compare with after the call: tensors, arrays, modules' weights, lists of these."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, nn.Module):
        return {k: v.detach().clone() for k, v in value.state_dict().items()}
    if isinstance(value, (list, tuple)):
        return [snapshot(item) for item in value]
    if isinstance(value, (dict, str, int, float)):
        return copy.deepcopy(value)
    return None  # generators, models we wrap: not compared


def unchanged(before, value):
    if before is None:
        return True
    if isinstance(value, torch.Tensor):
        return before.shape == value.shape and torch.equal(before, value.detach())
    if isinstance(value, np.ndarray):
        return before.shape == value.shape and np.array_equal(before, value)
    if isinstance(value, nn.Module):
        now = value.state_dict()
        return all(torch.equal(before[k], now[k]) for k in before)
    if isinstance(value, (list, tuple)):
        return len(before) == len(value) and all(unchanged(b, v) for b, v in zip(before, value))
    return before == value


class Checker:
    """What a check_NAME function works with: the learner's file, and the verdict so far."""

    def __init__(self, path, time_limit=TIME_LIMIT):
        self.path, self.time_limit = Path(path), time_limit
        self.passed, self.printed = [], []

    def ok(self, line):
        self.passed.append(line)

    def call(self, target, *args, **kwargs):
        """The learner's target(*args, **kwargs) (target: a name in their file) in a child process, within the
        time limit: its return value. Raises Wrong if it changes an input in place, raises, exits or runs too
        long, and NotWritten while it still raises NotImplementedError."""
        return self.script((target, args, kwargs))[0]

    def call_watching(self, watch, target, *args, **kwargs):
        """call(...), and watch() evaluated in the child right after it (what a stand-in the checker handed to the
        learner's code saw, such as generate's spy): (value, watched)."""
        results = self.script((target, args, kwargs, watch))
        return results[0], results.watched[0]

    def calls(self, target, argument_lists):
        """target(*args) for each args of argument_lists, in one child: the list of their values."""
        results = self.script(*[(target, args) for args in argument_lists])
        return [results[i] for i in range(len(argument_lists))]

    def script(self, *calls):
        """Several calls in one child (a fork costs some milliseconds), in order, each with its own time limit.
        A call is (target, args), (target, args, kwargs) or (target, args, kwargs, watch); target is a name in
        the learner's file or Later(i), the object call i returned, which may be an argument too. Returns
        Results: results[i] is call i's value, or raises the verdict of what happened instead (the calls after
        a failed one do not run)."""
        calls = [tuple(call) + ({}, None)[len(call) - 2:] for call in calls]
        path, values, watched = self.path, [], []

        def job(channel):
            module = load_module(path)
            channel.loaded()
            made = []
            for target, args, kwargs, watch in calls:
                target = made[target.index] if isinstance(target, Later) else target
                args = [made[a.index] if isinstance(a, Later) else a for a in args]
                value, seen = call_in_child(module, path, target, args, kwargs, watch)
                made.append(value)
                channel.send([value, seen])

        def heard(message):
            values.append(message[0])
            watched.append(message[1])
        outcome = run_in_child(job, [path], self.time_limit, on_message=heard)
        if outcome.printed and outcome.printed not in self.printed:
            self.printed.append(outcome.printed)
        problem = None
        if outcome.kind != "value":
            failed = calls[min(len(values), len(calls) - 1)][0]
            name = failed if isinstance(failed, str) else "your object"
            problem = learner_problem(outcome, name, path, self.time_limit)
        return Results(values, watched, problem, [c[0] for c in calls])

    # -- comparisons that name what came back

    def tensor(self, value, what, shape=None, letters="", dtype=torch.float32):
        """value must be a tensor (of shape `shape`, of dtype `dtype` unless None): otherwise say what came back."""
        if not isinstance(value, torch.Tensor):
            raise Wrong(f"{what} should be a tensor, yours is {describe(value)}")
        if shape is not None and tuple(value.shape) != tuple(shape):
            names = f" {letters}" if letters else ""
            raise Wrong(f"{what} should have shape {tuple(shape)}{names}, yours has {tuple(value.shape)}")
        if dtype is not None and value.dtype != dtype:
            raise Wrong(f"{what} should be {dtype} (as babygpt's: the inputs' dtype), yours is {value.dtype}: no "
                        f".double(), .bool(), comparisons or torch.tensor(...) of Python numbers on the way")
        return value

    def pair(self, value, what, names):
        if not isinstance(value, (tuple, list)) or len(value) != len(names):
            raise Wrong(f"{what} should return {len(names)} things ({', '.join(names)}), yours returned "
                        f"{describe(value)}")
        return value

    @staticmethod
    def same_as(value, expected, atol=1e-5, rtol=1e-4):
        """value is a real tensor of expected's shape with the same numbers (NaN where expected has NaN)."""
        if not (isinstance(value, torch.Tensor) and value.shape == expected.shape) or not comparable(value):
            return False
        return torch.allclose(value.detach().float(), expected.detach().float(), atol=atol, rtol=rtol,
                              equal_nan=True)

    def match(self, value, expected, what, mistakes=(), atol=1e-5):
        """value must equal expected; if it equals one of the mistakes' (result, message) instead, that message
        is the verdict, else the first differing entry is shown."""
        if isinstance(value, torch.Tensor) and isinstance(expected, torch.Tensor) and value.dtype != expected.dtype:
            self.tensor(value, what, dtype=expected.dtype)
        if self.same_as(value, expected, atol):
            return
        for result, message in mistakes:
            if result is not None and self.same_as(value, result, atol):
                raise Wrong(message)
        if not isinstance(value, torch.Tensor) or value.shape != expected.shape:
            self.tensor(value, what, expected.shape, dtype=expected.dtype)
        raise Wrong(f"{what} differs from babygpt's: {first_difference(value, expected)}")


def comparable(value):
    return value.dtype != torch.bool and not value.is_complex()


def find_foreign(value):
    if isinstance(value, Foreign):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((f for f in map(find_foreign, items) if f is not None), None)


def call_in_child(module, path, target, args, kwargs, watch):
    """In the child: the learner's target(*args, **kwargs), its inputs compared before and after; (value,
    watch()). A Wrong or NotWritten raised here reaches the parent as such (learner_problem)."""
    if isinstance(target, str):
        function = getattr(module, target, None)
        if function is None:
            raise Wrong(f"{shown_path(path)} has no {target}: keep the name the stub gives it")
        name = target
    else:
        function, name = target, type(target).__name__
    try:
        signed = function.forward if isinstance(function, nn.Module) else function
        named = dict(inspect.signature(signed).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):
        named = {f"argument {i + 1}": a for i, a in enumerate(args)} | kwargs
    before = {k: snapshot(v) for k, v in named.items()}
    try:
        value = function(*args, **kwargs)
    except Verdict as v:
        raise Wrong(str(v)) from None
    except NotImplementedError:
        raise NotWritten() from None
    for k, v in named.items():
        if not unchanged(before[k], v):
            raise Wrong(f"{name} changed its input `{k}` in place (an in-place operation such as +=, [...] = or a "
                        f"method ending in _): work on a new tensor and return it")
    return value, (watch() if watch is not None else None)


class Later:
    """In a script: the object an earlier call returned (call `index`), used there as it is."""

    def __init__(self, index):
        self.index = index


class Results:
    """The values of a script's calls, as they came back; reaching the call that failed raises its verdict."""

    def __init__(self, values, watched, problem, targets):
        self.values, self.watched, self.problem, self.targets = values, watched, problem, targets

    def __getitem__(self, i):
        if i < len(self.values):
            value = self.values[i]
            foreign = find_foreign(value)
            if foreign is not None:
                target = self.targets[i]
                name = target if isinstance(target, str) else "your object"
                raise Wrong(f"{name} returned a tensor on the {foreign.device} device ({foreign.dtype}, shape "
                            f"{foreign.shape}): babygpt's inputs here are on the CPU; keep your tensors where "
                            f"the inputs are (no .to(...) or device=...)")
            return value
        raise self.problem or Wrong("the checker lost track of your code's results")


class Verdict(BaseException):
    """Raised by a stand-in the checker hands to the learner's code (the spy model of `generate`) when it sees
    something wrong: its message is the verdict. A BaseException, so the learner's `except Exception` lets it by."""


def describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Made):
        return value.description
    if isinstance(value, Foreign):
        return f"a tensor on the {value.device} device"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:80]


def first_difference(value, expected):
    """Where value differs most from expected (same shapes), as "at [i, j] yours is x, babygpt's y"."""
    value, expected = value.detach().float(), expected.detach().float()
    if value.dim() == 0:
        return f"yours is {value.item():.4g}, babygpt's {expected.item():.4g}"
    gap = (value - expected).abs()
    gap = torch.where(torch.isnan(gap), torch.full_like(gap, math.inf), gap)
    where = tuple(int(i) for i in np.unravel_index(int(gap.argmax()), tuple(gap.shape)))
    index = ", ".join(map(str, where))
    return f"at [{index}] yours is {value[where].item():.4g}, babygpt's {expected[where].item():.4g}"


def check(name, folder=None, time_limit=TIME_LIMIT):
    """Check exercise `name` in `folder` (exercises/ by default): a Result. The learner's code runs only in child
    processes: whatever it does, this process and the other exercises' verdicts are unchanged."""
    from exercises.checks import CHECKS
    if name not in NAMES:
        raise KeyError(unknown_name_message(name))
    path = exercise_path(name, folder)
    result = Result(name, path, "wrong")
    problem = file_problem(path)
    if problem:
        result.problem = problem
        return result
    torch.manual_seed(0)  # every check runs on the same random inputs
    checker = Checker(path, time_limit)
    try:
        CHECKS[name](checker)
        result.state = "done"
    except NotWritten:
        if not checker.passed:
            result.state = "not started"
        else:
            result.problem = "a part of it still raises NotImplementedError: write that part too"
    except Wrong as e:
        result.problem = str(e)
    except Exception as e:  # noqa: BLE001 -- a value no check foresaw: one line, not the checker's traceback
        result.problem = f"the checker could not make sense of what your code returned ({type(e).__name__}: {e})"
    result.passed, result.printed = checker.passed, "\n".join(checker.printed).rstrip("\n")
    return result
