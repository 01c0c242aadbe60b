"""Runs one in-process step of a graph as a program (how a scheduler runs what the local runner calls):

    python -m megatron_sicog.recipe.step megatron_sicog.loop:write_predictions '{"captions": ..., ...}'
"""
import json
import sys

from megatron_sicog.recipe.graph import Step


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m megatron_sicog.recipe.step MODULE:FUNCTION KWARGS_JSON", file=sys.stderr)
        return 2
    Step("step", args[0], json.loads(args[1])).call()
    return 0


def concat_files(inputs: list, output: str) -> None:
    """Join JSONL shards into one file, in the order given (the gather of a sharded stage)."""
    import shutil

    from megatron_sicog.io import atomic_path

    with atomic_path(output) as tmp, open(tmp, "wb") as out:
        for p in inputs:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out)


if __name__ == "__main__":
    sys.exit(main())
