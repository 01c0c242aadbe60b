#!/usr/bin/env python
"""Train and export the tiny demo's pretrained base model (``make base-model``): see megatron_sicog/demo_base.py.

    python tools/make_base_model.py [--output-dir examples/tiny/base] [--work-dir runs/base_model]
"""
from megatron_sicog.demo_base import main

if __name__ == "__main__":
    main()
