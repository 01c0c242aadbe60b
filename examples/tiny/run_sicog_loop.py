#!/usr/bin/env python
"""The README's first command: the tiny end-to-end SICOG loop on the embedded default.

    python examples/tiny/run_sicog_loop.py [--dpo] [--scaling] [--fresh] [--output-dir runs/tiny] [--seed N]

Settings: examples/tiny/config.json. Each stage runs one of the project's
command-line tools; all commands are collected in <output>/commands.sh.
"""
import sys

from megatron_sicog.loop import main

if __name__ == "__main__":
    sys.exit(main())
