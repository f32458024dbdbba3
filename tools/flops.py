"""Print parameters and FLOPs (multiply-accumulates) of a Pale model, per stage.

    python tools/flops.py --model pale_t --size 224 224
    python tools/flops.py -c configs/pale_t.yaml      (Arch and eval input size of a config)
    python tools/flops.py --model pale_t --modes      (one row per attention mode)
"""
import argparse
import sys

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.models import MODES, create_model
    from paddle_pale.utils.flops import format_flops_report, format_mode_flops_table
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pale_t", help="registered variant name")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("-c", "--config", help="training config: its Arch and eval input size "
                        "(an explicit --size wins)")
    parser.add_argument("-o", "--override", action="append", default=[],
                        metavar="Section.key=value")
    parser.add_argument("--modes", nargs="*", choices=MODES, metavar="MODE",
                        help="a table with one row per attention mode (params, FLOPs, "
                             f"attention MACs); no names: all of {', '.join(MODES)}")
    args = parser.parse_args(argv)
    if args.config:
        from paddle_pale.engine.config import load_config

        config = load_config(args.config, args.override)
        name = config["Arch"]["name"]
        arch = {k: v for k, v in config["Arch"].items() if k != "name"}
        # the config's model is the variant with its Arch arguments, not the variant
        label = f"{name} with the Arch of {args.config}" if arch else name
        if "--size" not in (argv if argv is not None else sys.argv[1:]):
            size = config["DataLoader"]["Eval"]["transforms"]["input_size"]
            args.size = (size, size)
    else:
        name, arch = args.model, {"num_classes": args.num_classes}
        label = name
    if args.modes is not None:
        arch.pop("attention_mode", None)
        models = [(mode, create_model(name, **dict(arch, attention_mode=mode)))
                  for mode in args.modes or MODES]
        print(format_mode_flops_table(models, label, tuple(args.size)))
        return
    print(format_flops_report(create_model(name, **arch), label, tuple(args.size)))


if __name__ == "__main__":
    run_tool(main)
