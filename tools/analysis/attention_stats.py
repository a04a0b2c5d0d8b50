"""Per layer and head attention statistics of a ViT: distance, entropy, NMI.

For any ViT checkpoint mmhybrid can load (a HybridDistill student, any teacher
layout: mmpretrain, OpenAI CLIP, timm / MAE / DeiT / DINO, .safetensors),
compute on N images, per layer and head, the mean attention distance (pixels),
the attention entropy (nats) and the query-key NMI (see
``mmhybrid/analysis/attention_metrics.py`` for the exact definitions), and
write

    OUT/attention_stats.csv   one row per (layer, head)
    OUT/attention_stats.png   layer on x, one dot per head (paper's figures)
    OUT/summary.txt           one line per layer (also printed)

Examples::

    # a HybridDistill student, from its training config
    python tools/analysis/attention_stats.py configs/hybrid_vitb.py \\
        --checkpoint work_dirs/hybrid_vitb/epoch_300.pth \\
        --data data/imagenet/val --num-images 256 --out work_dirs/attn/student
    # the config's CLIP teacher, read from the config's own checkpoint entry
    python tools/analysis/attention_stats.py configs/hybrid_vitb.py \\
        --component teacher_feat --data data/imagenet/val \\
        --out work_dirs/attn/clip
    # a teachers= config's ZooTeacher ('dino'), through its own forward at
    # its own size (a FrozenTeacher such as 'mae' is built as a HybridViT)
    THREE=configs/demo/hybrid-distill_vit-tiny-p8_3-teachers_1xb32-4e_shapes.py
    python tools/analysis/attention_stats.py $THREE --component dino \\
        --data data/shapes/imagenet/val --out work_dirs/attn/dino
    # a bare checkpoint file: architecture read off the weights
    python tools/analysis/attention_stats.py mae_pretrain_vit_base.pth \\
        --format timm --data data/imagenet/val --out work_dirs/attn/mae
    # CLIP mean/std chosen automatically for an OpenAI CLIP file
    python tools/analysis/attention_stats.py ViT-B-16.pt \\
        --format openai_clip --data data/imagenet/val --out work_dirs/attn/clip

Runs on the GPU when there is one (``--device``), else on the CPU.
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
        description='Per layer/head attention distance, entropy and NMI of a '
        'ViT checkpoint.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(
        p,
        source_help='a config (.py; then --checkpoint) or a '
        'checkpoint file (.pth, .pt, .bin, .safetensors, URL)',
        out_help='output folder',
        checkpoint_help='weights for a config source')
    p.add_argument(
        '--component',
        default='student',
        help="with a HybridDistill config: which ViT: 'student' or a "
        "teacher's name (teacher_feat / teacher_rel in the two-teacher form, "
        'a key of model.teachers otherwise; teachers default to the '
        "config's own checkpoint). Default: student")
    p.add_argument(
        '--random-init',
        action='store_true',
        help='config source: analyse the seeded random init')
    p.add_argument(
        '--num-images',
        type=int,
        default=64,
        help='images to average over (seeded subset). Default: 64')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--name', help='model name in the CSV and plot title')
    return p.parse_args(argv)


def main(argv=None):
    from mmhybrid.analysis.attention_tools import attention_stats_report
    return attention_stats_report(**vars(parse_args(argv)))


if __name__ == '__main__':
    main()
