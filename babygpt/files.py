"""
files.py -- decides what may be read and how a file is written, so that a hostile world (full disks, special
files, a crash mid-write) never loses work or ends in a traceback. Only the standard library: prepare.py stays
free of torch.

    regular_file(path, what)       a file we are about to read must be a regular file (not a folder, FIFO, device,
                                   symlink loop); one line saying which, never a hang or a traceback
    folder(path, what)             the same for a folder we read from
    write_atomically(path, write)  temporary name in the same folder, fsync, rename: the old file or the new one,
                                   never half of one; every failure (OSError, torch's RuntimeError on a full disk)
                                   becomes one WriteError line, and the temporary file is removed if it can be
    fresh_folder, remove_folder    prepare.py's staging folder (a new data set is written whole before it is
                                   swapped in)
    file_checksum(path)            a cheap CRC-32 of a data file, recorded by prepare.py and checked by train.py
    verify_split(data_dir, split)  train.bin or val.bin checked against meta.json's size and checksum
    read_text_tail(path, n_bytes)  the end of a prompt file, without reading the rest
"""

import errno
import json
import os
import shutil
import stat
import zlib
from pathlib import Path

from babygpt.cli import UserError


class WriteError(Exception):
    """A file could not be written; the previous version of it (if any) is untouched."""


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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROJECT = Path(__file__).resolve().parent.parent  # the folder of train.py, sample.py, data/ and config/


def elsewhere_hint(path, flag):
    """A relative default (data/shakespeare_char, out) missing here but present in the project's folder: the
    user ran a script from another folder (cd docs && python ../train.py). Say where it is, or None."""
    path = Path(path)
    if path.is_absolute() or os.path.lexists(path) or not os.path.lexists(PROJECT / path):
        return None
    there = os.path.relpath(PROJECT / path)
    there = there if there.count("..") <= 2 else str(PROJECT / path)
    return (f"{path} is relative to this folder ({Path.cwd()}); the project's is at {there}: run from the project "
            f"folder or pass {flag} {there}")


def output_file(path, kind, what="output file", make_folder=False):
    """Check, before any work, that PATH may be written as a `kind` file ("png" or "json"), and return it. What
    is there must be nothing, or a regular file of that kind: never a device, FIFO, socket or symbolic link (an
    atomic write would rename a PNG over it), nor another program's file or babygpt's own (a checkpoint, a .bin,
    metrics.jsonl: it is what is in the file that counts, not its name). A missing folder is refused, not made,
    unless make_folder (a tool's own default folder). Every refusal is one line."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:  # ENAMETOOLONG, ENOTDIR (a file where a folder should be), EACCES, ELOOP ...
        raise UserError(f"cannot write {what} {path}: {e.strerror}") from None
    except ValueError as e:  # a NUL character
        raise UserError(f"cannot write {what} {str(path)!r}: {e}") from None
    if mode is None:
        if not make_folder and not path.parent.is_dir():
            raise UserError(f"cannot write {what} {path}: folder {path.parent} does not exist")
        return path
    if stat.S_ISLNK(mode):
        raise UserError(f"{what} {path} is a symbolic link: it is not replaced; name a new file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{what} {path} is {kind_of(mode)}, not a regular file: it is not replaced")
    if not holds_kind(path, kind):
        raise UserError(f"{what} {path} already holds something other than {kind.upper()} ({describe_file(path)}): "
                        f"it is not replaced; name a new .{kind} file")
    return path


def holds_kind(path, kind):
    """Whether the regular file at path is empty or a file of that kind (a PNG by its signature, JSON parsed)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
            if not head:
                return True
            if kind == "png":
                return head == PNG_SIGNATURE
            f.seek(0)
            json.loads(f.read(64 << 20).decode("utf-8"))
            return True
    except (OSError, ValueError):
        return False


def describe_file(path):
    """A few words on what a file holds, for a refusal: a checkpoint is a zip archive (torch.save)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return "unreadable"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive: a checkpoint?"
    if head.startswith(PNG_SIGNATURE[:4]):
        return "a PNG"
    return "other data"


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
    if os.path.lexists(path) and not stat.S_ISREG(mode := os.lstat(path).st_mode):  # never renamed over
        what = "a symbolic link" if stat.S_ISLNK(mode) else kind_of(mode)
        raise WriteError(f"could not write {path}: it is {what}, not a regular file (it is not replaced)")
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
