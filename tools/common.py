"""
What the measuring tools share: their command-line checks, the preset names, peak memory and the JSON output.

A tool's flags go through babygpt.cli's Parser (a bad value is one line and exit status 2, as in the scripts);
the counts are ranged so that 0, a negative number or 10**30 is refused before anything runs.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from babygpt import files
from babygpt.cli import Parser, UserError, load_preset
from babygpt.runner import shown
from babygpt.tokenizer import read_meta


class ToolParser(Parser):
    """cli.Parser, and a value that is not UTF-8 (a stray byte in the command line) is refused in one line: the
    tools print and write their arguments, which such a value cannot pass through."""

    def parse_args(self, args=None, namespace=None):
        for arg in sys.argv[1:] if args is None else args:
            try:
                str(arg).encode("utf-8")
            except UnicodeEncodeError:  # Python holds the byte 0xff of a command line as the surrogate \udcff
                self.error(f"'{shown(str(arg))}' is not UTF-8 text")
        return super().parse_args(args, namespace)


def count(low, high):
    """An argparse type: a whole number from low to high (what one tool flag may ask for)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low:,} to {high:,}, got {value:,}")
        return value

    parse.__name__ = "count"  # argparse names the type in its messages
    return parse


def file_name(text):
    """An argparse type: a path that is not empty (where a result is written)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    return text


def output(kind, optional=False):
    """An argparse type: a file to write results into, as `kind` ("json" or "png"), checked before anything
    runs (files.output_file: never a device, a link or a file of another kind). The tools' own result folders,
    out*/ (git-ignored), are made when missing; anywhere else the folder must exist. optional: '' means none."""

    def parse(text):
        if not text and optional:
            return ""
        if not text:
            raise argparse.ArgumentTypeError("expected a file name, got ''")
        parts = Path(text).parts
        try:
            return str(files.output_file(text, kind, make_folder=bool(parts) and parts[0].startswith("out")))
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = f"{kind} file"
    return parse


def finite(text):
    """An argparse type: a finite number (no nan, no infinity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def preset_names(text, defaults):
    """The comma-separated preset names of a flag, each one of config/*.toml (else the scripts' one line)."""
    names = text.split(",")
    for name in names:
        load_preset(name, defaults)
    return names


def data_meta(data_dir):
    """The prepared data's meta.json, checked (train.load_split relies on it); a missing or bad one is one line."""
    try:
        return read_meta(data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None


def peak_memory_mb(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    try:
        import resource  # Unix only: Windows has no peak-RSS call in the standard library
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # of the whole process
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, Linux KiB


def write_json(path, result, log=None):
    """result as indented JSON at path (its folder made), and a `wrote PATH` line on log (default: stdout)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    print(f"wrote {path}", file=log or sys.stdout)
