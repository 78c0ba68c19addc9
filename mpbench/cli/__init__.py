"""The ``mpbench`` command: a thin layer over library functions, one module per subcommand.

Each ``mpbench/cli/<command>.py`` defines ``add_parser(subparsers)`` which registers the
subcommand and sets ``func`` to a function ``(args) -> int``. User errors print one line and
exit 2; nothing else is caught, so real bugs keep their traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mpbench.errors import Interrupted, UserError

COMMANDS = ("list", "flops", "run", "status", "report", "compare", "analyze", "bench", "evaluate",
            "sync_tracking")


def build_parser() -> argparse.ArgumentParser:
    from mpbench import __version__

    parser = argparse.ArgumentParser(prog="mpbench", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"mpbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mpbench.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"mpbench.cli.{name}":
                raise
            continue  # subcommand not built yet
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mpbench {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:  # SIGTERM / SIGUSR1: checkpointed at a batch boundary
        print(f"mpbench {args.command}: {exc.args[0]}: checkpoint saved; rerun the same command "
              f"to resume", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mpbench {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
