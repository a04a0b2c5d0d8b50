"""What ``tools/analysis/attention_stats.py`` and ``visualize_masking.py`` do,
as functions: per layer and head attention statistics of any ViT mmhybrid can
load, and the kept vs. masked tokens along the progressive masking schedule.

A *source* is a config (``.py``; the ViT is one of its components, weights from
``checkpoint`` or the config's own teacher entries) or a checkpoint file
(``.pth``, ``.pt``, ``.bin``, ``.safetensors``, URL; the architecture is read
off the weights unless ``arch`` is given).
"""
import os
import os.path as osp
import time
from typing import List, Optional, Sequence

import numpy as np
import torch

from mmhybrid.utils.checkpoint import CheckpointError
from mmhybrid.vit_checkpoints import FORMATS
from .attention_report import (compute_attention_stats, layer_summary,
                               plot_stats, uniform_reference, write_csv)
from .vit_loading import load_images, vit_from_checkpoint, vit_from_config


def load_source_config(source: str, cfg_options: Optional[dict] = None):
    """A config source with ``cfg_options`` merged and its ``custom_imports``
    imported."""
    from mmengine.config import Config
    cfg = Config.fromfile(source)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(**cfg.custom_imports)
    return cfg


def add_source_args(parser, source_help: str, out_help: str,
                    checkpoint_help: str) -> None:
    """The source, images and output of an analysis tool and the options of
    :func:`load_source_vit` (``--format`` lands in ``ckpt_format``), with the
    seed, device and config overrides both analysis tools take."""
    from mmengine.config import DictAction
    parser.add_argument('source', metavar='CONFIG_OR_CKPT', help=source_help)
    parser.add_argument(
        '--data', required=True, help='image folder, read recursively')
    parser.add_argument('--out', required=True, help=out_help)
    parser.add_argument('--checkpoint', help=checkpoint_help)
    parser.add_argument(
        '--format',
        dest='ckpt_format',
        default='auto',
        choices=FORMATS,
        help='checkpoint layout. Default: auto')
    parser.add_argument(
        '--arch',
        help='checkpoint source: mmpretrain arch '
        "name ('b', 'l', 'deit-s', ...) or "
        "'EMBED,LAYERS,HEADS[,FFN]'. Default: read off the "
        'weights, 64 channels per head')
    parser.add_argument(
        '--num-heads', type=int, help='override the head count')
    parser.add_argument(
        '--patch-size',
        type=int,
        help="default: the checkpoint's patch embedding kernel")
    parser.add_argument(
        '--img-size',
        type=int,
        help="default: the checkpoint's position grid x patch "
        'size')
    parser.add_argument(
        '--clip-norm',
        action='store_true',
        help="CLIP mean/std instead of ImageNet's (automatic "
        'for openai_clip files)')
    parser.add_argument(
        '--quick-gelu',
        action='store_true',
        help='QuickGELU MLPs (timm ports of OpenAI CLIP)')
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='image subset and random init. Default: 0')
    parser.add_argument(
        '--device',
        default=None,
        help='default: cuda when available, else cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='config source: key=value overrides')


def load_source_vit(tool: str,
                    source: str,
                    cfg=None,
                    component: str = 'student',
                    random_init: bool = False,
                    device: str = 'cpu',
                    checkpoint: Optional[str] = None,
                    ckpt_format: str = 'auto',
                    arch: Optional[str] = None,
                    num_heads: Optional[int] = None,
                    patch_size: Optional[int] = None,
                    img_size: Optional[int] = None,
                    clip_norm: bool = False,
                    quick_gelu: bool = False):
    """The analysis ViT of a config (``cfg``, loaded from ``source``) or of a
    checkpoint file ``source``; an unusable source ends ``tool`` with one line.

    Args:
        tool (str): Names the tool in the error line.
        source (str): A config or a checkpoint file.
        cfg (Config, optional): The config of a config source.
        component (str): Config source: ``'student'`` or a teacher's name
            (``'teacher_feat'`` / ``'teacher_rel'`` in the two-teacher form,
            a key of ``model.teachers`` otherwise; teachers default to the
            config's own checkpoint). Defaults to ``'student'``.
        random_init (bool): Config source: the seeded random init.
            Defaults to False.
        device (str): Defaults to ``'cpu'``.
        checkpoint (str, optional): Config source: the component's weights.
        ckpt_format (str): ``'auto'``, ``'mmpretrain'``, ``'openai_clip'`` or
            ``'timm'``. Defaults to ``'auto'``.
        arch (str, optional): Checkpoint source: mmpretrain arch name or
            ``'EMBED,LAYERS,HEADS[,FFN]'``; default read off the weights.
        num_heads (int, optional): Override the head count.
        patch_size (int, optional): Default: the patch embedding's kernel.
        img_size (int, optional): Default: position grid x patch size.
        clip_norm (bool): CLIP mean/std instead of ImageNet's (automatic for
            OpenAI CLIP files). Defaults to False.
        quick_gelu (bool): QuickGELU MLPs. Defaults to False.
    """
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        try:
            if cfg is not None:
                return vit_from_config(
                    cfg,
                    component,
                    checkpoint,
                    ckpt_format,
                    clip_norm=clip_norm or None,
                    random_init=random_init,
                    device=device)
            if checkpoint:
                raise ValueError('--checkpoint is for a config source; the '
                                 'source is already a checkpoint')
            return vit_from_checkpoint(
                source,
                ckpt_format,
                arch,
                num_heads,
                patch_size,
                img_size,
                clip_norm=True if clip_norm else None,
                quick_gelu=quick_gelu,
                device=device)
        except (CheckpointError, ValueError, FileNotFoundError) as e:
            raise SystemExit(f'{tool}: {e}') from None


def _device(device: Optional[str]) -> str:
    return device or ('cuda' if torch.cuda.is_available() else 'cpu')


def attention_stats_report(source: str,
                           data: str,
                           out: str,
                           component: str = 'student',
                           random_init: bool = False,
                           num_images: int = 64,
                           batch_size: int = 16,
                           seed: int = 0,
                           name: Optional[str] = None,
                           device: Optional[str] = None,
                           cfg_options: Optional[dict] = None,
                           **source_args) -> List[str]:
    """Per layer and head attention distance, entropy and NMI of a ViT on
    ``num_images`` images of ``data``, written to ``out``:
    ``attention_stats.csv`` (one row per layer and head),
    ``attention_stats.png`` and ``summary.txt`` (also printed).

    Args:
        source (str): A config or a checkpoint file.
        data (str): Image folder, read recursively.
        out (str): Output folder.
        component (str): With a HybridDistill config: ``'student'`` or a
            teacher's name (:func:`~.vit_loading.config_components`; a
            ZooTeacher is read through its own forward at its own
            ``img_size``). Defaults to ``'student'``.
        random_init (bool): Config source: the seeded random init.
            Defaults to False.
        num_images (int): Images to average over (seeded subset).
            Defaults to 64.
        batch_size (int): Defaults to 16.
        seed (int): Defaults to 0.
        name (str, optional): Model name in the CSV and plot title.
        device (str, optional): Default: cuda when available, else cpu.
        cfg_options (dict, optional): Config source: overrides.
        **source_args: ``checkpoint``, ``ckpt_format``, ``arch``,
            ``num_heads``, ``patch_size``, ``img_size``, ``clip_norm``,
            ``quick_gelu``: see :func:`load_source_vit`.

    Returns:
        list[str]: The summary lines.
    """
    device = _device(device)
    t0 = time.time()
    torch.manual_seed(seed)
    cfg = (
        load_source_config(source, cfg_options)
        if source.endswith('.py') else None)
    vit = load_source_vit('attention_stats', source, cfg, component,
                          random_init, device, **source_args)
    images, paths = load_images(data, vit.img_size, num_images, seed)
    if not name:  # a teacher of a config is named for its component
        weights = source_args.get('checkpoint') or source
        name = (
            component if component != 'student' and cfg is not None else
            osp.splitext(osp.basename(weights))[0])
    stats = compute_attention_stats(vit, images, batch_size)

    os.makedirs(out, exist_ok=True)
    csv_path = osp.join(out, 'attention_stats.csv')
    png_path = osp.join(out, 'attention_stats.png')
    write_csv(csv_path, stats, name, len(paths))
    h, w = vit.grid_hw
    ref = uniform_reference(vit.grid_hw, vit.patch_size)
    plot_stats({name: stats},
               png_path,
               title=f'{name}: {len(paths)} images, {vit.img_size[0]} px, '
               f'{h}x{w} patches',
               reference=ref)
    lines = [
        f'model: {name}', f'weights: {vit.source}',
        f'images: {len(paths)} from {data} at {vit.img_size[0]}x'
        f'{vit.img_size[1]} (mean {tuple(round(v, 2) for v in vit.mean)}, '
        f'std {tuple(round(v, 2) for v in vit.std)}), device {device}',
        f'{vit.model.num_layers} layers x {vit.model.num_heads} heads; '
        'per layer: head mean [min, max]; uniform attention would give '
        f"distance {ref['distance']:.2f} px, entropy {ref['entropy']:.3f} "
        'nats, NMI 0'
    ] + layer_summary(stats)
    with open(osp.join(out, 'summary.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    print(f'wrote {csv_path}, {png_path} ({time.time() - t0:.1f}s)')
    return lines


def importance_component(cfg, importance: Optional[str] = None) -> str:
    """The teacher of a HybridDistill config whose [CLS] attention ranks the
    tokens, as a component name of :func:`~.vit_loading.vit_from_config`.

    Args:
        cfg (mmengine.Config): The config.
        importance (str, optional): ``'feat'``, ``'rel'`` or (``teachers=``
            form) a teacher's name. Default: the config's
            ``importance_source``.

    Returns:
        str: ``'teacher_feat'`` / ``'teacher_rel'`` in the two-teacher form,
        the teacher's name otherwise (:func:`~mmhybrid.models.utils.
        config_checks.importance_teacher`).

    Raises:
        ValueError: One line naming the value when no teacher matches it.
    """
    from mmhybrid.models.utils.config_checks import importance_teacher
    source = importance or cfg.model.get('importance_source', 'feat')
    entries = cfg.model.get('teachers')
    if entries is None:
        if source not in ('feat', 'rel'):
            raise ValueError(f'importance_source {source!r}: expected '
                             "'feat' or 'rel' (a two-teacher config)")
        return f'teacher_{source}'
    name = importance_teacher(source, entries)
    if name is None:
        raise ValueError(f'importance_source {source!r}: expected \'feat\', '
                         "'rel' or a teacher of the config "
                         f'({", ".join(entries)})')
    return name


def schedule_from_config(cfg, importance: Optional[str] = None):
    """``(hook or None, max_iters or None, token_selection, importance
    teacher)`` of a HybridDistill config; the importance teacher is
    :func:`importance_component`'s (``importance`` overrides the config's
    ``importance_source``)."""
    from mmhybrid.engine.hooks.progressive_masking_hook import \
        ProgressiveMaskingHook
    from mmhybrid.engine.preflight import type_name
    hook = None
    for h in cfg.get('custom_hooks', None) or []:
        if type_name(h) == 'ProgressiveMaskingHook':
            kwargs = {
                k: v
                for k, v in h.items() if k not in ('type', 'priority')
            }
            hook = ProgressiveMaskingHook(**kwargs)
    train_cfg = cfg.get('train_cfg', None) or {}
    max_iters = train_cfg.get('max_iters')
    return (hook, max_iters, cfg.model.get('token_selection', 'sample'),
            importance_component(cfg, importance))


def masking_schedule_figure(source: str,
                            data: str,
                            out: str,
                            importance: Optional[str] = None,
                            final_ratio: Optional[float] = None,
                            schedule: Optional[str] = None,
                            selection: Optional[str] = None,
                            points: str = '0,0.25,0.5,0.75,1',
                            num_images: int = 4,
                            seed: int = 0,
                            device: Optional[str] = None,
                            cfg_options: Optional[dict] = None,
                            **source_args) -> str:
    """Kept vs. masked tokens along the progressive masking schedule, as one
    PNG grid (rows: images; columns: the image, the teacher's token importance,
    the kept tokens at each schedule point).

    The tokens are chosen as in training (``ratio_at`` / ``mask_ratio_at``,
    ``num_kept_tokens``, ``select_kept_tokens``), each column from the same
    random stream, so with ``sample`` the kept sets are nested.

    Args:
        source (str): A HybridDistill config or the importance teacher's
            checkpoint file.
        data (str): Image folder, read recursively.
        out (str): Output PNG, or a folder (``masking_schedule.png`` in it).
        importance (str, optional): Config source: ``'feat'``, ``'rel'`` or
            (``teachers=`` form) a teacher's name, whose [CLS] attention ranks
            tokens (:func:`importance_component`). Default: the config's.
        final_ratio (float, optional): Default: the config's hook, else 0.5.
        schedule (str, optional): ``'linear'``, ``'cosine'`` or
            ``'constant'``. Default: the config's hook, else linear.
        selection (str, optional): ``'sample'`` or ``'topk'``. Default: the
            config's token_selection, else sample.
        points (str): Schedule points, comma-separated fractions of training.
            Defaults to ``'0,0.25,0.5,0.75,1'``.
        num_images (int): Rows. Defaults to 4.
        seed (int): Defaults to 0.
        device (str, optional): Default: cuda when available, else cpu.
        cfg_options (dict, optional): Config source: overrides.
        **source_args: ``checkpoint`` (config source: the importance
            teacher's weights instead of the config's), ``ckpt_format``,
            ``arch``, ``num_heads``, ``patch_size``, ``img_size``,
            ``clip_norm``, ``quick_gelu``: see :func:`load_source_vit`.

    Returns:
        str: The PNG written.
    """
    from mmhybrid.models.utils.token_masking import (mask_ratio_at,
                                                     num_kept_tokens,
                                                     select_kept_tokens)
    device = _device(device)
    fractions = [float(v) for v in points.split(',') if v.strip()]
    if not fractions or not all(0.0 <= p <= 1.0 for p in fractions):
        raise SystemExit(f'--points must be fractions in [0, 1], got '
                         f'{points!r}')
    hook = max_iters = cfg = None
    default_selection, source_name = 'sample', 'teacher'
    fixed_ratio = None  # a config without the hook keeps model.mask_ratio
    if source.endswith('.py'):
        cfg = load_source_config(source, cfg_options)
        try:
            hook, max_iters, default_selection, source_name = \
                schedule_from_config(cfg, importance)
        except ValueError as e:
            raise SystemExit(f'visualize_masking: {e}') from None
        if hook is None:
            fixed_ratio = float(cfg.model.get('mask_ratio', 0.0))
    vit = load_source_vit(
        'visualize_masking',
        source,
        cfg,
        source_name,
        device=device,
        **source_args)
    selection = selection or default_selection
    default_final, default_schedule = ((hook.final_ratio,
                                        hook.schedule) if hook else
                                       (0.5,
                                        'linear') if fixed_ratio is None else
                                       (fixed_ratio, 'constant'))
    final = final_ratio if final_ratio is not None else default_final
    from_hook = (
        max_iters and hook is not None and final_ratio is None
        and schedule is None)
    schedule = schedule or default_schedule
    start = hook.start_ratio if hook else 0.0

    images, _ = load_images(data, vit.img_size, num_images, seed)
    with torch.no_grad():
        fwd = vit.model.forward_distill(vit.normalize(images), cls_attn=True)
    importance_map = fwd.cls_attn.float().cpu()  # (B, N)
    n = importance_map.shape[1]

    columns = []  # (title, keep mask (B, N) bool)
    for p in fractions:
        if from_hook:
            it = int(round(p * max_iters))
            ratio = hook.ratio_at(it, max_iters)
            label = f'iter {it}/{max_iters}'
        else:
            ratio = mask_ratio_at(p, final, schedule, start)
            label = f'{100 * p:.0f}% of training'
        k = num_kept_tokens(n, ratio)
        g = torch.Generator().manual_seed(seed)
        idx = select_kept_tokens(importance_map, k, selection, generator=g)
        keep = torch.zeros(importance_map.shape, dtype=torch.bool)
        keep.scatter_(1, idx, True)
        columns.append((f'{label}\nratio {ratio:.2f}, {k}/{n} kept', keep))

    out_path = out
    if osp.isdir(out_path) or not out_path.lower().endswith('.png'):
        out_path = osp.join(out_path, 'masking_schedule.png')
    _draw_masking(
        images, importance_map, columns, vit, source_name,
        f'progressive token masking: {schedule} to {final:.2f}, '
        f'selection {selection}; grey = masked', out_path)
    print(f'importance from {vit.source}')
    for title, _ in columns:
        print(f'  {title.replace(chr(10), ": ")}')
    print(f'wrote {out_path}')
    return out_path


def _draw_masking(images: torch.Tensor, importance: torch.Tensor,
                  columns: Sequence[tuple], vit, source_name: str, title: str,
                  path: str) -> None:
    """The masking grid: image, importance heat map, one column per schedule
    point (masked patches greyed out)."""
    from .attention_report import _plt, _save
    plt = _plt()
    gh, gw = vit.grid_hw
    ph, pw = vit.patch_size
    rows, cols = images.shape[0], 2 + len(columns)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.6), squeeze=False)
    imgs = images.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0
    for r in range(rows):
        axes[r, 0].imshow(imgs[r], interpolation='nearest')
        heat = importance[r].view(gh, gw).numpy()
        axes[r, 1].imshow(imgs[r], interpolation='nearest')
        axes[r, 1].imshow(
            np.kron(heat, np.ones((ph, pw))),
            cmap='inferno',
            alpha=0.65,
            interpolation='nearest')
        for c, (col_title, keep) in enumerate(columns):
            m = np.kron(keep[r].view(gh, gw).numpy().astype(np.float32),
                        np.ones((ph, pw)))[..., None]
            shown = imgs[r] * m + (0.25 * imgs[r] + 0.45) * (1 - m)
            axes[r, 2 + c].imshow(shown, interpolation='nearest')
            if r == 0:
                axes[r, 2 + c].set_title(col_title, fontsize=7)
        if r == 0:
            axes[r, 0].set_title('image', fontsize=7)
            axes[r, 1].set_title(
                f'importance\n({source_name} [CLS] attn)', fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    _save(fig, path, dpi=80)


def device_check(
    out: str,
    num_images: int = 64,
    img_size: int = 224,
    work: str = '/tmp/mmhybrid_analysis_gpu_check',
    devices: Sequence[str] = ('cuda', 'cpu')
) -> dict:
    """The analysis functions on two devices: same numbers, and how long they
    take (``tools/analysis/gpu_check.py``).

    Builds a ViT-B/16-shaped checkpoint in timm's layout (random, perturbed
    weights: the statistics of real weights are not the point) and
    ``num_images`` generated images in ``work``, runs
    :func:`attention_stats_report` on both devices and compares the CSVs, then
    :func:`masking_schedule_figure` on the first device.

    Returns:
        dict: ``max_abs_diff`` per metric over every (layer, head) and
        ``seconds`` per run (model build and image reading included).
    """
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from mmhybrid.datasets import make_imagenet_style
    from .attention_report import read_csv
    os.makedirs(out, exist_ok=True)
    val = osp.join(
        make_imagenet_style(
            osp.join(work, 'data'),
            num_train=0,
            num_val=num_images,
            size=64,
            seed=0), 'val')
    torch.manual_seed(0)
    vit = TimmViT(
        img_size=img_size,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        num_classes=0)
    with torch.no_grad():
        for prm in vit.parameters():
            prm.add_(torch.randn_like(prm) * 0.05)
    ckpt = osp.join(work, 'vit_b16_timm.pth')
    torch.save({'model': vit.state_dict()}, ckpt)

    seconds, stats = {}, []
    for i, device in enumerate(devices):
        t0 = time.time()
        folder = osp.join(out, f'stats{i}_{device}')
        attention_stats_report(
            ckpt,
            val,
            folder,
            ckpt_format='timm',
            num_images=num_images,
            batch_size=32,
            device=device)
        seconds[f'attention_stats {device}'] = time.time() - t0
        (per_model, ) = read_csv(osp.join(folder,
                                          'attention_stats.csv')).values()
        stats.append(per_model)
    worst = {
        m: float(np.abs(stats[0][m] - stats[1][m]).max())
        for m in stats[0]
    }
    print(f'max |{devices[0]} - {devices[1]}| over every (layer, head):',
          worst)
    t0 = time.time()
    masking_schedule_figure(
        ckpt,
        val,
        osp.join(out, 'masking.png'),
        ckpt_format='timm',
        device=devices[0])
    seconds[f'visualize_masking {devices[0]}'] = time.time() - t0
    print('seconds (incl. model build and image reading):', {
        k: round(v, 1)
        for k, v in seconds.items()
    })
    return dict(max_abs_diff=worst, seconds=seconds)
