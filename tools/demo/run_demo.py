"""The main job in miniature, on the CPU, in about five minutes: `make demo`.

Data (built-in generated objects or ``--data-root``), the two tiny teachers
(supervised ViT Tc, MAE Tm), hybrid distillation of a student, then a linear
probe, k-NN and attention statistics of the student, both teachers and a random
init: one table in ``WORK_DIR/report.md`` and a PNG of the per-layer attention.
The stages are :mod:`mmhybrid.miniature.pipeline`'s, configured by
:func:`mmhybrid.miniature.demo.run_demo`; each training stage's command is
printed and kept in ``WORK_DIR/logs/*.cmd``. ``make study`` is the same
pipeline with four students and several seeds
(``tools/analysis/run_study.py``).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from mmhybrid.miniature.pipeline import add_pipeline_args
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pipeline_args(p, work_dir='work_dirs/demo')
    p.add_argument(
        '--builtin-root',
        default='data/shapes/objects',
        help='where the built-in data is written (once)')
    p.add_argument(
        '--iters',
        type=int,
        default=300,
        help='iterations of the supervised teacher and of the '
        'distillation; the MAE teacher runs twice as many (they '
        'are cheap: it encodes a quarter of the tokens)')
    p.add_argument('--probe-iters', type=int, default=200)
    p.add_argument(
        '--num-train',
        type=int,
        default=5000,
        help='built-in data: training images')
    p.add_argument(
        '--num-val',
        type=int,
        default=500,
        help='built-in data: validation images')
    p.add_argument('--attn-images', type=int, default=64)
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    from mmhybrid.miniature.demo import run_demo
    run_demo(**vars(parse_args(argv)))


if __name__ == '__main__':
    main()
