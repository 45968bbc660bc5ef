"""``python -m pipeline_bridge.pipelines compile [--out DIR]``: write the compiled pipelines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline_bridge.pipelines.registry import PIPELINES

DEFAULT_OUT = Path("deploy/pipelines")


def main(argv: list[str] | None = None) -> int:
    """Compile every registered pipeline to ``DIR/<name>.yaml``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline_bridge.pipelines")
    commands = parser.add_subparsers(dest="command", required=True)
    compile_command = commands.add_parser("compile", help="write the compiled pipelines")
    compile_command.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    for definition in PIPELINES.values():
        path = definition.compile(args.out / f"{definition.name}.yaml")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
