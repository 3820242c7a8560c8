"""
guards.py -- the rules that keep a hostile world (full disks, special files, two runs at once, absurd sizes) from
losing work or ending in a traceback. Skip on a first read: prepare.py, train.py and checkpoint.py call these in
one line each. Only the standard library: prepare.py stays free of torch.

    regular_file(path, what)       a file we are about to read must be a regular file (not a folder, FIFO, device,
                                   symlink loop); one line saying which, never a hang or a traceback
    folder(path, what)             the same for a folder we read from
    write_atomically(path, write)  temporary name in the same folder, fsync, rename: the old file or the new one,
                                   never half of one; every failure (OSError, torch's RuntimeError on a full disk)
                                   becomes one WriteError line, and the temporary file is removed if it can be
    FolderLock                     a lock file holding its holder's pid: a second training into a busy out_dir, or
                                   a prepare into a data folder that a training reads, fails with one line naming
                                   the other process
    lock_data_dir(path, exclusive) the same lock on a data folder: prepare.py alone, trainings shared
    fresh_folder, remove_folder    prepare.py's staging folder (a new data set is written whole before it is
                                   swapped in)
    file_checksum(path)            a cheap CRC-32 of a data file, recorded by prepare.py and checked by train.py
    verify_split(data_dir, split)  train.bin or val.bin checked against meta.json's size and checksum
    available_memory()             bytes this process may still allocate (free RAM, cgroup and ulimit -v limits)
"""

import errno
import json
import os
import shutil
import stat
import sys
import zlib
from pathlib import Path

from babygpt.cli import StandardOutput, UserError

try:
    import fcntl  # POSIX; on Windows there is no lock (a second run there is the user's business)
except ImportError:  # pragma: no cover
    fcntl = None

LOCK_NAME = ".babygpt.lock"
GB = 1024**3


class WriteError(Exception):
    """A file could not be written; the previous version of it (if any) is untouched."""


def gigabytes(n_bytes):
    return f"{n_bytes / GB:.1f} GB"


# ----------------------------------------------------------------------------------------------------------------
# reading: regular files only


def kind_of(mode):
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def stat_or_explain(path, what):
    """os.stat(path), or a UserError that says why not: not found, a symlink loop, permission denied..."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except OSError as e:  # ELOOP (a symlink loop), EACCES, ENOTDIR (a file where a folder should be) ...
        reason = "a symbolic link loop" if e.errno == errno.ELOOP else e.strerror
        raise UserError(f"cannot read {what} {path}: {reason}") from None
    except ValueError as e:  # a NUL character in the path
        raise UserError(f"cannot read {what} {str(path)!r}: {e}") from None


def regular_file(path, what="file"):
    """Path(path) if it is a regular file (symlinks followed). A FIFO would block the read forever, /dev/zero
    would never end, a folder raises IsADirectoryError: all are refused here with one line."""
    mode = stat_or_explain(path, what).st_mode
    if not stat.S_ISREG(mode):
        raise UserError(f"{what} {path} is {kind_of(mode)}, not a regular file")
    return Path(path)


def folder(path, what="folder"):
    mode = stat_or_explain(path, what).st_mode
    if not stat.S_ISDIR(mode):
        raise UserError(f"{what} {path} is {'a file' if stat.S_ISREG(mode) else kind_of(mode)}, not a folder")
    return Path(path)


# ----------------------------------------------------------------------------------------------------------------
# writing: atomically, every failure one line


def discard(path):
    """Remove a temporary file if we can. On a disk that turned read-only even that fails (EROFS): then there is
    nothing more to do, and the real error is the one to report."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass


def write_failure(e):
    """Why a write failed, in words. torch.save reports a full disk as `RuntimeError: ... unexpected pos ...`."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    what = str(e) if isinstance(e, OSError) else type(e).__name__  # numpy: "1003854 requested and 50000 written"
    return f"the write failed ({what}); is the disk full or the file larger than `ulimit -f` allows?"


def write_atomically(path, write):
    """Call write(binary_file) on PATH.tmp, flush it to the disk, then rename it over PATH (atomic on POSIX and
    Windows). A crash or a full disk at any moment leaves either the old file or the new one. Raises WriteError
    for anything the disk can do; a Ctrl-C mid-write removes the temporary file and goes on as KeyboardInterrupt."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on the disk before the name points at them
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 -- OSError, torch's RuntimeError, zipfile errors: all mean "not written"
        discard(tmp)
        raise WriteError(f"could not write {path}: {write_failure(e)}") from None
    except BaseException:
        discard(tmp)
        raise
    return path


def fresh_folder(path):
    """An empty folder at PATH, whatever was there (a leftover of a killed run, a file in the way). Raises
    OSError if it cannot be made."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    path.mkdir()
    return path


def remove_folder(path):
    """Remove a temporary folder if we can (see discard)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        discard(path)


def sync_folder(path):
    """Flush a folder's renames to the disk (POSIX; elsewhere, and on failure, nothing to do)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------------------
# locks: one writer per out_dir, no prepare into a data folder that is being read


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
    in as lone surrogates, which plain .encode() refuses), cut to 200 characters, on one line."""
    command = " ".join(["python", *sys.argv])
    command = command.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    command = command.replace("\n", " ").replace("\r", " ")
    return f"pid {os.getpid()} ({command[:200]})"


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


# ----------------------------------------------------------------------------------------------------------------
# data files: a cheap checksum


CHECKSUM_BLOCK = 1 << 20  # 1 MiB
CHECKSUM_BLOCKS = 64  # files up to 64 MiB are read whole; larger ones in 64 evenly spaced 1 MiB blocks


def file_checksum(path):
    """CRC-32 of the file (of 64 evenly spaced 1 MiB blocks for a file over 64 MiB: milliseconds either way).
    Not a defence against an attacker (that is what the size and id checks and weights_only are for), but it
    catches a train.bin from another prepare, or one cut short or half rewritten."""
    size = os.path.getsize(path)
    crc = 0
    with open(path, "rb") as f:
        if size <= CHECKSUM_BLOCK * CHECKSUM_BLOCKS:
            while block := f.read(CHECKSUM_BLOCK):
                crc = zlib.crc32(block, crc)
        else:
            step = (size - CHECKSUM_BLOCK) // (CHECKSUM_BLOCKS - 1)
            for i in range(CHECKSUM_BLOCKS):
                f.seek(i * step)
                crc = zlib.crc32(f.read(CHECKSUM_BLOCK), crc)
    return f"crc32:{crc:08x}"


def verify_split(data_dir, split):
    """DATA_DIR/{split}.bin, checked against meta.json before train.py maps it: a regular file of whole uint16
    tokens, of the size meta.json records, with the checksum it records (prepare.py from before checksums
    recorded only the token counts). Returns its path."""
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.bin"
    if not os.path.lexists(path):
        raise UserError(f"{path} not found: run `python prepare.py --out_dir {data_dir}` first")
    regular_file(path, "data file")
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))  # already validated by read_meta
    size, again = path.stat().st_size, f"run prepare.py again for {data_dir}"
    if size % 2:
        raise UserError(f"{path} has an odd size ({size:,} bytes) but holds 2-byte tokens: it is damaged; {again}")
    if size != 2 * meta[f"{split}_tokens"]:
        raise UserError(f"{path} holds {size // 2:,} tokens but meta.json says {meta[f'{split}_tokens']:,} (cut short, "
                        f"or from another prepare); {again}")
    entry = meta["files"].get(f"{split}.bin") if isinstance(meta.get("files"), dict) else None
    recorded = entry.get("checksum") if isinstance(entry, dict) else None
    if recorded and file_checksum(path) != recorded:
        raise UserError(f"{path} does not match the checksum in meta.json (changed since prepare.py wrote it); {again}")
    return path


# ----------------------------------------------------------------------------------------------------------------
# memory: what can still be allocated


def available_memory():
    """Bytes this process can still allocate: the smallest of the free RAM (MemAvailable), the cgroup's limit
    (containers) and `ulimit -v`. None if none of them can be read (then nothing is refused)."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            limits.append(max(0, int(text) - used))
    except (OSError, ValueError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(0, soft - virtual_memory_used()))
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else None


def virtual_memory_used():
    """This process's address space now (what `ulimit -v` counts)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_memory(needed, what, cure):
    """Refuse, before allocating, what cannot fit: one line with the number it would need."""
    available = available_memory()
    if available is not None and needed > available:
        raise UserError(f"{what} needs about {gigabytes(needed)} of memory but only {gigabytes(available)} is "
                        f"available; {cure}")


# ----------------------------------------------------------------------------------------------------------------
# sizes that scale memory or time, and the standard streams


GENERATOR_BYTES = 4 << 10  # one torch.Generator: a Mersenne Twister's 2.5 KB state and its object (2.7 KB measured)


def check_accumulation(micro_steps):
    """train.py keeps one random stream (a torch.Generator) per micro-batch of a step, so that a resumed run draws
    the same batches: a billion accumulation steps would need terabytes before the first step."""
    check_memory(micro_steps * GENERATOR_BYTES, f"gradient_accumulation_steps {micro_steps:,} (a random stream "
                 f"per micro-batch)", "use fewer --gradient_accumulation_steps and a larger --batch_size")


def read_text_tail(path, n_bytes):
    """The last n_bytes of a UTF-8 text file, decoded; a character cut in two at the start is dropped. A prompt
    file of 50 MB costs what its tail costs (only the last block_size tokens of a prompt are read by the model).
    Newlines as read_text gives them (\r\n and \r become \n); raises OSError or UnicodeDecodeError as it would."""
    with open(path, "rb") as f:
        start = max(0, f.seek(0, os.SEEK_END) - n_bytes)
        f.seek(start)
        data = f.read(n_bytes)
    if start:
        cut = 0
        while cut < min(3, len(data)) and data[cut] & 0xC0 == 0x80:  # 10xxxxxx: inside a character
            cut += 1
        data = data[cut:]
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def standard_input():
    """sys.stdin, or one line when it is closed (`<&-`: Python then has no sys.stdin)."""
    if sys.stdin is None:
        raise UserError("standard input is closed (<&-); type the prompts in a terminal or pipe them in")
    return sys.stdin


def outlive_a_closed_pipe(out_dir):
    """`python train.py | head -1`: when the reader of standard output goes away, a training keeps training
    (and saving), with one line on stderr, instead of stopping at its next print. Under cli.run only (which
    puts the stream back when main returns); a full disk or a closed descriptor stays an error."""
    if type(sys.stdout) is StandardOutput:
        sys.stdout = PipeTolerantOutput(sys.stdout.stream, Path(out_dir) / "metrics.jsonl")


class PipeTolerantOutput(StandardOutput):
    """Standard output whose closed pipe (EPIPE) sends the rest to /dev/null, said once on stderr."""

    def __init__(self, stream, metrics_path):
        super().__init__(stream)
        self.metrics_path = metrics_path

    def failing_safely(self, method, *args):
        try:
            return super().failing_safely(method, *args)
        except BrokenPipeError:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
            print(f"standard output closed: training goes on, see {self.metrics_path}", file=sys.stderr, flush=True)
            return super().failing_safely(method, *args)
