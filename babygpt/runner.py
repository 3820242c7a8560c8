"""
runner.py -- how a script runs as a program: a user mistake (UserError) is one line and exit status 2, Ctrl-C is
"interrupted" and 130, a closed or full standard output is one line, never a traceback; and the run's folder
locks are dropped when it ends. Each script calls run(main) on its last line. Unexpected errors (bugs) still
show their traceback, because then we want to see it. Only the standard library.
"""

import errno
import io
import os
import signal
import sys
from pathlib import Path

from babygpt import locks
from babygpt.cli import UserError


def exit_quietly(signum, frame):
    """Ctrl-C while a script is still importing (torch takes a second or two): no traceback, exit status 130.
    Each script installs it in its first lines, when it runs as the program:
        signal.signal(signal.SIGINT, exit_quietly)
    and run() hands Ctrl-C back to Python (KeyboardInterrupt) once main() starts."""
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(130)


def run(main, argv=None):
    """Call main(argv); turn UserError and Ctrl-C into one line and an exit status. A standard output
    that is closed (`>&-`) or cannot take more (`> /dev/full`) is one line too, and the exit status 2;
    what was written to disk before stays."""
    if signal.getsignal(signal.SIGINT) is exit_quietly:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    plug_closed_streams()
    stdout = sys.stdout
    try:
        if stdout is None:
            raise UserError("standard output is closed (>&-); send it to a file or to /dev/null instead")
        sys.stdout = StandardOutput(stdout)
        result = main(argv)
        sys.stdout.flush()  # what is still in the buffer fails here, not in the interpreter's exit
        return result
    except UserError as e:
        print(shown(f"error: {e}"), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `python sample.py | head`
        sys.exit(0)
    except OutputError as e:
        print(f"error: cannot write to standard output: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a path of more than 255 bytes in one name: any entry point, any path, one line
        if e.errno != errno.ENAMETOOLONG:
            raise
        print(shown(f"error: {e.filename}: {e.strerror} (a name in a path may have at most 255 bytes)"),
              file=sys.stderr)
        sys.exit(2)
    finally:
        if isinstance(sys.stdout, StandardOutput):
            sys.stdout = stdout
        locks.release_locks()  # the run's out_dir and data locks


def plug_closed_streams():
    """With stderr closed (`2>&-`) Python has no sys.stderr, and print(file=sys.stderr) writes to stdout:
    the status lines would mix with a script's output. Or descriptor 2 was taken since by a file opened
    for reading (a launcher script's): writing fails. Either way they go to /dev/null instead."""
    if sys.stderr is None or not writable(sys.stderr):
        sys.stderr = open(os.devnull, "w")
    # a character the terminal's encoding lacks (PYTHONIOENCODING=ascii, a C locale) is printed as \xe9,
    # never a UnicodeEncodeError in the middle of a run
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def writable(stream):
    try:
        import fcntl  # POSIX; elsewhere, trust the stream
        mode = fcntl.fcntl(stream.fileno(), fcntl.F_GETFL) & os.O_ACCMODE
    except (ImportError, ValueError, AttributeError, io.UnsupportedOperation):  # no descriptor (a test's)
        return True
    except OSError:  # EBADF: closed
        return False
    return mode in (os.O_WRONLY, os.O_RDWR)


def shown(text):
    """Text that any stream can print: a byte of a file name that is not UTF-8 (which Python hands over as a
    lone surrogate) is spelled \\xff, as the shell would show it."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


class OutputError(Exception):
    """The standard output cannot be written (a full disk, /dev/full, an I/O error)."""


class StandardOutput:
    """sys.stdout while run() runs a script: the same stream, but a failed write is an OutputError, told
    apart from the OSErrors of the files a script reads and writes. Descriptor 1 then points at
    /dev/null, so that the interpreter's last flush at exit does not fail (and print) again."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):  # isatty, fileno, encoding, buffer ...: the stream's own
        return getattr(self.stream, name)

    def write(self, text):
        try:
            return self.failing_safely(self.stream.write, text)
        except UnicodeEncodeError:  # a file name that is not UTF-8, on a strict stream
            return self.failing_safely(self.stream.write, shown(text))

    def flush(self):
        return self.failing_safely(self.stream.flush)

    def failing_safely(self, method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self.stream.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):
                pass
            raise OutputError(e.strerror or str(e)) from None


def standard_input():
    """sys.stdin, or one line when it is closed (`<&-`: Python then has no sys.stdin)."""
    if sys.stdin is None:
        raise UserError("standard input is closed (<&-); type the prompts in a terminal or pipe them in")
    return sys.stdin


def outlive_a_closed_pipe(out_dir):
    """`python train.py | head -1`: when the reader of standard output goes away, a training keeps training
    (and saving), with one line on stderr, instead of stopping at its next print. Under run only (which
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
