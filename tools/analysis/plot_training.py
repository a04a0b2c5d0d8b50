"""Draw a training run's logged curves into PNGs, from its scalars.json.

    python tools/analysis/plot_training.py work_dirs/hybrid_vitb
    python tools/analysis/plot_training.py work_dirs/hybrid_vitb --out figs

Writes (each only when the run logged it), to WORK_DIR/plots by default:

    losses.png       loss, loss_feat, loss_rel against the iteration
    mask_ratio.png   the progressive masking ratio
    attention.png    per layer: the student's attention distance, head spread
                     and NMI over training, the relation teacher's as dashed
                     lines, and the deep-layer ratios (AttentionDiversityHook)
    knn_top1.png     k-NN top-1 (KNNMonitorHook)

Every timestamped folder of the work dir is read (a resumed run's later
records of an iteration replace the earlier ones).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('work_dir', metavar='WORK_DIR')
    p.add_argument('--out', help='output folder. Default: WORK_DIR/plots')
    p.add_argument('--dpi', type=int, default=90)
    return p.parse_args(argv)


def main(argv=None):
    from mmhybrid.analysis.training_plots import plot_training
    args = parse_args(argv)
    try:
        written = plot_training(args.work_dir, args.out, args.dpi)
    except FileNotFoundError as e:
        raise SystemExit(f'plot_training: {e}') from None
    if not written:
        raise SystemExit(f'plot_training: {args.work_dir} logged no loss, '
                         'mask ratio, attention or k-NN scalar')
    for name, path in written.items():
        print(f'{name}: {path}')
    return written


if __name__ == '__main__':
    main()
