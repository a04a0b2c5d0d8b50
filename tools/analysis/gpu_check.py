"""The analysis tools on a GPU: same numbers as on the CPU, and the time.

Builds a ViT-B/16-shaped checkpoint in timm's layout (random, perturbed
weights: the statistics of real weights are not the point here) and a few
generated images, then runs what ``tools/analysis/attention_stats.py`` runs on
``cuda`` and on ``cpu`` and compares the two CSVs, and what
``visualize_masking.py`` runs on ``cuda``
(:func:`mmhybrid.analysis.attention_tools.device_check`).

    python tools/analysis/gpu_check.py --out work_dirs/gpu_check_analysis
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        '--out', default=os.environ.get('OUT', 'work_dirs/gpu_check'))
    p.add_argument('--num-images', type=int, default=64)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument(
        '--work',
        default='/tmp/mmhybrid_analysis_gpu_check',
        help='where the generated images and checkpoint go')
    p.add_argument(
        '--devices',
        default='cuda,cpu',
        help='the two devices compared. Default: cuda,cpu')
    return p.parse_args(argv)


def main(argv=None):
    from mmhybrid.analysis.attention_tools import device_check
    args = parse_args(argv)
    return device_check(args.out, args.num_images, args.img_size, args.work,
                        args.devices.split(','))


if __name__ == '__main__':
    main()
