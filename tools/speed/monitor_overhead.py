"""What the monitoring hooks cost a pretraining run at their configured
intervals, measured in one process against the training step.

    python tools/speed/monitor_overhead.py configs/hybrid_vitb.py \\
        --preset cpu-small

The model is the config's, built as ``tools/speed/pretrain_speed.py`` builds
it for the preset (``cpu-small``: ViT-S/16 student and teachers at 224 px,
batch 8, fp32, random teacher weights); the hooks are the config's own
``AttentionDiversityHook`` and ``KNNMonitorHook`` entries (their intervals and
sizes). Interleaved rounds (so drift of the machine cancels), medians:

* the training step (``train_step`` at mask ratio 0.25, the mean of the
  flagship's linear 0 -> 0.5 schedule) and its time per image;
* one attention check (``AttentionDiversityHook.check``: the student's
  attention maps of the fixed images, the statistics, the logging);
* the k-NN monitor's forward per image (the student in eval mode, [CLS]
  pooled), and its votes on a bank and query set 1/``--knn-scale`` of the
  configured ones (scaled back up quadratically).

Then, per hook, the overhead with / without it over the configured run:

* attention: ``t_check * (1 / interval + 1 / iters_per_epoch) / t_step``
  (the checks every ``interval`` iterations and at each epoch's end);
* k-NN: ``(bank + val) * t_forward_per_image + t_votes`` once every
  ``interval`` epochs, over ``interval * train_images * t_step_per_image``;
  and, for a data-loading-bound run (decoding a JPEG costs the same for both),
  the image-count bound ``(bank + val) / (interval * train_images)``.

The sizes of the run (``--train-images``, ``--val-images``, ``--gpus``: the
ImageNet-1K of the flagship on 8 GPUs) give the epoch length and the k-NN
sets. The last line is machine-readable:

    RATIOS attention=X knn=Y knn_data_bound=Z total=W
"""
import argparse
import copy
import importlib.util
import math
import os.path as osp
import statistics
import sys
import tempfile
import time
import types

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)


def _pretrain_speed():
    """tools/speed/pretrain_speed.py as a module (its presets and builders)."""
    path = osp.join(ROOT, 'tools', 'speed', 'pretrain_speed.py')
    spec = importlib.util.spec_from_file_location('pretrain_speed', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('config')
    p.add_argument('--preset', default='cpu-small', choices=['cpu-small'])
    p.add_argument('--rounds', type=int, default=8, help='timed rounds')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--steps-per-round', type=int, default=3)
    p.add_argument(
        '--train-images',
        type=int,
        default=1281167,
        help='images per epoch. Default: ImageNet-1K train')
    p.add_argument(
        '--val-images',
        type=int,
        default=50000,
        help="the k-NN queries when the hook's val_size is None. Default: "
        'ImageNet-1K val')
    p.add_argument(
        '--gpus',
        type=int,
        default=8,
        help="processes of the configured run (the config's batch is per "
        'process). Default: 8')
    p.add_argument(
        '--knn-scale',
        type=int,
        default=10,
        help='k-NN votes timed on sets this many times smaller')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def _hook_cfgs(cfg):
    found = {}
    for h in cfg.get('custom_hooks') or []:
        name = str(h.get('type', '')).split('.')[-1]
        if name in ('AttentionDiversityHook', 'KNNMonitorHook'):
            found[name] = {k: v for k, v in h.items() if k != 'type'}
    return found


def _fake_runner(model, work_dir, max_iters):
    """What the hooks read off a runner: the model, the message hub, the
    visualizer (no backend: writing a JSON line is not what is measured), the
    log folder and the iteration counters."""
    from mmengine.config import Config
    from mmengine.logging import MessageHub
    from mmengine.visualization import Visualizer
    return types.SimpleNamespace(
        model=model,
        cfg=Config(dict()),
        message_hub=MessageHub.get_instance('monitor_overhead'),
        visualizer=Visualizer.get_instance('monitor_overhead'),
        log_dir=work_dir,
        work_dir=work_dir,
        iter=0,
        max_iters=max_iters,
        epoch=0)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmpretrain.structures import DataSample

    import mmhybrid  # noqa: F401  (registers the components)
    from mmhybrid.engine.hooks import AttentionDiversityHook, KNNMonitorHook
    from mmhybrid.engine.hooks.monitor_inputs import (eval_mode, input_norm,
                                                      normalize, rgb_images)
    from mmhybrid.engine.knn import knn_votes, pool_features, subset_indices
    ps = _pretrain_speed()
    preset = ps.PRESETS[args.preset]
    torch.manual_seed(0)
    torch.set_num_threads(torch.get_num_threads())
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    hooks = _hook_cfgs(cfg)
    missing = {'AttentionDiversityHook', 'KNNMonitorHook'} - set(hooks)
    if missing:
        raise SystemExit(f'monitor_overhead: {args.config} has no '
                         f'{sorted(missing)} in custom_hooks')
    MMLogger.get_instance('monitor_overhead', log_level='WARNING')
    build_args = types.SimpleNamespace(
        config=args.config, cfg_options=args.cfg_options, arch=preset['arch'])
    model_cfg = ps.build_model_cfg(build_args)
    device, batch = preset['device'], preset['batch_size']
    model = ps.build(model_cfg, device)
    optim = ps.build_optim(model, model_cfg, amp=False)
    size = tuple(model.backbone.img_size)
    # a batch as the pipeline packs it: uint8 BGR, then the data preprocessor
    images = torch.randint(0, 256, (batch, 3) + size, dtype=torch.uint8)
    data = dict(
        inputs=images, data_samples=[DataSample() for _ in range(batch)])
    model.mask_ratio = 0.25

    def step():
        model.train()
        model.train_step(copy.deepcopy(data), optim_wrapper=optim)

    # the hooks as configured
    attn_kwargs = hooks['AttentionDiversityHook']
    attn = AttentionDiversityHook(**attn_kwargs)
    knn_kwargs = hooks['KNNMonitorHook']
    knn = KNNMonitorHook(**knn_kwargs)
    per_epoch = math.ceil(args.train_images /
                          (args.gpus * cfg.train_dataloader.batch_size))
    max_iters = per_epoch * cfg.train_cfg.get('max_epochs', 1)
    work = tempfile.mkdtemp(prefix='monitor_overhead_')
    runner = _fake_runner(model, work, max_iters)
    fixed = torch.randint(
        0, 256, (attn.num_images, 3) + size, dtype=torch.uint8)
    t0 = time.perf_counter()
    attn._take_images(runner, fixed)  # the one-time teacher references
    t_refs = time.perf_counter() - t0

    mean, std, to_rgb = input_norm(model.data_preprocessor)
    knn_batch = images

    def knn_forward():
        with eval_mode(model.backbone):
            x = normalize(rgb_images(knn_batch, to_rgb), mean, std)
            pool_features(model.backbone(x), knn.feature)

    bank = len(subset_indices(args.train_images, knn.bank_size))
    val = len(subset_indices(args.val_images, knn.val_size))
    dims = model.backbone.embed_dims
    small_bank = torch.randn(max(bank // args.knn_scale, knn.k), dims)
    small_labels = torch.randint(0, 1000, (small_bank.shape[0], ))
    small_val = torch.randn(max(val // args.knn_scale, 1), dims)

    def knn_vote():
        knn_votes(small_bank, small_labels, small_val, knn.k, knn.temperature,
                  1000)

    timings = {'step': [], 'check': [], 'knn_forward': [], 'knn_votes': []}
    for r in range(args.warmup + args.rounds):
        measured = r >= args.warmup
        for _ in range(args.steps_per_round):
            t0 = time.perf_counter()
            step()
            if measured:
                timings['step'].append(time.perf_counter() - t0)
        for name, fn in (('check', lambda: attn.check(runner, r + 1)),
                         ('knn_forward', knn_forward), ('knn_votes',
                                                        knn_vote)):
            t0 = time.perf_counter()
            fn()
            if measured:
                timings[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}

    t_step, t_check = med['step'], med['check']
    attn_ratio = t_check * (1 / attn.interval + 1 / per_epoch) / t_step
    fwd_img = med['knn_forward'] / batch
    step_img = t_step / batch
    votes = med['knn_votes'] * args.knn_scale**2
    knn_interval = knn.interval if knn.by_epoch else knn.interval / per_epoch
    knn_eval = (bank + val) * fwd_img + votes
    knn_ratio = knn_eval / (knn_interval * args.train_images * step_img)
    knn_data = (bank + val) / (knn_interval * args.train_images)

    print(f'config {args.config}, preset {args.preset} ({preset["arch"]} '
          f'student and teachers at {size[0]} px, batch {batch}, '
          f'{device}, fp32), {torch.get_num_threads()} threads; '
          f'{args.rounds} rounds x {args.steps_per_round} steps, medians')
    print(f'training step: {t_step * 1e3:.0f} ms ({step_img * 1e3:.1f} ms '
          'per image, mask ratio 0.25)')
    print(f'AttentionDiversityHook(interval={attn.interval}, '
          f'num_images={attn.num_images}): one check {t_check * 1e3:.0f} ms '
          f'= {t_check / t_step:.3f} steps '
          f'({attn.num_images} images, {model.backbone.num_layers} layers); '
          f'teacher references once {t_refs * 1e3:.0f} ms')
    print(f'  every {attn.interval} iterations + each epoch end '
          f'({per_epoch} iterations per epoch: {args.train_images} images / '
          f'({args.gpus} x {cfg.train_dataloader.batch_size})): overhead '
          f'{attn_ratio * 100:.3f} % of training time')
    print(f'KNNMonitorHook(interval={knn.interval} '
          f'{"epochs" if knn.by_epoch else "iterations"}, bank_size='
          f'{knn.bank_size}, val_size={knn.val_size}, k={knn.k}): forward '
          f'{fwd_img * 1e3:.1f} ms per image '
          f'({fwd_img / step_img:.3f} x a training step\'s per image); votes '
          f'of {val} queries on a bank of {bank}: '
          f'{votes:.1f} s (timed at 1/{args.knn_scale} of both sets)')
    print(f'  one evaluation of {bank} + {val} images: {knn_eval:.0f} s on '
          f'this preset vs {knn_interval * args.train_images * step_img:.0f} '
          f's of training between evaluations: overhead '
          f'{knn_ratio * 100:.3f} % (compute); a data-loading-bound run: '
          f'{knn_data * 100:.3f} % (images read)')
    total = attn_ratio + max(knn_ratio, knn_data)
    print(f'both hooks: {total * 100:.3f} % of training time (the k-NN at '
          'the larger of its two figures)')
    print(f'RATIOS attention={attn_ratio:.5f} knn={knn_ratio:.5f} '
          f'knn_data_bound={knn_data:.5f} total={total:.5f}')
    return dict(
        attention=attn_ratio,
        knn=knn_ratio,
        knn_data_bound=knn_data,
        total=total,
        timings=med)


if __name__ == '__main__':
    main()
