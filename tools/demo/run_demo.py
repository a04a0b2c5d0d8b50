"""The main job in miniature, on the CPU, in about five minutes: `make demo`.

1. data: the built-in generated objects (5 shape classes, 64 px), or your own
   ImageNet-style folder (``--data-root``: class folders in ``train/`` and
   ``val/``, or mmpretrain's ``meta/{train,val}.txt``);
2. the two tiny teachers, trained with mmpretrain's own algorithms: a
   supervised ViT classifier (feature teacher Tc) and an MAE (relation teacher
   Tm), side by side;
3. hybrid distillation of a tiny student from them (progressive token masking
   0 -> 0.5);
4. evaluation of the student, both teachers and a random initialisation: a
   linear probe (training stages), k-NN on frozen [CLS] features (k = 20,
   cosine) and attention statistics per layer and head;
5. one table, one line on attention diversity, and a PNG of the per-layer
   attention distance and NMI (``WORK_DIR/attention_layers.png``).

Every training stage is a ``tools/train.py`` run of a ``configs/demo/`` config;
the commands are printed (and kept in ``WORK_DIR/logs/*.cmd``) so each stage
can be rerun alone. ``make study`` is the same pipeline with four students and
several seeds (``tools/analysis/run_study.py``).
"""
import argparse
import importlib.util
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)
CFG = osp.join(ROOT, 'configs', 'demo')
SUP_CFG = osp.join(CFG, 'vit-tiny-p8_sup_1xb32-300i_shapes.py')
MAE_CFG = osp.join(CFG, 'mae_vit-tiny-p8_1xb32-300i_shapes.py')
HYB_CFG = osp.join(CFG, 'hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py')
PROBE_CFG = osp.join(CFG, 'linear-probe_vit-tiny-p8_1xb64-200i_shapes.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--data-root', default=None,
                   help='your own ImageNet-style folder (train/ and val/ with '
                   'class folders, or meta/train.txt + meta/val.txt). '
                   'Default: the built-in generated objects')
    p.add_argument('--builtin-root', default='data/shapes/objects',
                   help='where the built-in data is written (once)')
    p.add_argument('--num-classes', type=int, default=None,
                   help='default: inferred from the data')
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--patch-size', type=int, default=8)
    p.add_argument('--iters', type=int, default=300,
                   help='iterations of the supervised teacher and of the '
                   'distillation; the MAE teacher runs twice as many (they '
                   'are cheap: it encodes a quarter of the tokens)')
    p.add_argument('--probe-iters', type=int, default=200)
    p.add_argument('--num-train', type=int, default=5000,
                   help='built-in data: training images')
    p.add_argument('--num-val', type=int, default=500,
                   help='built-in data: validation images')
    p.add_argument('--attn-images', type=int, default=64)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--jobs', type=int, default=2,
                   help='independent stages at once (each with 2 // jobs '
                   'threads)')
    p.add_argument('--subprocess', action='store_true',
                   help='run tools/train.py processes instead of forked '
                   'children of this process')
    p.add_argument('--resume', action='store_true',
                   help='keep stages an earlier run finished with the same '
                   'command')
    return p.parse_args(argv)


def load_train_tool():
    """``tools/train.py`` as a module (forked stages call its ``main``),
    checked by :func:`mmhybrid.analysis.miniature.check_train_tool`."""
    from mmhybrid.analysis.miniature import check_train_tool
    spec = importlib.util.spec_from_file_location(
        '_mmhybrid_tools_train', osp.join(ROOT, 'tools', 'train.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    check_train_tool(mod)
    return mod


def main(argv=None):
    args = parse_args(argv)
    import mmhybrid  # noqa: F401  (imported once; forked stages inherit it)
    from mmhybrid.analysis.attention_report import (plot_layer_means,
                                                    uniform_reference)
    from mmhybrid.analysis.miniature import (Stage, Stages, attention_stats_of,
                                             data_options, head_spread,
                                             in_child, knn_eval, last_scalar,
                                             model_options, resolve_data,
                                             save_random_init, scalars,
                                             schedule_options)
    t_start = time.time()
    wd = osp.abspath(args.work_dir)
    os.makedirs(wd, exist_ok=True)
    data, what = resolve_data('run_demo', args.data_root, args.num_classes,
                              args.img_size, args.patch_size,
                              args.builtin_root, args.num_train, args.num_val)
    print(f'[demo] data: {what}', flush=True)

    it, pit = args.iters, args.probe_iters
    size = (args.img_size, args.patch_size, data.num_classes)
    common = [f'randomness.seed={args.seed}', 'default_hooks.logger.interval=50']

    def opts(kind, iters, loaders=('train', ), warmup=True):
        return (common + data_options(data, 0, loaders)
                + model_options(kind, *size)
                + schedule_options(iters, warmup)
                + [f'train_cfg.max_iters={iters}',
                   f'default_hooks.checkpoint.interval={iters}'])

    # The MAE's attention grows more diverse with training (per-head spread of
    # attention distance 0.47 / 0.96 / 1.10 px after 300 / 600 / 900
    # iterations); it takes ~0.09 s per iteration, so twice the supervised
    # teacher's iterations still end with it, side by side.
    mit = 2 * it
    sup_dir, mae_dir = osp.join(wd, 'teacher_sup'), osp.join(wd, 'teacher_mae')
    hyb_dir = osp.join(wd, 'hybrid')
    sup_ckpt = osp.join(sup_dir, f'iter_{it}.pth')
    mae_ckpt = osp.join(mae_dir, f'iter_{mit}.pth')
    hyb_ckpt = osp.join(hyb_dir, f'iter_{it}.pth')
    # the random reference: initialised as the students are, one network
    # read alike by the probe, k-NN and the attention statistics
    eval_opts = data_options(data, 0, ('val', )) + model_options('probe', *size)
    rand_ckpt = osp.join(wd, 'random_init.pth')
    in_child(save_random_init, PROBE_CFG, eval_opts, args.seed, rand_ckpt)
    models = [('hybrid student', 'hybrid', hyb_ckpt),
              ('teacher Tc (supervised ViT)', 'Tc', sup_ckpt),
              ('teacher Tm (MAE)', 'Tm', mae_ckpt),
              ('random init (no pretraining)', 'random', rand_ckpt)]
    # rough costs (iterations x relative time per iteration) for the ETA
    eval_cost = 0.3 * it
    stages = Stages(wd, ROOT, None if args.subprocess else
                    load_train_tool().main, jobs=args.jobs,
                    resume=args.resume,
                    total_cost=it * (1 + 1 + 2) + pit * 0.5 * 4 + 4 * eval_cost)

    stages.run([
        Stage('teacher_sup', SUP_CFG, sup_dir,
              opts('sup', it, ('train', 'val', 'test'))
              + [f'train_cfg.val_interval={it}'], it),
        Stage('teacher_mae', MAE_CFG, mae_dir, opts('mae', mit), it),
    ])
    if stages.failed:
        sys.exit(f'[demo] failed: {stages.failed}')
    stages.jobs, stages.threads = 1, 2  # one stage: both cores
    stages.run([
        Stage('hybrid_distill', HYB_CFG, hyb_dir,
              opts('hybrid', it) + [
                  f'model.teacher_feat.checkpoint={sup_ckpt}',
                  f'model.teacher_rel.checkpoint={mae_ckpt}'
              ], 2 * it)
    ])
    if stages.failed:
        sys.exit(f'[demo] failed: {stages.failed}')
    stages.jobs, stages.threads = args.jobs, max(1, 2 // args.jobs)
    probe_opts = opts('probe', pit, ('train', 'val', 'test'), warmup=False)
    stages.run([
        Stage(f'probe_{tag}', PROBE_CFG, osp.join(wd, f'probe_{tag}'),
              probe_opts + [f'train_cfg.val_interval={pit}',
                            f'model.backbone.init_cfg.checkpoint={ckpt}'],
              0.5 * pit) for _, tag, ckpt in models
    ])
    if stages.failed:
        sys.exit(f'[demo] failed: {stages.failed}')

    # in this process: k-NN on frozen features, attention statistics
    t0 = time.time()
    rows, stats = [], {}
    for name, tag, ckpt in models:
        knn = knn_eval(PROBE_CFG, eval_opts, ckpt, data, k=20, seed=args.seed)
        stats[tag] = attention_stats_of(PROBE_CFG, eval_opts, ckpt,
                                        osp.join(data.root, 'val'),
                                        args.attn_images, args.seed)
        rows.append((name, tag, last_scalar(osp.join(wd, f'probe_{tag}'),
                                            'accuracy/top1'), knn))
        stages.add_done(eval_cost)
        print(f'[demo] k-NN and attention of {tag}: done '
              f'({stages.progress()})', flush=True)
    grid = (args.img_size // args.patch_size, ) * 2
    ref = uniform_reference(grid, args.patch_size)
    png = plot_layer_means(
        {'Tc: supervised': stats['Tc'], 'Tm: MAE': stats['Tm'],
         'hybrid student': stats['hybrid'], 'random init': stats['random']},
        osp.join(wd, 'attention_layers.png'), reference=ref)
    eval_time = time.time() - t0

    recs = [r for r in scalars(hyb_dir) if 'loss' in r]
    own = last_scalar(sup_dir, 'accuracy/top1')
    d = {t: s['distance'] for t, s in stats.items()}
    lines = [
        '', f'Hybrid Distillation demo (CPU; {what}; {args.img_size} px, '
        f'{args.patch_size} px patches; {it} iterations of Tc and of the '
        f'distillation, {mit} of Tm; '
        f'{pit}-iteration linear probe, k-NN k=20 on frozen [CLS])', '',
        '| model | linear probe top-1 (%) | k-NN top-1 (%) |', '|---|---|---|'
    ]
    lines += [f'| {n} | {p:.1f} | {k:.1f} |' for n, _, p, k in rows]
    lines += [
        '',
        f'Tc\'s own supervised training reached {own:.1f} % val top-1. '
        f'Chance: {100 / data.num_classes:.1f} %.',
        'attention diversity (spread of mean attention distance across heads, '
        'averaged over layers; uniform attention: '
        f"{ref['distance']:.1f} px at every head): student "
        f"{head_spread(stats['hybrid']):.2f} px, Tc "
        f"{head_spread(stats['Tc']):.2f} px, Tm {head_spread(stats['Tm']):.2f} "
        f"px; layer-1 mean distance: student {d['hybrid'][0].mean():.1f}, Tc "
        f"{d['Tc'][0].mean():.1f}, Tm {d['Tm'][0].mean():.1f} px; "
        f"NMI (mean of layers): student {stats['hybrid']['nmi'].mean():.3f}, "
        f"Tc {stats['Tc']['nmi'].mean():.3f}, Tm "
        f"{stats['Tm']['nmi'].mean():.3f}",
        f"distillation losses: loss_feat {recs[0]['loss_feat']:.4f} -> "
        f"{recs[-1]['loss_feat']:.4f}, loss_rel {recs[0]['loss_rel']:.4f} -> "
        f"{recs[-1]['loss_rel']:.4f}, mask_ratio {recs[0]['mask_ratio']:.2f} "
        f"-> {recs[-1]['mask_ratio']:.2f}",
        f'per-layer attention distance and NMI: {png}',
        'stage times: ' + ', '.join(f'{k} {v:.0f}s'
                                    for k, v in stages.times.items())
        + f', k-NN + attention {eval_time:.0f}s',
        f'total time: {time.time() - t_start:.0f}s'
    ]
    report = '\n'.join(lines)
    print(report)
    with open(osp.join(wd, 'report.md'), 'w') as f:
        f.write(report + '\n')


if __name__ == '__main__':
    main()
