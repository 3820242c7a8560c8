"""
locks.py -- decides who may use a folder at once: one training per out_dir, and no prepare.py into a data folder
that a training reads. A lock file (FOLDER/.babygpt.lock) holds its holders' pids and commands, so the one
refused is told who holds it. Only the standard library.
"""

import errno
import os
import sys
from pathlib import Path

from babygpt.cli import UserError

try:
    import fcntl  # POSIX; on Windows there is no lock (a second run there is the user's business)
except ImportError:  # pragma: no cover
    fcntl = None


LOCK_NAME = ".babygpt.lock"


_HELD = {}  # resolved folder -> (file descriptor, exclusive): this process's locks (re-entrant within a process)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def live_holders(fd):
    """The lines "pid N (command)" of the lock file whose process is still alive and is not this one: a line
    left by a process that died (kill -9 gives it no chance to clean up) is stale and dropped."""
    try:
        text = os.pread(fd, 1 << 16, 0).decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "pid" and parts[1].isdigit() and int(parts[1]) != os.getpid() \
                and pid_alive(int(parts[1])):
            lines.append(line.strip())
    return lines


def lock_folder(folder_path, exclusive, busy_hint):
    """Take FOLDER/.babygpt.lock: exclusive (a training's out_dir, a prepare's data folder) or shared (a data
    folder a training reads). The file holds the holder's pid and command. flock() locks belong to the open file
    and the kernel drops them when the process dies -- kill -9 included -- so a lock file left behind by a dead
    process is stale by construction and is simply taken over. A folder we cannot write (a read-only data set)
    cannot be locked, and nothing can prepare into it either: then reading goes on without a lock."""
    if fcntl is None:
        return
    key = os.path.realpath(folder_path)
    held = _HELD.get(key)
    if held and (held[1] or not exclusive):
        return  # this process already holds it (tests run several trainings in one process, one after another)
    lock_path = Path(folder_path) / LOCK_NAME
    try:
        fd = held[0] if held else os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if exclusive:
            raise UserError(f"cannot write to {folder_path}: {e.strerror}") from None
        return
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            return  # a filesystem without locks (some network mounts): go on unguarded
        holders = "; ".join(live_holders(fd)) or "another process"
        if not held:
            os.close(fd)
        raise UserError(f"{folder_path} is in use by {holders}; {busy_hint}") from None
    _HELD[key] = (fd, exclusive)
    note = "\n".join(([] if exclusive else live_holders(fd)) + [holder_line()]) + "\n"  # readers: each named
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode("utf-8", errors="backslashreplace")[:1 << 15], 0)
    except OSError:
        pass  # the lock holds even if the note cannot be written


def holder_line():
    """ "pid N (python train.py ...)": the command line of any bytes (a file name that is not UTF-8 comes
    in as lone surrogates, which plain .encode() refuses), cut to 200 characters (an ellipsis says so), on
    one line."""
    command = " ".join(["python", *sys.argv])
    command = command.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    command = command.replace("\n", " ").replace("\r", " ")
    return f"pid {os.getpid()} ({command if len(command) <= 200 else command[:199] + '…'})"


def lock_data_dir(data_dir, exclusive):
    """prepare.py holds DATA_DIR's lock alone; a training shares it while it reads the folder."""
    hint = ("let the training finish (or stop it) before preparing into this folder, or use another --out_dir"
            if exclusive else "wait for prepare.py to finish")
    lock_folder(data_dir, exclusive, hint)


def unlock_folder(folder_path):
    """Drop this process's lock on one folder (prepare.py, when its files are in place)."""
    held = _HELD.pop(os.path.realpath(folder_path), None)
    if held:
        os.close(held[0])


def release_locks():
    """Drop every lock this process holds (the end of a run; process exit does the same)."""
    for fd, _ in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()
