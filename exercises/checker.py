"""
The checker: runs a learner's function on small random inputs, compares it with babygpt's own code, and says
in plain words what holds and, for the first thing that does not, what was expected, what came back, and the
mistake that most likely explains it.

    result = check("attention_head")                  # exercises/attention_head.py
    result = check("attention_head", folder=SOLUTIONS)  # exercises/solutions/attention_head.py
    print(result.report())                            # result.state: "done", "wrong" or "not started"

How a check is written: each exercise has a function check_NAME(c) in exercises/checks.py. It calls the learner's code through
c.call(...) (time limit, inputs guarded against changes in place, the learner's exceptions turned into their file
and line), records what holds with c.ok(...), and raises Wrong(message) at the first thing that does not.
Known mistakes are recognised by computing what that mistake would return (c.same_as) and naming it.
"""

import copy
import importlib.util
import inspect
import math
import signal
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from exercises import NAMES, unknown_name_message

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE / "solutions"
TIME_LIMIT = 5.0  # seconds for any one call of the learner's code (the checks' inputs are tiny)


# ----------------------------------------------------------------------------------------------------------------
# the machinery: load the learner's file, call it safely, collect the verdict


class Wrong(Exception):
    """The first thing that does not hold: its message is the verdict's last line."""


class NotWritten(Exception):
    """The stub still raises NotImplementedError."""


class TimeLimit(BaseException):
    """Raised inside the learner's code when it runs too long (BaseException: `except Exception` won't eat it)."""


@dataclass
class Result:
    name: str
    path: Path
    state: str  # "done", "wrong" or "not started"
    passed: list = field(default_factory=list)  # what holds, one line each
    problem: str = ""  # the first thing that does not

    def report(self):
        """The verdict in plain words, as `python -m exercises check NAME` prints it."""
        where = shown_path(self.path)
        if self.state == "not started":
            return (f"{self.name}: not written yet: open {where} and replace `raise NotImplementedError` "
                    f"with your code")
        lines = [f"{self.name} ({where})"]
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
    except ValueError:
        return str(path)


def exercise_path(name, folder=None):
    return Path(folder or HERE) / f"{name}.py"


def learner_error(error, path):
    """An exception from the learner's code as one line: their file, line and message, never our traceback."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if not frames:
        return f"your code raised {message}"
    frame = frames[-1]
    code = f" (`{frame.line.strip()}`)" if frame.line else ""
    return f"your code raised {message}, at {shown_path(path)} line {frame.lineno}{code}"


def run_with_time_limit(function, seconds, args=(), kwargs=None):
    """function(*args, **kwargs), stopped with TimeLimit after `seconds`. In the main thread (the command line,
    pytest) an alarm signal interrupts it, so nothing keeps running afterwards; elsewhere (or without
    SIGALRM, on Windows) it runs in a daemon thread that is abandoned when it is too slow."""
    kwargs = kwargs or {}
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def stop(signum, frame):
            raise TimeLimit()
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return function(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread below
            outcome["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeLimit()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def load(path, time_limit=TIME_LIMIT):
    """Import the learner's file as a fresh module (edits are always picked up). Raises Wrong for a syntax error
    or an exception at import, with the file, line and message."""
    spec = importlib.util.spec_from_file_location(f"_exercise_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        run_with_time_limit(spec.loader.exec_module, time_limit, (module,))
    except SyntaxError as e:
        raise Wrong(f"{shown_path(path)} line {e.lineno}: SyntaxError: {e.msg}") from None
    except TimeLimit:
        raise Wrong(f"importing {shown_path(path)} did not finish in {time_limit:g} s: is there a loop outside "
                    f"a function?") from None
    except NotImplementedError:
        raise NotWritten() from None
    except Exception as e:
        raise Wrong(learner_error(e, path)) from None
    return module


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
    """What a check_NAME function works with: the learner's module and the verdict so far."""

    def __init__(self, module, path, time_limit=TIME_LIMIT):
        self.module, self.path, self.time_limit = module, path, time_limit
        self.passed = []

    def ok(self, line):
        self.passed.append(line)

    def function(self, name):
        found = getattr(self.module, name, None)
        if found is None:
            raise Wrong(f"{shown_path(self.path)} has no {name}: keep the name the stub gives it")
        return found

    def call(self, target, *args, **kwargs):
        """The learner's target(*args, **kwargs) (target: a name in their file, or an object they made) within
        the time limit; raises Wrong if it changes an input in place, raises, or runs too long, and NotWritten
        while it still raises NotImplementedError."""
        function = self.function(target) if isinstance(target, str) else target
        name = target if isinstance(target, str) else type(target).__name__
        try:
            signed = function.forward if isinstance(function, nn.Module) else function
            bound = inspect.signature(signed).bind(*args, **kwargs)
            named = dict(bound.arguments)
        except (TypeError, ValueError):
            named = {f"argument {i + 1}": a for i, a in enumerate(args)} | kwargs
        before = {k: snapshot(v) for k, v in named.items()}
        try:
            result = run_with_time_limit(function, self.time_limit, args, kwargs)
        except TimeLimit:
            raise Wrong(f"{name} did not return within {self.time_limit:g} s on a tiny input: is there a loop "
                        f"that never ends?") from None
        except Verdict as v:
            raise Wrong(str(v)) from None
        except NotImplementedError:
            raise NotWritten() from None
        except Exception as e:
            raise Wrong(learner_error(e, self.path)) from None
        for k, v in named.items():
            if not unchanged(before[k], v):
                raise Wrong(f"{name} changed its input `{k}` in place (an in-place operation such as +=, "
                            f"[...] = or a method ending in _): work on a new tensor and return it")
        return result

    # -- comparisons that name what came back

    def tensor(self, value, what, shape=None, letters=""):
        """value must be a tensor (of shape `shape`): otherwise say what came back."""
        if not isinstance(value, torch.Tensor):
            raise Wrong(f"{what} should be a tensor, yours is {describe(value)}")
        if shape is not None and tuple(value.shape) != tuple(shape):
            names = f" {letters}" if letters else ""
            raise Wrong(f"{what} should have shape {tuple(shape)}{names}, yours has {tuple(value.shape)}")
        return value

    def pair(self, value, what, names):
        if not isinstance(value, (tuple, list)) or len(value) != len(names):
            raise Wrong(f"{what} should return {len(names)} things ({', '.join(names)}), yours returned "
                        f"{describe(value)}")
        return value

    @staticmethod
    def same_as(value, expected, atol=1e-5, rtol=1e-4):
        return (isinstance(value, torch.Tensor) and value.shape == expected.shape
                and torch.allclose(value.detach().float(), expected.detach().float(), atol=atol, rtol=rtol))

    def match(self, value, expected, what, mistakes=(), atol=1e-5):
        """value must equal expected; if it equals one of the mistakes' (result, message) instead, that message
        is the verdict, else the first differing entry is shown."""
        if self.same_as(value, expected, atol):
            return
        for result, message in mistakes:
            if result is not None and self.same_as(value, result, atol):
                raise Wrong(message)
        raise Wrong(f"{what} differs from babygpt's: {first_difference(value, expected)}")


class Verdict(BaseException):
    """Raised by a stand-in the checker hands to the learner's code (the spy model of `generate`) when it sees
    something wrong: its message is the verdict. A BaseException, so the learner's `except Exception` lets it by."""


def describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{type(value).__name__} {value!r}"[:80]


def first_difference(value, expected):
    value, expected = value.detach().float(), expected.detach().float()
    gap = (value - expected).abs()
    gap = torch.where(torch.isnan(gap), torch.full_like(gap, math.inf), gap)
    where = tuple(int(i) for i in np.unravel_index(int(gap.argmax()), tuple(gap.shape)))
    index = ", ".join(map(str, where))
    return f"at [{index}] yours is {value[where].item():.4g}, babygpt's {expected[where].item():.4g}"


def check(name, folder=None, time_limit=TIME_LIMIT):
    """Check exercise `name` in `folder` (exercises/ by default): a Result."""
    if name not in NAMES:
        raise KeyError(unknown_name_message(name))
    path = exercise_path(name, folder)
    result = Result(name, path, "wrong")
    if not path.is_file():
        result.problem = f"{shown_path(path)} does not exist"
        return result
    torch.manual_seed(0)  # every check runs on the same random inputs
    checker = None
    try:
        module = load(path, time_limit)
        checker = Checker(module, path, time_limit)
        from exercises.checks import CHECKS
        CHECKS[name](checker)
        result.state = "done"
    except NotWritten:
        if checker is None or not checker.passed:
            result.state = "not started"
        else:
            result.problem = "a part of it still raises NotImplementedError: write that part too"
    except Wrong as e:
        result.problem = str(e)
    if checker is not None:
        result.passed = checker.passed
    return result
