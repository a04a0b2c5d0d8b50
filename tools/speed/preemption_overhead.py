"""What pre-emption safety costs the CPU training step, measured in one run.

Trains the epoch-based demo config in this process (one-rank gloo group, so
the signal check does its all-reduce) with ``PreemptionHook(interval=N)`` and
prints the time of the per-iteration signal check and of the mid-epoch
checkpoints as ratios to the rest of the step::

    python tools/speed/preemption_overhead.py --interval 5
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument(
        '--interval',
        type=int,
        default=5,
        help='mid-epoch checkpoint every N iterations')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--num-images', type=int, default=96)
    parser.add_argument(
        '--work-dir',
        default=None,
        help='data and checkpoints (default: a temp folder)')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmhybrid.engine.preemption_overhead import measure_preemption_overhead
    r = measure_preemption_overhead(
        ROOT,
        epochs=args.epochs,
        interval=args.interval,
        batch_size=args.batch_size,
        num_images=args.num_images,
        work_dir=args.work_dir)
    print(f'CPU step (tiny demo ViT, batch {args.batch_size}): '
          f"{r['step_s'] * 1e3:.1f} ms over {r['iters']} iterations")
    print(f'signal check (one all-reduce per iteration): '
          f"{r['check_s'] * 1e3:.3f} ms/iteration = {r['check_ratio']:.4f} "
          'x the step')
    print(f"mid-epoch checkpoint every {r['interval']} iterations: "
          f"{r['save_s'] * 1e3:.1f} ms per save ({r['saves']} saves) = "
          f"{r['save_ratio']:.4f} x the step time")
    return r


if __name__ == '__main__':
    main()
