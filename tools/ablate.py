"""Train one recipe once per attention mode and pale size (the paper's Tables 5 and 6)
and write a markdown table, a CSV file and a bar chart.

    python tools/ablate.py -c configs/demo.yaml \
        --modes axial cross_shaped pale_vanilla pale_sequential pale
    python tools/ablate.py -c configs/demo.yaml --modes pale --pale-sizes 1 2 3 4
    (pale sizes: 7, a pair 3x5, or one per stage 1,3,5,7)

Rows already finished (OUTPUT/ROW/result.json of the same config) are not retrained; an
interrupted row resumes from its latest checkpoint. Run it again to finish a sweep.
"""
import argparse

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.ablation import parse_pale_size, run_ablation
    from paddle_pale.models.modes import MODES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="training config (the recipe)")
    parser.add_argument("-o", "--override", action="append", default=[],
                        metavar="Section.key=value", help="config override, repeatable")
    parser.add_argument("--modes", nargs="+", choices=MODES, metavar="MODE",
                        help=f"attention modes ({', '.join(MODES)}), one row each at the "
                             "config's pale size")
    parser.add_argument("--pale-sizes", nargs="+", type=parse_pale_size, metavar="S",
                        help="pale sizes, one row each with the config's attention mode")
    parser.add_argument("--output", help="folder of the rows and the tables "
                                         "(default: Global.output_dir/ablation)")
    parser.add_argument("--batch", type=int, help="images per timed batch for img/s "
                                                  "(default: the training batch size)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed batches per img/s figure (median)")
    parser.add_argument("--title", help="title of the table and the chart")
    args = parser.parse_args(argv)
    _, paths = run_ablation(args.config, args.override, args.modes, args.pale_sizes,
                            args.output, args.batch, args.repeats, args.title)
    with open(paths[0]) as f:
        print(f.read().rstrip())
    print("\n".join(["written:"] + paths))


if __name__ == "__main__":
    run_tool(main)
