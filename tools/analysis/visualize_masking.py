"""Kept vs. masked tokens along the progressive masking schedule, as one PNG grid.

Rows: images. Columns: the image, the teacher's token importance ([CLS]->patch
attention of its last block, mean over heads: what HybridDistill ranks tokens
by), then the student's kept tokens at several points of the schedule (masked
patches greyed out).

The tokens are chosen exactly as in training: ``mask_ratio_at`` /
``ProgressiveMaskingHook.ratio_at`` gives the ratio, ``num_kept_tokens`` the count
and ``select_kept_tokens`` the tokens (``sample``: without replacement, weighted by
importance; ``topk``: deterministic). Every column reuses the same random stream,
so with ``sample`` the kept sets are nested: a token kept at a higher ratio is
kept at every lower one, and the picture shows the schedule, not the noise.

Examples::

    # from a HybridDistill config: its importance teacher, hook and selection
    python tools/analysis/visualize_masking.py \\
        configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py \\
        --data data/shapes/imagenet/val --out work_dirs/masking.png
    # from a teacher checkpoint file, with the schedule given on the command line
    python tools/analysis/visualize_masking.py ViT-B-16.pt --format openai_clip \\
        --data data/imagenet/val --final-ratio 0.5 --out work_dirs/masking.png
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Kept vs. masked tokens along the progressive schedule.',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('source', metavar='CONFIG_OR_CKPT',
                   help='a HybridDistill config (.py) or the importance '
                   "teacher's checkpoint file")
    p.add_argument('--data', required=True, help='image folder (recursive)')
    p.add_argument('--out', required=True,
                   help='output PNG (or a folder: FOLDER/masking_schedule.png)')
    p.add_argument('--checkpoint',
                   help="config source: overrides the importance teacher's "
                   'checkpoint')
    p.add_argument('--importance', choices=['feat', 'rel'],
                   help="config source: whose [CLS] attention ranks tokens "
                   "(default: the config's importance_source)")
    p.add_argument('--format', default='auto',
                   choices=['auto', 'mmpretrain', 'openai_clip', 'timm'])
    p.add_argument('--arch', help='checkpoint source: see attention_stats.py')
    p.add_argument('--num-heads', type=int)
    p.add_argument('--patch-size', type=int)
    p.add_argument('--img-size', type=int)
    p.add_argument('--clip-norm', action='store_true')
    p.add_argument('--quick-gelu', action='store_true')
    p.add_argument('--final-ratio', type=float,
                   help="default: the config's ProgressiveMaskingHook, else 0.5")
    p.add_argument('--schedule', choices=['linear', 'cosine', 'constant'],
                   help="default: the config's hook, else linear")
    p.add_argument('--selection', choices=['sample', 'topk'],
                   help="default: the config's token_selection, else sample")
    p.add_argument('--points', default='0,0.25,0.5,0.75,1',
                   help='schedule points, fractions of training. '
                   'Default: 0,0.25,0.5,0.75,1')
    p.add_argument('--num-images', type=int, default=4)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default=None)
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def schedule_from_config(cfg):
    """``(hook or None, max_iters or None, token_selection, importance_source)``
    of a HybridDistill config."""
    from mmhybrid.engine.hooks.progressive_masking_hook import \
        ProgressiveMaskingHook
    from mmhybrid.engine.preflight import type_name
    hook = None
    for h in cfg.get('custom_hooks', None) or []:
        if type_name(h) == 'ProgressiveMaskingHook':
            kwargs = {k: v for k, v in h.items() if k not in ('type', 'priority')}
            hook = ProgressiveMaskingHook(**kwargs)
    train_cfg = cfg.get('train_cfg', None) or {}
    max_iters = train_cfg.get('max_iters')
    return (hook, max_iters, cfg.model.get('token_selection', 'sample'),
            cfg.model.get('importance_source', 'feat'))


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import torch

    import mmhybrid  # noqa: F401
    from mmengine.registry import DefaultScope
    from mmhybrid.analysis.vit_loading import (load_images, vit_from_checkpoint,
                                               vit_from_config)
    from mmhybrid.models.utils.token_masking import (mask_ratio_at,
                                                     num_kept_tokens,
                                                     select_kept_tokens)
    from mmhybrid.utils.checkpoint import CheckpointError

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    points = [float(v) for v in args.points.split(',') if v.strip()]
    if not points or not all(0.0 <= p <= 1.0 for p in points):
        raise SystemExit(f'--points must be fractions in [0, 1], got '
                         f'{args.points!r}')
    hook = max_iters = None
    selection, source_name = 'sample', 'teacher'
    fixed_ratio = None  # a config without the hook keeps model.mask_ratio
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        try:
            if args.source.endswith('.py'):
                from mmengine.config import Config
                cfg = Config.fromfile(args.source)
                if args.cfg_options:
                    cfg.merge_from_dict(args.cfg_options)
                hook, max_iters, selection, imp = schedule_from_config(cfg)
                if hook is None:
                    fixed_ratio = float(cfg.model.get('mask_ratio', 0.0))
                imp = args.importance or imp
                source_name = f'teacher_{imp}'
                vit = vit_from_config(cfg, source_name, args.checkpoint,
                                      args.format,
                                      clip_norm=args.clip_norm or None,
                                      device=device)
            else:
                vit = vit_from_checkpoint(
                    args.source, args.format, args.arch, args.num_heads,
                    args.patch_size, args.img_size,
                    clip_norm=True if args.clip_norm else None,
                    quick_gelu=args.quick_gelu, device=device)
        except (CheckpointError, ValueError, FileNotFoundError) as e:
            raise SystemExit(f'visualize_masking: {e}') from None
    selection = args.selection or selection
    default_final, default_schedule = (
        (hook.final_ratio, hook.schedule) if hook else
        (0.5, 'linear') if fixed_ratio is None else (fixed_ratio, 'constant'))
    final = args.final_ratio if args.final_ratio is not None else default_final
    schedule = args.schedule or default_schedule
    start = hook.start_ratio if hook else 0.0

    images, paths = load_images(args.data, vit.img_size, args.num_images,
                                args.seed)
    with torch.no_grad():
        out = vit.model.forward_distill(vit.normalize(images), cls_attn=True)
    importance = out.cls_attn.float().cpu()  # (B, N)
    n = importance.shape[1]
    gh, gw = vit.grid_hw
    ph, pw = vit.patch_size

    columns = []  # (title, keep mask (B, N) bool)
    for p in points:
        if max_iters and hook is not None and args.final_ratio is None and \
                args.schedule is None:
            it = int(round(p * max_iters))
            ratio = hook.ratio_at(it, max_iters)
            label = f'iter {it}/{max_iters}'
        else:
            ratio = mask_ratio_at(p, final, schedule, start)
            label = f'{100 * p:.0f}% of training'
        k = num_kept_tokens(n, ratio)
        g = torch.Generator().manual_seed(args.seed)
        idx = select_kept_tokens(importance, k, selection, generator=g)
        keep = torch.zeros(importance.shape, dtype=torch.bool)
        keep.scatter_(1, idx, True)
        columns.append((f'{label}\nratio {ratio:.2f}, {k}/{n} kept', keep))

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, cols = images.shape[0], 2 + len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.6),
                             squeeze=False)
    imgs = images.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0
    for r in range(rows):
        axes[r, 0].imshow(imgs[r], interpolation='nearest')
        heat = importance[r].view(gh, gw).numpy()
        axes[r, 1].imshow(imgs[r], interpolation='nearest')
        axes[r, 1].imshow(np.kron(heat, np.ones((ph, pw))), cmap='inferno',
                          alpha=0.65, interpolation='nearest')
        for c, (title, keep) in enumerate(columns):
            m = np.kron(keep[r].view(gh, gw).numpy().astype(np.float32),
                        np.ones((ph, pw)))[..., None]
            shown = imgs[r] * m + (0.25 * imgs[r] + 0.45) * (1 - m)
            axes[r, 2 + c].imshow(shown, interpolation='nearest')
            if r == 0:
                axes[r, 2 + c].set_title(title, fontsize=7)
        if r == 0:
            axes[r, 0].set_title('image', fontsize=7)
            axes[r, 1].set_title(f'importance\n({source_name} [CLS] attn)',
                                 fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f'progressive token masking: {schedule} to {final:.2f}, '
                 f'selection {selection}; grey = masked', fontsize=8)
    fig.tight_layout()
    out_path = args.out
    if osp.isdir(out_path) or not out_path.lower().endswith('.png'):
        out_path = osp.join(out_path, 'masking_schedule.png')
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=80)
    plt.close(fig)
    print(f'importance from {vit.source}')
    for title, keep in columns:
        print(f'  {title.replace(chr(10), ": ")}')
    print(f'wrote {out_path}')


if __name__ == '__main__':
    main()
