"""Kept vs. masked tokens along the progressive masking schedule, as one PNG
grid.

Rows: images. Columns: the image, the teacher's token importance ([CLS]->patch
attention of its last block, mean over heads: what HybridDistill ranks tokens
by), then the student's kept tokens at several points of the schedule (masked
patches greyed out).

The tokens are chosen exactly as in training: ``mask_ratio_at`` /
``ProgressiveMaskingHook.ratio_at`` gives the ratio, ``num_kept_tokens`` the
count and ``select_kept_tokens`` the tokens (``sample``: without replacement,
weighted by importance; ``topk``: deterministic). Every column reuses the same
random stream, so with ``sample`` the kept sets are nested: a token kept at a
higher ratio is kept at every lower one, and the picture shows the schedule,
not the noise.

Examples::

    # from a HybridDistill config: its importance teacher, hook and selection
    python tools/analysis/visualize_masking.py \\
        configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py \\
        --data data/shapes/imagenet/val --out work_dirs/masking.png
    # from a teacher checkpoint file, the schedule given on the command line
    python tools/analysis/visualize_masking.py ViT-B-16.pt \\
        --format openai_clip --data data/imagenet/val --final-ratio 0.5 \\
        --out work_dirs/masking.png
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from mmhybrid.analysis.attention_tools import add_source_args
    p = argparse.ArgumentParser(
        description='Kept vs. masked tokens along the progressive schedule.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(
        p,
        source_help='a HybridDistill config (.py) or the '
        "importance teacher's checkpoint file",
        out_help='output PNG (or a folder: '
        'FOLDER/masking_schedule.png)',
        checkpoint_help='config source: overrides the importance '
        "teacher's checkpoint")
    p.add_argument(
        '--importance',
        help="config source: whose [CLS] attention ranks tokens: 'feat', "
        "'rel' or a teacher's name of a teachers= config (default: the "
        "config's importance_source)")
    p.add_argument(
        '--final-ratio',
        type=float,
        help="default: the config's ProgressiveMaskingHook, else 0.5")
    p.add_argument(
        '--schedule',
        choices=['linear', 'cosine', 'constant'],
        help="default: the config's hook, else linear")
    p.add_argument(
        '--selection',
        choices=['sample', 'topk'],
        help="default: the config's token_selection, else sample")
    p.add_argument(
        '--points',
        default='0,0.25,0.5,0.75,1',
        help='schedule points, fractions of training. '
        'Default: 0,0.25,0.5,0.75,1')
    p.add_argument('--num-images', type=int, default=4)
    return p.parse_args(argv)


def main(argv=None):
    from mmhybrid.analysis.attention_tools import masking_schedule_figure
    return masking_schedule_figure(**vars(parse_args(argv)))


if __name__ == '__main__':
    main()
