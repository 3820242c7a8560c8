"""
Command-line plumbing shared by the scripts: dataclass fields become flags, TOML presets, one-line errors.

A user mistake (bad flag, missing file, impossible setting) must print one line saying what is wrong and how
to fix it, and exit with status 2 -- never a traceback. Scripts raise UserError for those and wrap main() in
run(). Unexpected errors (bugs) still show their traceback, because then we want to see it.
"""

import argparse
import dataclasses
import difflib
import inspect
import math
import os
import re
import sys
from pathlib import Path

from babygpt import versions  # noqa: F401 -- first: an unsupported Python or torch is refused in one line

PRESET_DIR = Path(__file__).resolve().parent.parent / "config"
FLOAT32_TINY, FLOAT32_MAX = 1.1754943508222875e-38, 3.4028234663852886e38  # float32's smallest normal, largest


try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (requirements.txt installs it there)
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None


class UserError(Exception):
    """Something the user can fix. Printed as `error: <message>`, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a flag is never guessed from its first letters (argparse would take --lr for
    --lr_decay_iters), a bad command line gives one line, not the usage block, and a misspelt flag gets
    "did you mean"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message):
        hint = config_file_hint(message) or self.did_you_mean(message) or message
        print(f"error: {hint} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def did_you_mean(self, message):
        """"unrecognized arguments: --temprature 0.5" gets "; did you mean --temperature?" (the closest flag)."""
        if not message.startswith("unrecognized arguments:"):
            return None
        known = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
        for word in message.split(":", 1)[1].split():
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and (close := difflib.get_close_matches(flag, known, n=1, cutoff=0.6)):
                return f"{message}; did you mean {close[0]}?"
        return None


def config_file_hint(message):
    """nanoGPT's habit, `python train.py config/train_shakespeare_char.py`: say how babygpt spells it."""
    match = re.match(r"unrecognized arguments: (\S+\.(?:py|toml))\b", message)
    if not match:
        return None
    stem, presets = Path(match.group(1)).stem, known_presets()
    guess = stem if stem in presets else (difflib.get_close_matches(stem, presets, n=1, cutoff=0.5) or ["cpu"])[0]
    return (f"babygpt uses --preset NAME (config/NAME.toml, one of {', '.join(presets)}), not a config file path; "
            f"did you mean --preset {guess}?")


BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def parse_bool(text):
    try:
        return BOOL_WORDS[str(text).lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected true/false (or 1/0), got {text!r}") from None


def known_presets():
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml") if p.is_file())


def preset_parser(prog, description, default_preset, defaults, argv):
    """A Parser with a --preset NAME flag, and the values its --help should show as the defaults: those of the
    preset named in argv, else of default_preset (what the run would use)."""
    shown = preset_named_in(argv) or default_preset
    parser = Parser(prog=prog, description=f"{description} Settings: the defaults < --preset < flags. The defaults "
                                           f"shown are --preset {shown}'s (--preset NAME --help shows another's).")
    parser.add_argument("--preset", metavar="NAME", help=f"read config/NAME.toml before the flags: one of "
                                                         f"{', '.join(known_presets())} (default: {default_preset})")
    return parser, {**defaults, **load_preset(shown, defaults)}


def preset_named_in(argv):
    """The NAME of `--preset NAME` (or --preset=NAME) in argv, read before parsing so that --help can show that
    preset's values; None if absent or unknown."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    names = [following for arg, following in zip(argv, argv[1:]) if arg == "--preset"]
    names += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--preset=")]
    known = [name for name in names if name in known_presets()]
    return known[-1] if known else None


def field_comments(cls):
    """{field name: its trailing # comment} read from the dataclass source, so the help text lives in one place."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments


def add_dataclass_flags(parser, cls, title, skip=(), shown=None):
    """One --flag per field of dataclass `cls`, typed by its default. Defaults are SUPPRESSed so that the
    parsed namespace holds only the flags the user actually typed (presets and resume depend on that).
    `shown`: the values --help should call the defaults (a preset's), if not the dataclass's own."""
    group = parser.add_argument_group(title)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = type(f.default)
        value = (shown or {}).get(f.name, f.default)
        if isinstance(value, str) and value != value.strip():
            value = repr(value)  # e.g. '\n', not a line break
        help_text = comments.get(f.name, "") + ("" if value == "" else f" (default: {value})")
        if kind is bool:  # --flag, --flag 1, --flag=false
            group.add_argument(f"--{f.name}", type=parse_bool, nargs="?", const=True, default=argparse.SUPPRESS,
                               metavar="BOOL", help=help_text)
        else:
            group.add_argument(f"--{f.name}", type=kind, default=argparse.SUPPRESS, metavar=kind.__name__.upper(),
                               help=help_text)


def load_preset(name, allowed_fields):
    """Read config/NAME.toml: a flat table of field = value. Unknown keys and wrong types are errors. A
    `note` is not a setting: it is the line train.py prints as the run starts (preset_note)."""
    values = read_preset(name)
    values.pop("note", None)
    for key, value in values.items():
        if key not in allowed_fields:
            raise UserError(f"{PRESET_DIR / name}.toml: unknown setting {key!r}")
        expected = type(allowed_fields[key])
        if expected is float and type(value) is int:
            values[key] = float(value)
        elif type(value) is not expected:
            raise UserError(f"{PRESET_DIR / name}.toml: {key} should be {expected.__name__}, got {value!r}")
    return values


def preset_note(argv):
    """The `note` of the preset named in argv (what to expect of the run, such as its wall time), or None."""
    name = preset_named_in(argv)
    note = read_preset(name).get("note") if name else None
    if note is not None and not isinstance(note, str):
        raise UserError(f"{PRESET_DIR / name}.toml: note should be text, got {note!r}")
    return note


def read_preset(name):
    """config/NAME.toml as a dict; a missing file or bad TOML is one line."""
    path = PRESET_DIR / f"{name}.toml"
    if not os.path.lexists(path):
        raise UserError(f"unknown preset {name!r}; known presets: {', '.join(known_presets())}")
    if not path.is_file():  # a folder, a FIFO (reading it would wait forever), a device, a broken link
        raise UserError(f"preset file {path} is not a regular file")
    if tomllib is None:
        raise UserError("reading a preset on Python 3.10 needs the tomli package: pip install tomli")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: {e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start}); a preset is a UTF-8 TOML file") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def check_preset_agrees(preset, preset_values, saved, flags):
    """`python train.py --preset cpu ... --resume` (the first command again, with --resume): fine when the preset
    says what the saved run was trained with; otherwise name the first setting that differs. Flags may still
    change a setting on resume, so a setting given as a flag is not compared."""
    for name, value in preset_values.items():
        if name not in flags and saved.get(name) != value:
            raise UserError(f"--preset {preset} sets {name} = {value}, but the run being resumed was trained with "
                            f"{name} = {saved.get(name)}; leave out --preset to resume with the run's own settings")


def check_fields(settings, positive=(), non_negative=(), choices=None, unit_interval=(), above_zero=(),
                 folders=(), device=False, seed=False, schedule=False):
    """The common checks of a settings dataclass, each failure a one-line ValueError naming the field: no NaN or
    infinity anywhere, counts at least 1, sizes not negative, words from a fixed list, betas in [0, 1), rates
    above zero, folder names not empty ('' is an unset shell variable, not the working folder); with device=True
    a device name, with seed=True a seed that fits torch's 64 bits (train.py evaluates with seed + 1), with
    schedule=True a learning-rate schedule that decays (min_lr not above the peak, no decay ending in warmup)."""
    for name, value in vars(settings).items():  # nan passes every < and > test below, so refuse it first
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    for name in positive:
        if getattr(settings, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(settings, name)}")
    for name in non_negative:
        if getattr(settings, name) < 0:
            raise ValueError(f"{name} must not be negative, got {getattr(settings, name)}")
    for name, allowed in (choices or {}).items():
        if "on" in allowed and str(getattr(settings, name)).lower() in BOOL_WORDS:  # --compile=False, --compile 1
            setattr(settings, name, "on" if BOOL_WORDS[str(getattr(settings, name)).lower()] else "off")
        if getattr(settings, name) not in allowed:
            raise ValueError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {getattr(settings, name)!r}")
    for name in unit_interval:
        if not 0 <= getattr(settings, name) < 1:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(settings, name)}")
    for name in above_zero:
        if not getattr(settings, name) > 0:
            raise ValueError(f"{name} must be positive, got {getattr(settings, name)}")
    for name in folders:
        if getattr(settings, name) == "":
            raise ValueError(f"{name} is empty; name a folder")
    if device and not (settings.device in ("auto", "cpu", "mps", "cuda") or settings.device.startswith("cuda:")):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {settings.device!r}")
    if seed and not -2**63 <= settings.seed < 2**63 - 1:
        raise ValueError(f"seed must fit in a signed 64-bit integer, got {settings.seed}")
    if schedule and settings.min_lr > settings.learning_rate:
        raise ValueError(f"min_lr ({settings.min_lr:g}) is above learning_rate ({settings.learning_rate:g}): the "
                         f"decay would raise the rate; give a --min_lr below the peak")
    if schedule and 0 < settings.lr_decay_iters < settings.warmup_iters:
        raise ValueError(f"lr_decay_iters ({settings.lr_decay_iters}) ends inside warmup_iters ({settings.warmup_iters}):"
                         f" the rate would jump to min_lr mid-warmup; give a larger --lr_decay_iters (0: the whole run)")


MAX_STEPS, MAX_THREADS, MAX_SEED = 10**9, 1024, 2**62  # the lessons' bounds: past them, nothing sensible runs


def check_range(flag, value, low, high):
    """A lesson's number flag: one line unless low <= value <= high (NaN is in no range)."""
    if value != value:
        raise UserError(f"--{flag} must be a number, got {value}")
    if value < low:
        raise UserError(f"--{flag} must be at least {low}, got {value}")
    if value > high:
        raise UserError(f"--{flag} must be at most {high:,}, got {value}")


def check_output_file(flag, path):
    """A figure a script will write: an image name whose folder exists, or the save ends in a traceback."""
    if Path(path).suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise UserError(f"--{flag} {path!r}: name a .png, .pdf, .svg or .jpg file")
    folder = Path(path).parent
    if not folder.is_dir():
        raise UserError(f"--{flag} {path}: the folder {folder} does not exist; create it first")


def float32_problem(values):
    """A float setting that passes a range check can still vanish in float32, the precision the model computes
    in: 1e-320 becomes 0 (a learning rate of 0 never learns), 1e39 becomes infinity. The message, or None."""
    for name, value in values.items():
        if type(value) is float and value and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
            return f"{name} is {value:g}, which float32 cannot hold (it keeps {FLOAT32_TINY:.2g} to {FLOAT32_MAX:.2g})"
    return None


def type_problem(cls, values):
    """A value of the wrong type for its field (a hand-edited checkpoint's n_layer 4.5 or "4", or true for an
    int), the message, or None. An int is fine where a float is expected."""
    for f in dataclasses.fields(cls):
        if f.name in values:
            expected, value = type(f.default), values[f.name]
            if not (type(value) is expected or (expected is float and type(value) is int)):
                return f"{f.name} should be {expected.__name__}, got {value!r}"
    return None


def build(cls, values, what):
    """cls(**values), with a validation failure in __post_init__ turned into a UserError."""
    if problem := type_problem(cls, values) or float32_problem(values):
        raise UserError(f"{what}: {problem}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise UserError(f"{what}: {e}") from None
