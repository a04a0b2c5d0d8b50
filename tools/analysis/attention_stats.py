"""Per layer and head attention statistics of a ViT: distance, entropy, NMI.

For any ViT checkpoint mmhybrid can load (a HybridDistill student, any teacher
layout: mmpretrain, OpenAI CLIP, timm / MAE / DeiT / DINO, .safetensors), compute
on N images, per layer and head, the mean attention distance (pixels), the
attention entropy (nats) and the query-key NMI (see
``mmhybrid/analysis/attention_metrics.py`` for the exact definitions), and write

    OUT/attention_stats.csv   one row per (layer, head)
    OUT/attention_stats.png   layer on x, one dot per head (the paper's figures)
    OUT/summary.txt           one line per layer (also printed)

Examples::

    # a HybridDistill student, from its training config
    python tools/analysis/attention_stats.py configs/hybrid_vitb.py \\
        --checkpoint work_dirs/hybrid_vitb/epoch_300.pth \\
        --data data/imagenet/val --num-images 256 --out work_dirs/attn/student
    # the config's CLIP teacher, read from the config's own checkpoint entry
    python tools/analysis/attention_stats.py configs/hybrid_vitb.py \\
        --component teacher_feat --data data/imagenet/val --out work_dirs/attn/clip
    # a bare checkpoint file: architecture read off the weights
    python tools/analysis/attention_stats.py mae_pretrain_vit_base.pth \\
        --format timm --data data/imagenet/val --out work_dirs/attn/mae
    python tools/analysis/attention_stats.py ViT-B-16.pt --format openai_clip \\
        --data data/imagenet/val --out work_dirs/attn/clip   # CLIP mean/std auto

Runs on the GPU when there is one (``--device``), else on the CPU.
"""
import argparse
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import DictAction  # noqa: E402

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Per layer/head attention distance, entropy and NMI of a '
        'ViT checkpoint.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('source', metavar='CONFIG_OR_CKPT',
                   help='a config (.py; then --checkpoint) or a checkpoint file '
                   '(.pth, .pt, .bin, .safetensors, URL)')
    p.add_argument('--data', required=True,
                   help='image folder, read recursively')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--checkpoint', help='weights for a config source')
    p.add_argument('--component', default='student',
                   choices=['student', 'teacher_feat', 'teacher_rel'],
                   help='with a HybridDistill config: which ViT (teachers '
                   'default to the config\'s own checkpoint). Default: student')
    p.add_argument('--format', default='auto',
                   choices=['auto', 'mmpretrain', 'openai_clip', 'timm'],
                   help='checkpoint layout. Default: auto')
    p.add_argument('--arch', help="checkpoint source: mmpretrain arch name "
                   "('b', 'l', 'deit-s', ...) or 'EMBED,LAYERS,HEADS[,FFN]'. "
                   'Default: read off the weights, 64 channels per head')
    p.add_argument('--num-heads', type=int, help='override the head count')
    p.add_argument('--patch-size', type=int,
                   help='default: the checkpoint\'s patch embedding kernel')
    p.add_argument('--img-size', type=int,
                   help='default: the checkpoint\'s position grid x patch size')
    p.add_argument('--clip-norm', action='store_true',
                   help='CLIP mean/std instead of ImageNet\'s (automatic for '
                   'openai_clip files)')
    p.add_argument('--quick-gelu', action='store_true',
                   help='QuickGELU MLPs (timm ports of OpenAI CLIP)')
    p.add_argument('--random-init', action='store_true',
                   help='config source: analyse the seeded random init')
    p.add_argument('--num-images', type=int, default=64,
                   help='images to average over (seeded subset). Default: 64')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--name', help='model name in the CSV and plot title')
    p.add_argument('--device', default=None,
                   help='default: cuda when available, else cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='config source: key=value overrides')
    return p.parse_args(argv)


def build(args, device):
    import torch
    from mmhybrid.analysis.vit_loading import vit_from_checkpoint, vit_from_config
    torch.manual_seed(args.seed)
    if args.source.endswith('.py'):
        from mmengine.config import Config
        cfg = Config.fromfile(args.source)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        if cfg.get('custom_imports'):
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**cfg.custom_imports)
        return vit_from_config(
            cfg, args.component, args.checkpoint, args.format,
            clip_norm=args.clip_norm or None, random_init=args.random_init,
            device=device)
    if args.checkpoint:
        raise SystemExit('--checkpoint is for a config source; the source is '
                         'already a checkpoint')
    return vit_from_checkpoint(
        args.source, args.format, args.arch, args.num_heads, args.patch_size,
        args.img_size, clip_norm=True if args.clip_norm else None,
        quick_gelu=args.quick_gelu, device=device)


def main(argv=None):
    args = parse_args(argv)
    import torch

    import mmhybrid  # noqa: F401  (registry, safe-load allow-list)
    from mmengine.registry import DefaultScope
    from mmhybrid.analysis.attention_report import (compute_attention_stats,
                                                    layer_summary, plot_stats,
                                                    uniform_reference,
                                                    write_csv)
    from mmhybrid.analysis.vit_loading import load_images
    from mmhybrid.utils.checkpoint import CheckpointError

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    t0 = time.time()
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        try:
            vit = build(args, device)
        except (CheckpointError, ValueError, FileNotFoundError) as e:
            raise SystemExit(f'attention_stats: {e}') from None
    images, paths = load_images(args.data, vit.img_size, args.num_images,
                                args.seed)
    name = args.name or osp.splitext(osp.basename(args.checkpoint or
                                                  args.source))[0]
    if args.component != 'student' and args.source.endswith('.py'):
        name = args.name or args.component
    stats = compute_attention_stats(vit, images, args.batch_size)

    os.makedirs(args.out, exist_ok=True)
    csv_path = osp.join(args.out, 'attention_stats.csv')
    png_path = osp.join(args.out, 'attention_stats.png')
    write_csv(csv_path, stats, name, len(paths))
    h, w = vit.grid_hw
    ref = uniform_reference(vit.grid_hw, vit.patch_size)
    plot_stats({name: stats}, png_path,
               title=f'{name}: {len(paths)} images, {vit.img_size[0]} px, '
               f'{h}x{w} patches',
               reference=ref)
    lines = [
        f'model: {name}', f'weights: {vit.source}',
        f'images: {len(paths)} from {args.data} at {vit.img_size[0]}x'
        f'{vit.img_size[1]} (mean {tuple(round(v, 2) for v in vit.mean)}, '
        f'std {tuple(round(v, 2) for v in vit.std)}), device {device}',
        f'{vit.model.num_layers} layers x {vit.model.num_heads} heads; '
        'per layer: head mean [min, max]; uniform attention would give '
        f"distance {ref['distance']:.2f} px, entropy {ref['entropy']:.3f} "
        'nats, NMI 0'
    ] + layer_summary(stats)
    with open(osp.join(args.out, 'summary.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    print(f'wrote {csv_path}, {png_path} ({time.time() - t0:.1f}s)')


if __name__ == '__main__':
    main()
