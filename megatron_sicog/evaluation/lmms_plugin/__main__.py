"""``python -m megatron_sicog.evaluation.lmms_plugin ARGS``: lmms-eval's command line with `megatron_sicog` registered."""
import sys


def main() -> None:
    from megatron_sicog.evaluation.lmms_plugin import register

    register()
    from lmms_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    sys.exit(main())
