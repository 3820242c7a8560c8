"""
bench.py -- measurements that are not tests: speed, memory and time-to-loss. Prints a table, writes JSON.

    python bench.py throughput --preset cpu
    python bench.py time-to-loss --target 1.88 --presets classic,cpu
    python bench.py sample

Results with their commands and machines are kept in docs/experiments.md.
"""

import sys

from cli import Parser, UserError, run


def throughput(args):
    raise UserError("bench.py throughput is not written yet")


def time_to_loss(args):
    raise UserError("bench.py time-to-loss is not written yet")


def sample(args):
    raise UserError("bench.py sample is not written yet")


def main(argv=None):
    parser = Parser(prog="bench.py", description="Speed and time-to-loss measurements (not tests).")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("throughput", help="tokens/s, ms/iter, memory and FLOP/s of the training step")
    p.set_defaults(func=throughput)

    p = commands.add_parser("time-to-loss", help="wall time and tokens until val loss <= target, per preset")
    p.set_defaults(func=time_to_loss)

    p = commands.add_parser("sample", help="characters/s of generation, with and without the KV cache")
    p.set_defaults(func=sample)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run(main)
