"""Evaluate a Pale Transformer classifier: top-1/top-5 on the validation set.

    python tools/eval.py -c configs/pale_t.yaml -o Global.pretrained=output/pale_t/best

Weights that do not fit the configured model are refused unless
--allow_mismatched_weights is given; class folders are numbered through the class map
stored with the checkpoint.
"""

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.engine.cli import eval_main
    return eval_main(argv)


if __name__ == "__main__":
    run_tool(main)
