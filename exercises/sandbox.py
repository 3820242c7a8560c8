"""
The learner's code runs in a child process, never in the checker's own.

    outcome = run_in_child(job, paths, time_limit)   # job(channel) runs in the child; its return value comes back

The child is forked from the checker after its imports (a few milliseconds), so it starts with the checker's
inputs already in memory, and hands back only plain data: numbers, strings, lists, dicts, tensors and arrays
(as their bytes, never pickle). Whatever the learner's code does there -- sys.exit, os._exit, KeyboardInterrupt,
an endless loop under a bare `except:`, an ignored SIGALRM, threads, forks, patching torch, math, builtins or
train -- ends with the child: the checker's reference values, the other exercises and the verdict are untouched.
The time limit is kept by the parent, which kills the child's whole process group (SIGKILL: it cannot be caught
or ignored). What the learner's code prints is collected apart (its first lines) and never mixed with the verdict.

Without os.fork (Windows) the job runs in this process with a thread-based time limit: the verdicts are the same
for code that behaves, but the protection above is the fork's.
"""

import atexit
import builtins
import faulthandler
import gc
import io
import linecache
import os
import re
import select
import signal
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from exercises.pipe_format import FrameReader, decode, encode, frame

FORK = hasattr(os, "fork")  # Linux, macOS: the learner's code runs in a child; elsewhere here (run_here)
PRINTED_CAP = 4000  # characters of the learner's printed output kept for the verdict
_exit, _write, _getpid = os._exit, os.write, os.getpid  # ours, whatever the learner's code does to os


@dataclass
class Outcome:
    """What happened to one run of the learner's code in a child."""
    kind: str  # "value", "raised", "exit", "timeout", "died" or "garbled"
    value: object = None  # the job's return value ("value")
    error: dict = None  # "raised" and "exit": type, message, where (the learner's file and line), code
    stage: str = "load"  # "load" while importing the learner's file, then "call"
    where: str = ""  # "timeout": the learner's line the child was running when it was stopped
    status: str = ""  # "died": how the process ended
    printed: str = ""  # what the learner's code printed (stdout and stderr), at most PRINTED_CAP characters


class LearnerExit(BaseException):
    """os._exit called by the learner's code, in the child: reported, not obeyed."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


# ----------------------------------------------------------------------------------------------------------------
# the child's side


def learner_frames(tb, paths):
    paths = {Path(p).resolve() for p in paths}
    return [f for f in traceback.extract_tb(tb) if Path(f.filename).resolve() in paths]


def where_text(frame_summary):
    from exercises.checker import shown_path
    code = f" (`{frame_summary.line.strip()}`)" if frame_summary.line else ""
    return f"{shown_path(frame_summary.filename)} line {frame_summary.lineno}{code}"


def classify(error, paths):
    """An exception raised in the child, as plain data: its type, message, and where in the learner's files."""
    frames = learner_frames(error.__traceback__, paths)
    where = where_text(frames[-1]) if frames else ""
    if isinstance(error, (SystemExit, LearnerExit)):
        how = "os._exit" if isinstance(error, LearnerExit) else "sys.exit"
        return {"type": how, "code": repr(error.code), "where": where}
    if isinstance(error, SyntaxError):
        return {"type": "SyntaxError", "message": error.msg or str(error), "line": error.lineno,
                "where": where}
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 -- the learner's __str__ may raise anything
        message = ""
    kind = type(error)
    return {"type": kind.__name__, "class": f"{kind.__module__}.{kind.__qualname__}", "message": message,
            "where": where}


class Channel:
    """What a job in the child uses to talk to the parent: loaded() once the learner's file is imported (the time
    limit starts again for the call), send(value) for a message on the way (exercises train's progress)."""

    def __init__(self, fd, time_limit, trace_fd, me):
        self.fd, self.time_limit, self.trace_fd, self.me = fd, time_limit, trace_fd, me

    def write(self, data):
        if _getpid() != self.me:  # a fork made by the learner's code: it has nothing to say
            _exit(0)
        view = memoryview(data)
        while view:
            view = view[_write(self.fd, view):]

    def loaded(self):
        arm_trace(self.time_limit, self.trace_fd)
        self.write(frame({"t": "loaded"}))

    def send(self, value):
        blobs = []
        self.write(frame({"t": "message", "value": encode(value, blobs)}, blobs))


def arm_trace(time_limit, trace_fd):
    """Where the child is, written by faulthandler's own thread shortly before the parent's limit: the parent
    names the learner's line in the verdict of a child it had to kill."""
    if time_limit and trace_fd is not None:
        faulthandler.dump_traceback_later(max(0.05, time_limit * 0.85), file=trace_fd)


def child_main(job, paths, time_limit, result_w, out_w, trace_w):
    """The child: fresh standard streams (stdin empty, stdout and stderr into the parent's pipe), then the job."""
    me = _getpid()
    gc.disable()  # a short life: a collection would only copy the parent's memory page by page
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        for fd in (null, out_w):
            os.close(fd)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True,
                                      errors="backslashreplace")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True,
                                      errors="backslashreplace")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        torch.set_num_threads(1)  # a multi-threaded OpenMP pool does not survive a fork: the child uses one
        saved_builtins = dict(vars(builtins))
        channel = Channel(result_w, time_limit, trace_w, me)
        arm_trace(time_limit, trace_w)
        os._exit = learner_exit
        try:
            header, blobs = {"t": "final", "kind": "value"}, []
            header["value"] = encode(job(channel), blobs)
        except BaseException as e:  # noqa: BLE001 -- everything the learner's code can raise is the verdict's
            header, blobs = {"t": "final", "kind": "raised", "error": classify(e, paths)}, []
        if _getpid() != me:
            _exit(0)
        faulthandler.cancel_dump_traceback_later()
        restore(builtins.__dict__, saved_builtins)  # print, len, ... as they were, for the lines below
        try:
            message = frame(header, blobs)
        except Exception as e:  # noqa: BLE001 -- a value we could not encode
            message = frame({"t": "final", "kind": "garbled", "message": f"{type(e).__name__}: {e}"})
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 -- the learner's output is theirs; the verdict matters
                pass
        channel.write(message)
    finally:
        _exit(0)


def restore(namespace, saved):
    for key in [k for k in namespace if k not in saved]:
        del namespace[key]
    for key, value in saved.items():
        if namespace.get(key) is not value:
            namespace[key] = value


def learner_exit(code=0):
    raise LearnerExit(code)


# ----------------------------------------------------------------------------------------------------------------
# the parent's side


def run_in_child(job, paths, time_limit, on_message=None):
    """job(channel) in a child process, within time_limit seconds for the import (until channel.loaded()) and
    again for what follows (and again after each channel.send, when on_message is given: exercises train's
    limit is per piece of work). An Outcome; the child and anything it started are gone when this returns."""
    if not FORK:
        return run_here(job, paths, time_limit, on_message)
    for stream in (sys.stdout, sys.stderr):  # nothing buffered here may be written again by the child
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 -- a closed stream is the runner's to report
            pass
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    trace_r, trace_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (result_r, out_r, trace_r):
            os.close(fd)
        child_main(job, paths, time_limit, result_w, out_w, trace_w)  # never returns
    for fd in (result_w, out_w, trace_w):
        os.close(fd)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    try:
        return watch(pid, result_r, out_r, trace_r, paths, time_limit, on_message)
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)  # the learner's threads, forks and whatever still runs
        except OSError:
            pass
        UNREAPED.append(pid)  # the kernel tears the child down meanwhile: reaped at the next call, or at exit
        reap()
        for fd in (result_r, out_r, trace_r):
            os.close(fd)


UNREAPED = []  # children killed, not yet waited for


def reap(block=False):
    for pid in list(UNREAPED):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # already waited for (watch saw it end)
            done = pid
        if done:
            UNREAPED.remove(pid)


atexit.register(reap, True)


def watch(pid, result_r, out_r, trace_r, paths, time_limit, on_message):
    reader, printed, stage = FrameReader(), bytearray(), "load"
    deadline = time.monotonic() + time_limit
    open_fds = [result_r, out_r]
    status = None

    def outcome(kind, **fields):
        return Outcome(kind, stage=stage, printed=drain(out_r, printed), **fields)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return outcome("timeout", where=trace_location(trace_r, paths))
        ready, _, _ = select.select(open_fds, [], [], min(left, 0.05))
        for fd in ready:
            data = os.read(fd, 1 << 16)
            if fd == out_r:
                if len(printed) < PRINTED_CAP * 4:
                    printed += data[:PRINTED_CAP * 4]
                if not data:
                    open_fds.remove(out_r)
                continue
            if not data:
                open_fds.remove(result_r)
            try:
                frames = reader.feed(data)
            except (ValueError, KeyError, struct.error) as e:
                return outcome("garbled", error={"message": f"unreadable ({e})"})
            for header, blobs in frames:
                if header["t"] == "loaded":
                    stage, deadline = "call", time.monotonic() + time_limit
                elif header["t"] == "message":
                    if on_message is not None:
                        on_message(decode(header["value"], blobs))
                        deadline = time.monotonic() + time_limit
                elif header["kind"] == "value":
                    return outcome("value", value=decode(header["value"], blobs))
                elif header["kind"] == "raised":
                    error = header["error"]
                    return outcome("exit" if error["type"] in ("sys.exit", "os._exit") else "raised", error=error)
                else:
                    return outcome("garbled", error={"message": header.get("message", "")})
        if result_r not in open_fds or not ready:
            if status is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                status = status if done else None
            if status is not None and (result_r not in open_fds or not select.select([result_r], [], [], 0)[0]):
                return outcome("died", status=ended_how(status))


def drain(fd, printed):
    """What is left in the output pipe (without waiting), then the text of it all, cut to PRINTED_CAP."""
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 1 << 16)
        if not data or len(printed) > PRINTED_CAP * 4:
            break
        printed += data
    text = printed.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= PRINTED_CAP else text[:PRINTED_CAP] + "\n..."


def trace_location(trace_r, paths):
    """The learner's line the child was at, from faulthandler's dump ("" if it did not come)."""
    text = b""
    while select.select([trace_r], [], [], 0.2 if not text else 0)[0]:
        data = os.read(trace_r, 1 << 16)
        if not data:
            break
        text += data
    wanted = {str(Path(p).resolve()) for p in paths}
    for match in re.finditer(r'File "(.+)", line (\d+)', text.decode("utf-8", errors="replace")):
        path, line = match.group(1), int(match.group(2))
        if str(Path(path).resolve()) in wanted:
            from exercises.checker import shown_path
            code = linecache.getline(path, line).strip()
            return f"{shown_path(path)} line {line}" + (f" (`{code}`)" if code else "")
    return ""


def ended_how(status):
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    return f"ended with exit status {os.waitstatus_to_exitcode(status)}"


# ----------------------------------------------------------------------------------------------------------------
# without fork: in this process, with a thread-based limit


class TimeLimit(BaseException):
    """Raised inside the learner's code when it runs too long (BaseException: `except Exception` won't eat it)."""


def run_here(job, paths, time_limit, on_message=None):
    """The fallback without os.fork: the job in this process (the learner's code is not isolated), stopped by an
    alarm in the main thread where there is one, else abandoned in a daemon thread."""
    class Here:
        stage = "load"

        def loaded(self):
            self.stage = "call"

        def send(self, value):
            if on_message is not None:
                blobs = []
                on_message(decode(encode(value, blobs), blobs))  # as it would have come through the pipe
    channel = Here()
    try:
        value = with_time_limit(job, time_limit, channel)
        blobs = []
        return Outcome("value", value=decode(encode(value, blobs), blobs), stage=channel.stage)
    except TimeLimit:
        return Outcome("timeout", stage=channel.stage)
    except BaseException as e:  # noqa: BLE001 -- the learner's code may raise anything; it is the verdict
        error = classify(e, paths)
        return Outcome("exit" if error["type"] == "sys.exit" else "raised", error=error, stage=channel.stage)


def with_time_limit(function, seconds, *args):
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def stop(signum, frame):
            raise TimeLimit()
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return function(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread below
            outcome["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeLimit()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
