"""DINO's k-NN evaluation of a ViT's frozen features on an ImageNet-style
folder: the full protocol by default (every train image in the bank).

Features: the [CLS] token of the last layer after its final norm (or the mean
patch token, ``--feature mean``), L2-normalised; each val image is classified
by the ``exp(cos / T)``-weighted votes of its k most similar train images
(k = 20, T = 0.07). Images: short side resized to img_size * 256 / 224
(bicubic), centre crop. The implementation is the one the training monitor
``KNNMonitorHook`` logs as ``knn/top1`` (``mmhybrid/engine/knn.py``).

Examples::

    # a HybridDistill student, from its training config
    python tools/analysis/knn_eval.py configs/hybrid_vitb.py \\
        --checkpoint work_dirs/hybrid_vitb/epoch_300.pth \\
        --data-root data/imagenet
    # any checkpoint file (architecture read off the weights), 8 GPUs
    torchrun --nproc_per_node 8 tools/analysis/knn_eval.py \\
        mae_pretrain_vit_base.pth --format timm --data-root data/imagenet \\
        --launcher pytorch
    # a converted student on 10 % of the train images, JSON result
    python tools/analysis/knn_eval.py hybrid_vitb_mmpretrain.pth \\
        --data-root data/imagenet --bank-size 0.1 --out knn.json

``--data-root`` holds ``train/`` and ``val/``, each with one sub-folder per
class, or mmpretrain's ``meta/train.txt`` and ``meta/val.txt``. With
``--launcher pytorch`` (torchrun) each process encodes its shard of both
sets and the features are gathered: the top-1 equals one process's.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)


def _size(text: str):
    """A fraction (``0.1``) or a count (``10000``) of a set's images."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'{text}: expected > 0')
    if '.' in text or 'e' in text.lower():
        if value > 1:
            raise argparse.ArgumentTypeError(
                f'{text}: a fraction must be in (0, 1]; a count is an integer')
        return value
    return int(value)


def parse_args(argv=None):
    from mmengine.config import DictAction

    from mmhybrid.vit_checkpoints import FORMATS
    p = argparse.ArgumentParser(
        description="DINO's k-NN top-1 of a ViT checkpoint on an "
        'ImageNet-style folder.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        'source',
        metavar='CONFIG_OR_CKPT',
        help='a config (.py; the student needs --checkpoint) or a checkpoint '
        'file (.pth, .pt, .bin, .safetensors, URL)')
    p.add_argument(
        '--data-root',
        required=True,
        help='folder with train/ and val/ (class folders or meta/*.txt)')
    p.add_argument('--checkpoint', help='weights for a config source')
    p.add_argument(
        '--component',
        default='student',
        help="with a HybridDistill config: which ViT: 'student' or a "
        "teacher's name (teacher_feat / teacher_rel in the two-teacher form, "
        'a key of model.teachers otherwise). Default: student')
    p.add_argument(
        '--random-init',
        action='store_true',
        help='config source: the seeded random init')
    p.add_argument(
        '--format',
        dest='ckpt_format',
        default='auto',
        choices=FORMATS,
        help='checkpoint layout. Default: auto')
    p.add_argument(
        '--arch',
        help="checkpoint source: mmpretrain arch name or 'EMBED,LAYERS,HEADS"
        "[,FFN]'. Default: read off the weights")
    p.add_argument('--num-heads', type=int, help='override the head count')
    p.add_argument('--patch-size', type=int)
    p.add_argument('--img-size', type=int)
    p.add_argument(
        '--clip-norm',
        action='store_true',
        help="CLIP mean/std instead of ImageNet's")
    p.add_argument('--quick-gelu', action='store_true')
    p.add_argument('--k', type=int, default=20, help='Default: 20')
    p.add_argument(
        '--temperature', type=float, default=0.07, help='Default: 0.07')
    p.add_argument(
        '--feature',
        default='cls',
        choices=['cls', 'mean'],
        help='[CLS] token or mean patch token. Default: cls')
    p.add_argument(
        '--bank-size',
        type=_size,
        help='train images in the bank: a fraction (0.1) or a count '
        '(evenly spaced). Default: all')
    p.add_argument(
        '--val-size', type=_size, help='val images likewise. Default: all')
    p.add_argument(
        '--resize',
        type=int,
        help='short side before the centre crop. Default: img_size * 256 / '
        '224')
    p.add_argument(
        '--batch-size', type=int, default=64, help='per process. Default: 64')
    p.add_argument('--num-workers', type=int, default=4)
    p.add_argument(
        '--launcher',
        default='none',
        choices=['none', 'pytorch'],
        help='pytorch: one process per device under torchrun')
    p.add_argument('--out', help='write the result as JSON')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='config source: key=value overrides')
    return p.parse_args(argv)


def main(argv=None):
    import torch

    from mmhybrid.analysis.knn import knn_eval_report
    try:
        return knn_eval_report(**vars(parse_args(argv)))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
