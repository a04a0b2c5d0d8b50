"""Generate the built-in "shapes" datasets (ImageNet / ADE20K / COCO layouts).

Example::

    python tools/data/make_shapes.py data/shapes --formats imagenet coco

writes ``data/shapes/imagenet`` and ``data/shapes/coco`` and prints their
paths. Re-running with the same parameters is a no-op.
"""
import argparse
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)

from mmhybrid.datasets.shapes import make_ade20k_style  # noqa: E402
from mmhybrid.datasets.shapes import make_coco_style  # noqa: E402
from mmhybrid.datasets.shapes import make_imagenet_style  # noqa: E402

MAKERS = {
    'imagenet': make_imagenet_style,
    'ade20k': make_ade20k_style,
    'coco': make_coco_style,
}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description='Generate the built-in shapes datasets.')
    parser.add_argument(
        'out_dir', help='parent folder; one subfolder per format')
    parser.add_argument(
        '--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--num-train',
        type=int,
        default=None,
        help='training images per format (default: each format\'s own default)'
    )
    parser.add_argument(
        '--num-val',
        type=int,
        default=None,
        help=
        'validation images per format (default: each format\'s own default)')
    parser.add_argument(
        '--formats',
        nargs='+',
        choices=list(MAKERS),
        default=list(MAKERS),
        help='layouts to write (default: all)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """Entry point."""
    args = parse_args(argv)
    counts = {}
    if args.num_train is not None:
        counts['num_train'] = args.num_train
    if args.num_val is not None:
        counts['num_val'] = args.num_val
    for fmt in dict.fromkeys(args.formats):  # dedupe, keep order
        start = time.time()
        path = MAKERS[fmt](
            osp.join(args.out_dir, fmt),
            size=args.size,
            seed=args.seed,
            **counts)
        print(f'{fmt}: {path} ({time.time() - start:.1f}s)')


if __name__ == '__main__':
    main()
