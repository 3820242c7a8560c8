"""
python -m exercises                          every exercise and its state (not started, wrong, done)
python -m exercises check NAME               check exercises/NAME.py: exit 0 when it passes, 1 when not
python -m exercises check NAME --solutions   the same checks on exercises/solutions/NAME.py
python -m exercises train [--solutions]      your pieces as a GPT, trained next to babygpt's own (about a minute)
"""

import signal
import sys
from pathlib import Path

from babygpt import runner

if __name__ == "__main__":  # Ctrl-C while torch is still importing: "interrupted", not a traceback
    signal.signal(signal.SIGINT, runner.exit_quietly)

from babygpt.cli import Parser, UserError  # noqa: E402 -- after the Ctrl-C handler

from exercises import EXERCISES, NAMES, unknown_name_message  # noqa: E402


def parse(argv):
    parser = Parser(prog="python -m exercises", description="Write babygpt's pieces yourself "
                                     "and check them (see exercises/__init__.py).")
    parser.add_argument("command", nargs="?", default="list", help="list (the default), check or train")
    parser.add_argument("name", nargs="?", help="the exercise to check (check only)")
    parser.add_argument("--solutions", action="store_true", help="use exercises/solutions/ instead of your files")
    parser.add_argument("--dir", type=Path, help="use the exercise files in this folder instead")
    parser.add_argument("--iters", type=int, help="train: optimizer steps (default: about a minute's worth)")
    parser.add_argument("--data_dir", type=Path, help="train: the prepared data (default: data/shakespeare_char)")
    return parser.parse_args(argv)


def folder_of(args):
    here = Path(__file__).resolve().parent
    return args.dir or (here / "solutions" if args.solutions else here)


def one_thread():
    import torch
    torch.set_num_threads(1)  # tiny inputs: one thread is fastest, and steady on a busy machine


def list_exercises(folder):
    from exercises.checker import check, shown_path
    one_thread()
    results = [check(name, folder) for name in NAMES]
    print(f"babygpt exercises, in the walkthrough's order (files in {shown_path(folder)}/):")
    for i, ((name, step, what), result) in enumerate(zip(EXERCISES, results), 1):
        print(f"  {i:>2}. {name:<15} step {step}  {result.state:<12} {what}")
    done = sum(r.state == "done" for r in results)
    upcoming = next((r.name for r in results if r.state != "done"), None)
    print(f"{done} of {len(results)} done." + (f" Next: python -m exercises check {upcoming}" if upcoming else
                                              " All done: python -m exercises train"))
    return 0


def check_one(name, folder):
    if name is None:
        print(f"which exercise? python -m exercises check NAME, NAME one of: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    if name not in NAMES:
        print(unknown_name_message(name), file=sys.stderr)
        return 2
    from exercises.checker import check
    one_thread()
    result = check(name, folder)
    print(result.report())
    return 0 if result.state == "done" else 1


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command in NAMES and args.name is None:  # `python -m exercises block`: surely a check
        args.command, args.name = "check", args.command
    folder = folder_of(args)
    if args.dir is not None and not args.dir.is_dir():
        print(f"--dir {args.dir}: no such folder", file=sys.stderr)
        return 2
    if args.command == "list":
        return list_exercises(folder)
    if args.command == "check":
        return check_one(args.name, folder)
    if args.command == "train":
        if args.iters is not None and args.iters < 1:
            raise UserError(f"--iters must be at least 1 (optimizer steps), got {args.iters}")
        from exercises.yourgpt import train_both
        return train_both(folder, args.iters, args.data_dir)
    print(f"unknown command {args.command!r}: list, check NAME or train", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(runner.run(main))  # Ctrl-C, a closed pipe, a full disk: one line, never a traceback
