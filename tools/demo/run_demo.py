"""The main job in miniature, on the CPU, in a few minutes.

1. generate the built-in shapes data (ImageNet-style folder);
2. train the two tiny teachers with mmpretrain's own algorithms: a supervised
   ViT classifier (feature teacher Tc) and an MAE (relation teacher Tm);
3. hybrid-distil a tiny student from them (progressive token masking 0 -> 0.5);
4. linear-probe the student, both teachers and a randomly initialised ViT, and
   print one table.

Every stage is a plain ``tools/train.py`` run of a config in ``configs/demo/``;
the commands are printed so each can be rerun alone.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = osp.join(ROOT, 'configs', 'demo')


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--data-root', default='data/shapes')
    p.add_argument('--iters', type=int, default=300,
                   help='iterations of each teacher and of the distillation')
    p.add_argument('--probe-iters', type=int, default=200)
    p.add_argument('--num-train', type=int, default=1000)
    p.add_argument('--num-val', type=int, default=250)
    p.add_argument('--workers', type=int, default=0,
                   help='data loader workers per run (on two cores, worker '
                   'processes only compete with training for them)')
    return p.parse_args()


def run(name, config, work_dir, options, log_dir):
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
           '--work-dir', work_dir]
    if options:
        cmd += ['--cfg-options'] + options
    print(f'[demo] {name}: {" ".join(cmd[1:])}', flush=True)
    t0 = time.time()
    log = osp.join(log_dir, f'{name}.log')
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=os.getcwd())
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        sys.exit(f'[demo] {name} failed (exit {proc.returncode}); log: {log}\n{tail}')
    print(f'[demo] {name}: done in {time.time() - t0:.0f}s (log: {log})', flush=True)


def last_scalar(work_dir, key):
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    value = None
    for line in open(files[-1]):
        rec = json.loads(line)
        if key in rec:
            value = rec[key]
    return value


def first_last_loss(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    recs = [json.loads(line) for line in open(files[-1])]
    recs = [r for r in recs if 'loss' in r]
    return recs[0], recs[-1]


def feature_fit(hybrid_cfg, options, ckpt, data_root):
    """How much of the feature teacher's whitened tokens the student's projected
    tokens explain on the val images (R^2), for [CLS] and for patch tokens."""
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from PIL import Image

    from mmhybrid.models.losses import whiten
    from mmhybrid.utils import load_checkpoint_file
    cfg = Config.fromfile(hybrid_cfg)
    cfg.merge_from_dict(dict(kv.split('=', 1) for kv in options))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    model.load_state_dict(load_checkpoint_file(ckpt)['state_dict'], strict=False)
    model.eval()
    files = sorted(glob.glob(osp.join(data_root, 'val', '*', '*.png')))
    imgs = torch.stack([
        torch.from_numpy(np.array(Image.open(f).convert('RGB'))).permute(2, 0, 1)
        for f in files
    ]).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x = (imgs - mean) / std
    with torch.no_grad():
        pred = model.neck(model.backbone.forward_distill(x).tokens)
        target = whiten(model.teacher_feat(x).tokens.clone())
    fit = {}
    for name, part in (('[CLS]', slice(0, 1)), ('patches', slice(1, None))):
        err = (pred[:, part] - target[:, part]).square().mean()
        fit[name] = 1.0 - (err / target[:, part].var()).item()
    return fit


def main():
    args = parse_args()
    sys.path.insert(0, ROOT)
    from mmhybrid.datasets import make_imagenet_style

    t_start = time.time()
    wd = args.work_dir
    os.makedirs(wd, exist_ok=True)
    data = make_imagenet_style(
        osp.join(args.data_root, 'imagenet'), num_train=args.num_train,
        num_val=args.num_val, size=64, seed=0)
    print(f'[demo] data: {data} ({args.num_train} train / {args.num_val} val '
          'images, 5 classes)', flush=True)
    data_opts = [f'train_dataloader.dataset.data_root={data}',
                 f'train_dataloader.num_workers={args.workers}']
    # The test set too: preflight checks every dataset a config names.
    val_opts = [f'val_dataloader.dataset.data_root={data}',
                f'test_dataloader.dataset.data_root={data}',
                f'val_dataloader.num_workers={args.workers}',
                f'test_dataloader.num_workers={args.workers}']
    it = args.iters

    def iters(n):
        return [f'train_cfg.max_iters={n}', f'default_hooks.checkpoint.interval={n}']

    sup_dir, mae_dir = osp.join(wd, 'teacher_sup'), osp.join(wd, 'teacher_mae')
    hyb_dir = osp.join(wd, 'hybrid')
    run('teacher_sup', osp.join(CFG, 'vit-tiny-p8_sup_1xb32-300i_shapes.py'),
        sup_dir, [*data_opts, *val_opts, f'train_cfg.val_interval={it}'] + iters(it)
        + [f'param_scheduler.1.end={it}'], wd)
    run('teacher_mae', osp.join(CFG, 'mae_vit-tiny-p8_1xb32-300i_shapes.py'),
        mae_dir, data_opts + iters(it) + [f'param_scheduler.1.end={it}'], wd)
    sup_ckpt = osp.join(sup_dir, f'iter_{it}.pth')
    mae_ckpt = osp.join(mae_dir, f'iter_{it}.pth')
    run('hybrid_distill',
        osp.join(CFG, 'hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'), hyb_dir,
        [*data_opts, f'model.teacher_feat.checkpoint={sup_ckpt}',
         f'model.teacher_rel.checkpoint={mae_ckpt}'] + iters(it)
        + [f'param_scheduler.1.end={it}'], wd)
    first, last = first_last_loss(hyb_dir)
    fit = feature_fit(
        osp.join(CFG, 'hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'),
        [f'model.teacher_feat.checkpoint={sup_ckpt}',
         f'model.teacher_rel.checkpoint={mae_ckpt}'],
        osp.join(hyb_dir, f'iter_{it}.pth'), data)

    rows = []
    probe_cfg = osp.join(CFG, 'linear-probe_vit-tiny-p8_1xb64-200i_shapes.py')
    pit = args.probe_iters
    for name, ckpt in [('hybrid student', osp.join(hyb_dir, f'iter_{it}.pth')),
                       ('teacher Tc (supervised ViT)', sup_ckpt),
                       ('teacher Tm (MAE)', mae_ckpt),
                       ('random init (no pretraining)', None)]:
        slug = 'probe_' + name.split()[0] + ('_' + name.split()[1]
                                              if name.startswith('teacher') else '')
        init = (f'model.backbone.init_cfg.checkpoint={ckpt}' if ckpt else
                'model.backbone.init_cfg=None')
        run(slug, probe_cfg, osp.join(wd, slug),
            [*data_opts, *val_opts, init, f'train_cfg.max_iters={pit}',
             f'train_cfg.val_interval={pit}', f'param_scheduler.0.end={pit}',
             f'default_hooks.checkpoint.interval={pit}'], wd)
        rows.append((name, last_scalar(osp.join(wd, slug), 'accuracy/top1')))

    lines = [
        '', f'Hybrid Distillation demo (CPU, shapes data, {it} iterations per '
        f'pretraining, {pit}-iteration linear probe)', '',
        '| model | linear-probe top-1 (%) |', '|---|---|'
    ]
    lines += [f'| {n} | {a:.1f} |' for n, a in rows]
    lines += [
        '',
        f"distillation losses: loss_feat {first['loss_feat']:.4f} -> "
        f"{last['loss_feat']:.4f}, loss_rel {first['loss_rel']:.4f} -> "
        f"{last['loss_rel']:.4f}, mask_ratio {first['mask_ratio']:.2f} -> "
        f"{last['mask_ratio']:.2f}",
        'share of the feature teacher\'s whitened tokens explained by the '
        'student (R^2 on val): ' + ', '.join(f'{k} {v:.2f}' for k, v in fit.items()),
        f'total time: {time.time() - t_start:.0f}s'
    ]
    report = '\n'.join(lines)
    print(report)
    with open(osp.join(wd, 'report.md'), 'w') as f:
        f.write(report + '\n')


if __name__ == '__main__':
    main()
