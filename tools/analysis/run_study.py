"""The paper's study in miniature, on the CPU: `make study`.

The demo's pipeline (:mod:`mmhybrid.analysis.miniature`) with four students and
several seeds, on the built-in generated objects or any ImageNet-style folder
(``--data-root``):

1. the two tiny teachers, trained once (seed 0) with mmpretrain's own
   algorithms: a supervised ViT classifier (feature teacher Tc) and an MAE
   (relation teacher Tm);
2. for every seed, four students with identical budget (config, iterations,
   batch, schedule; the seed fixes their initialisation and data order, and is
   the only difference between repeats):

   ==================  ==================================================
   feature-only        ``model.loss_rel.loss_weight=0`` (FD-like)
   relation-only       ``model.loss_feat.loss_weight=0`` (TinyMIM-like)
   hybrid              the demo config as is (both terms, weight 1 each,
                       progressive masking 0 -> 0.5)
   hybrid, no masking  ``custom_hooks=[]``: no ProgressiveMaskingHook, so
                       the student always encodes every token
   ==================  ==================================================

   A zero-weight term is still computed (both teachers run), so the students
   cost the same per iteration except the unmasked one; every student keeps
   Tc's [CLS] attention as the token importance;
3. per model and seed: linear probe and short fine-tune (training stages),
   k-NN top-1 on frozen [CLS] features (k = 20, cosine; no training, so no
   probe noise), attention distance / entropy / NMI per layer and head,
   feature distance to Tc and relation KL to Tm, seconds per iteration;
4. ``WORK_DIR/report.md``: mean +- std over seeds, plots with error bands and
   bars, and a verdict on each of the paper's three claims.

``--quick`` is the same pipeline on a fraction of the data and iterations with
two seeds (the CI test runs it); its numbers mean nothing.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)
DEMO = osp.join(ROOT, 'configs', 'demo')
SUP_CFG = osp.join(DEMO, 'vit-tiny-p8_sup_1xb32-300i_shapes.py')
MAE_CFG = osp.join(DEMO, 'mae_vit-tiny-p8_1xb32-300i_shapes.py')
HYB_CFG = osp.join(DEMO, 'hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py')
PROBE_CFG = osp.join(DEMO, 'linear-probe_vit-tiny-p8_1xb64-200i_shapes.py')
FT_CFG = osp.join(DEMO, 'finetune_vit-tiny-p8_1xb32-150i_shapes.py')

# name, label, description, extra --cfg-options
STUDENTS = [
    ('feature_only', 'feature-only', 'features of Tc only (FD-like)',
     ['model.loss_rel.loss_weight=0.0']),
    ('relation_only', 'relation-only', 'relations of Tm only (TinyMIM-like)',
     ['model.loss_feat.loss_weight=0.0']),
    ('hybrid', 'hybrid', 'hybrid: features of Tc + relations of Tm', []),
    ('hybrid_no_mask', 'hybrid, no mask', 'hybrid without progressive masking',
     ['custom_hooks=[]']),
]
REFS = [('teacher_sup', 'Tc: supervised', 'reference: supervised ViT (Tc)'),
        ('teacher_mae', 'Tm: MAE', 'reference: MAE (Tm)'),
        ('random_init', 'random init', 'reference: no pretraining')]
FULL = dict(num_train=5000, num_val=500, teacher_iters=300, student_iters=300,
            probe_iters=100, finetune_iters=150, attn_images=64, batch=32,
            probe_batch=64)
QUICK = dict(num_train=100, num_val=40, teacher_iters=12, student_iters=12,
             probe_iters=8, finetune_iters=8, attn_images=16, batch=16,
             probe_batch=16)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='The Hybrid Distillation study in miniature (CPU).')
    p.add_argument('--work-dir', default='work_dirs/study')
    p.add_argument('--quick', action='store_true',
                   help='a few iterations of everything, two seeds (CI); '
                   'numbers are meaningless')
    p.add_argument('--seeds', type=int, nargs='+', default=None,
                   help='one repeat per seed. Default: 0 1 2 (quick: 0 1)')
    p.add_argument('--data-root', default=None,
                   help='your own ImageNet-style folder (train/ and val/ with '
                   'class folders, or meta/train.txt + meta/val.txt). '
                   'Default: the built-in generated objects')
    p.add_argument('--num-classes', type=int, default=None,
                   help='default: inferred from the data')
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--patch-size', type=int, default=8)
    p.add_argument('--iters', type=int, default=None,
                   help='iterations of each teacher and each student '
                   '(sets --teacher-iters and --student-iters)')
    p.add_argument('--jobs', type=int, default=2,
                   help='independent stages at once, each with '
                   'max(1, 2 // jobs) threads. Default: 2')
    p.add_argument('--subprocess', action='store_true',
                   help='run tools/train.py processes instead of forked '
                   'children')
    p.add_argument('--keep-going', action='store_true',
                   help='report the stages that ran even if one fails')
    p.add_argument('--resume', action='store_true',
                   help='keep the stages an earlier run in WORK_DIR finished '
                   'with the same command')
    for k, v in FULL.items():
        p.add_argument('--' + k.replace('_', '-'), type=int, default=None,
                       help=f'default {v} (quick: {QUICK[k]})')
    return p.parse_args(argv)


# ---------------------------------------------------------------- train tool
def _dataloader_aliasing(train_tool) -> bool:
    """Whether ``tools/train.py``'s ``merge_args`` lets a later dataloader
    overwrite ``train_dataloader``.

    mmengine 0.10's ``ConfigDict.update`` merges nested dicts in place; the
    ``merge_args`` copied from mmpretrain funnelled every dataloader through one
    shared default dict, so val's ``data_prefix``, pipeline and sampler were
    written into train's: every classifier config with a ``val_dataloader``
    trained on the val split. The study refuses to run on such a checkout.
    """
    from mmengine.config import Config
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(data_prefix='train'),
                              sampler=dict(type='InfiniteSampler')),
        val_dataloader=dict(dataset=dict(data_prefix='val'),
                            sampler=dict(type='DefaultSampler'))))
    cfg = train_tool.merge_args(cfg, train_tool.parse_args(['probe.py']))
    return (cfg.train_dataloader.dataset.data_prefix != 'train'
            or cfg.train_dataloader.sampler.type != 'InfiniteSampler')


def load_train_tool():
    """``tools/train.py`` as a module, checked by :func:`_dataloader_aliasing`."""
    spec = importlib.util.spec_from_file_location(
        '_mmhybrid_tools_train', osp.join(ROOT, 'tools', 'train.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if _dataloader_aliasing(mod):
        raise RuntimeError(
            'tools/train.py lets val_dataloader overwrite train_dataloader '
            '(one shared default dict merged with mmengine\'s recursive '
            'ConfigDict.update): classifiers would train on the val split. '
            'Give each dataloader its own copy of the defaults.')
    return mod


# ----------------------------------------------------------------- verdicts
def _diff(a, b):
    """Mean difference of two (mean, std, n) and the std of that difference."""
    return a[0] - b[0], (a[1] ** 2 + b[1] ** 2) ** 0.5


def verdicts(agg):
    """The paper's three claims, each judged on the measured means and stds.

    ``agg[label][measure]`` is ``(mean, std, n)``. "Within one std" means the
    shortfall is at most the std of the difference; "clearly above", more than
    two such stds above.
    """
    h, f, r, n = (agg['hybrid'], agg['feature-only'], agg['relation-only'],
                  agg['hybrid, no mask'])
    out = []
    lines = []
    ok_a = True
    for m in ('probe', 'knn'):
        d_f, s_f = _diff(h[m], f[m])
        d_r, s_r = _diff(h[m], r[m])
        ok_a &= d_f >= -s_f and d_r > 2 * s_r
        lines.append(f'{m}: hybrid - feature-only = {d_f:+.1f} (std of the '
                     f'difference {s_f:.1f}), hybrid - relation-only = '
                     f'{d_r:+.1f} ({s_r:.1f})')
    out.append(('(a) the hybrid student discriminates as well as the '
                'feature-only one and clearly better than the relation-only '
                'one', ok_a, '; '.join(lines)))
    lines = []
    ok_b = True
    for m in ('spread', 'nmi'):
        d_r, s_r = _diff(h[m], r[m])
        d_f, s_f = _diff(h[m], f[m])
        ok_b &= d_r >= -s_r and d_f > s_f
        lines.append(f'{m}: hybrid - relation-only = {d_r:+.3f} ({s_r:.3f}), '
                     f'hybrid - feature-only = {d_f:+.3f} ({s_f:.3f})')
    out.append(('(b) its attention is as diverse as the relation-only '
                "student's and more diverse than the feature-only one's "
                '(per-head distance spread, NMI)', ok_b, '; '.join(lines)))
    d_t, s_t = _diff(h['iter_time'], n['iter_time'])
    lines = [f's/iter: hybrid - no mask = {d_t:+.4f} ({s_t:.4f})']
    ok_c = d_t < 0
    for m in ('probe', 'knn'):
        d, s = _diff(h[m], n[m])
        ok_c &= d >= -s
        lines.append(f'{m}: hybrid - no mask = {d:+.1f} ({s:.1f})')
    out.append(('(c) progressive masking lowers the time per iteration without '
                'losing accuracy', ok_c, '; '.join(lines)))
    return out


# ------------------------------------------------------------------- report
def _pm(stat, spec='.1f'):
    mean, std, n = stat
    if n == 0:
        return 'n/a'
    return f'{mean:{spec}} ± {std:{spec}}' if n > 1 else f'{mean:{spec}}'


def write_report(path, agg, order, desc, s, seeds, data_what, claims, plots,
                 times, total, cmd):
    lines = [
        '# Hybrid Distillation: the study in miniature', '',
        f'Command: `{cmd}`', '',
        f'Data: {data_what}. Tiny ViTs (width 96, 4 blocks, 3 heads). '
        f"Teachers: Tc {s['teacher_iters']}, Tm {2 * s['teacher_iters']} "
        "iterations, seed 0. Students: "
        f"{s['student_iters']} iterations, batch {s['batch']}, seeds "
        f"{', '.join(map(str, seeds))} (mean ± std over seeds; teachers and "
        f"the random init: one row per seed where they vary). Linear probe "
        f"{s['probe_iters']} iterations, fine-tune {s['finetune_iters']} "
        'iterations, k-NN k = 20 (cosine, weighted votes) on frozen [CLS] '
        f"features; attention statistics on {s['attn_images']} val images.",
        '',
        '| model | pretraining | s/iter | linear probe top-1 (%) | k-NN top-1 '
        '(%) | fine-tune top-1 (%) | head spread of attn. distance (px) | '
        'last-layer attn. distance (px) | NMI, mean of layers | feat. dist. '
        'to Tc | rel. KL to Tm |',
        '|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for label in order:
        a = agg[label]
        lines.append(
            f"| {label} | {desc[label]} | {_pm(a['iter_time'], '.3f')} | "
            f"{_pm(a['probe'])} | {_pm(a['knn'])} | {_pm(a['finetune'])} | "
            f"{_pm(a['spread'], '.2f')} | {_pm(a['last_distance'])} | "
            f"{_pm(a['nmi'], '.3f')} | {_pm(a['feat_dist'], '.4f')} | "
            f"{_pm(a['rel_kl'], '.4f')} |")
    lines += [
        '',
        'Top-1 on the val split. Head spread: std over the heads of a layer of '
        'their mean attention distance, averaged over layers (0 when every '
        'head looks equally far). NMI: query-key normalised mutual information '
        '(0: every query attends alike). feat. dist. / rel. KL: the hybrid '
        'config\'s two losses at weight 1 on all tokens of val images (lower '
        '= closer to that teacher; the relation-only student never trained its '
        'projection head, so its feature distance means nothing). s/iter: mean '
        'seconds per pretraining iteration as logged (stages ran two at a '
        'time, so these include contention).', '',
        '## The paper\'s claims at this scale', ''
    ]
    for claim, ok, detail in claims:
        lines += [f"- {claim}: **{'holds' if ok else 'does not hold'}**. "
                  f'{detail}.']
    lines += ['', '## Plots', '']
    for title, p in plots:
        lines += [f'**{title}**', '', f'![{title}]({p})', '']
    lines += ['## Time', '', '| stage | seconds |', '|---|---|']
    lines += [f'| {k} | {v:.0f} |' for k, v in times.items()]
    lines += ['', f'Total: {total:.0f} s ({total / 60:.1f} min); '
              f'{os.cpu_count()} CPUs.', '']
    with open(path, 'w') as f:
        f.write('\n'.join(lines))


# --------------------------------------------------------------------- main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    s = dict(QUICK if args.quick else FULL)
    for k in s:
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    if args.iters:
        s['teacher_iters'] = s['student_iters'] = args.iters
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    t_start = time.time()
    wd = osp.abspath(args.work_dir)
    os.makedirs(wd, exist_ok=True)
    cmd = 'python tools/analysis/run_study.py ' + ' '.join(argv)

    import mmhybrid  # noqa: F401  (imported once; forked stages inherit it)
    from mmhybrid.analysis.attention_report import (plot_accuracy_bars,
                                                    plot_layer_bands,
                                                    uniform_reference)
    from mmhybrid.analysis.miniature import (Stage, Stages, attention_stats_of,
                                             builtin_data, data_options,
                                             describe_folder, distill_distances,
                                             head_spread, knn_eval, last_scalar,
                                             mean_iter_time, mean_std,
                                             model_options)
    if args.data_root:
        data = describe_folder(args.data_root, args.num_classes)
        data_what = f'{data.root}, {data.num_classes} classes'
    else:
        data = builtin_data(osp.join(wd, 'data', 'objects'), s['num_train'],
                            s['num_val'], args.img_size)
        data_what = (f"built-in generated objects, {data.num_classes} classes, "
                     f"{s['num_train']} train / {s['num_val']} val images")
    data_what += f' at {args.img_size} px, {args.patch_size} px patches'
    print(f'[study] data: {data_what}', flush=True)
    size = (args.img_size, args.patch_size, data.num_classes)
    ti, si, pi, fi = (s['teacher_iters'], s['student_iters'],
                      s['probe_iters'], s['finetune_iters'])
    nst = len(STUDENTS)
    total_cost = (2 * ti + len(seeds) * (nst * 3 * si + (nst + 1) *
                                         (0.6 * pi + fi)) + 2 * 0.6 * pi)
    stages = Stages(wd, ROOT, None if args.subprocess else
                    load_train_tool().main, jobs=args.jobs,
                    resume=args.resume, total_cost=total_cost, tag='[study]')

    def opts(kind, iters, batch, seed, loaders=('train', ), warmup=True):
        o = [f'randomness.seed={seed}', 'default_hooks.logger.interval=10',
             f'train_dataloader.batch_size={batch}',
             f'train_cfg.max_iters={iters}',
             f'default_hooks.checkpoint.interval={iters}']
        o += data_options(data, 0, loaders) + model_options(kind, *size)
        if warmup:
            w = max(1, iters // 10)
            o += [f'param_scheduler.0.end={w}', f'param_scheduler.1.begin={w}',
                  f'param_scheduler.1.end={iters}']
        else:
            o += [f'param_scheduler.0.end={iters}']
        if 'val' in loaders:
            o += [f'train_cfg.val_interval={iters}']
        return o

    def check(what):
        if stages.failed and not args.keep_going:
            sys.exit(f'[study] {what} failed: {stages.failed}')

    # 1. teachers (once)
    sup_dir, mae_dir = osp.join(wd, 'teacher_sup'), osp.join(wd, 'teacher_mae')
    # the MAE runs twice the iterations, as in the demo (tools/demo/run_demo.py)
    mti = 2 * ti
    sup_ckpt = osp.join(sup_dir, f'iter_{ti}.pth')
    mae_ckpt = osp.join(mae_dir, f'iter_{mti}.pth')
    t0 = time.time()
    stages.run([
        Stage('teacher_sup', SUP_CFG, sup_dir,
              opts('sup', ti, s['batch'], 0, ('train', 'val', 'test')), ti),
        Stage('teacher_mae', MAE_CFG, mae_dir,
              opts('mae', mti, s['batch'], 0), ti),
    ])
    if stages.failed:
        sys.exit(f'[study] teachers failed: {stages.failed}')
    times = {'teachers': time.time() - t0}

    # 2. students, per seed
    def sdir(name, seed):
        return osp.join(wd, f'seed{seed}', f'student_{name}')

    t0 = time.time()
    stages.run([
        Stage(f'seed{seed}_student_{name}', HYB_CFG, sdir(name, seed),
              opts('hybrid', si, s['batch'], seed) + [
                  f'model.teacher_feat.checkpoint={sup_ckpt}',
                  f'model.teacher_rel.checkpoint={mae_ckpt}'
              ] + extra, 3 * si)
        for seed in seeds for name, _, _, extra in STUDENTS
    ])
    check('students')
    times['students'] = time.time() - t0

    # 3. probes and fine-tunes: students and random init per seed, teachers once
    models = []  # (label, seed, run name, checkpoint, pretraining work dir)
    for seed in seeds:
        for name, label, _, _ in STUDENTS:
            models.append((label, seed, f'seed{seed}_student_{name}',
                           osp.join(sdir(name, seed), f'iter_{si}.pth'),
                           sdir(name, seed)))
        models.append(('random init', seed, f'seed{seed}_random_init', None,
                       None))
    models += [('Tc: supervised', 0, 'teacher_sup', sup_ckpt, sup_dir),
               ('Tm: MAE', 0, 'teacher_mae', mae_ckpt, mae_dir)]
    t0 = time.time()
    runs = []
    for label, seed, run, ckpt, _ in models:
        init = (f'model.backbone.init_cfg.checkpoint={ckpt}' if ckpt else
                'model.backbone.init_cfg=None')
        runs.append(Stage(
            f'probe_{run}', PROBE_CFG, osp.join(wd, 'eval', f'probe_{run}'),
            opts('probe', pi, s['probe_batch'], seed, ('train', 'val', 'test'),
                 warmup=False) + [init], 0.6 * pi))
        if not run.startswith('teacher'):
            runs.append(Stage(
                f'finetune_{run}', FT_CFG,
                osp.join(wd, 'eval', f'finetune_{run}'),
                opts('finetune', fi, s['batch'], seed,
                     ('train', 'val', 'test')) + [init], fi))
    stages.run(runs)
    check('evaluation')
    times['probes + fine-tunes'] = time.time() - t0

    # 4. in this process: k-NN, attention statistics, distances to teachers
    t0 = time.time()
    eval_opts = data_options(data, 0, ('val', )) + model_options('probe', *size)
    hyb_opts = model_options('hybrid', *size)
    results = []
    for label, seed, run, ckpt, pre_dir in models:
        if ckpt and not osp.isfile(ckpt):
            continue  # a failed stage (--keep-going)
        r = dict(label=label, seed=seed, run=run,
                 probe=last_scalar(osp.join(wd, 'eval', f'probe_{run}'),
                                   'accuracy/top1'),
                 finetune=last_scalar(osp.join(wd, 'eval', f'finetune_{run}'),
                                      'accuracy/top1'),
                 knn=knn_eval(PROBE_CFG, eval_opts, ckpt, data, 20, seed))
        st = attention_stats_of(PROBE_CFG, eval_opts, ckpt,
                                osp.join(data.root, 'val'), s['attn_images'],
                                seed)
        r.update(spread=head_spread(st), nmi=float(st['nmi'].mean()),
                 last_distance=float(st['distance'][-1].mean()),
                 stats={k: v.tolist() for k, v in st.items()})
        if pre_dir:
            r['iter_time'] = mean_iter_time(pre_dir)
        if run.startswith(f'seed{seed}_student'):
            r['feat_dist'], r['rel_kl'] = distill_distances(
                HYB_CFG, hyb_opts, ckpt, (sup_ckpt, mae_ckpt), data,
                s['attn_images'], seed)
        if run == 'teacher_sup':
            r['finetune'] = last_scalar(sup_dir, 'accuracy/top1')
        results.append(r)
        print(f'[study] k-NN, attention, distances of {run}: done '
              f'({stages.progress()})', flush=True)
    times['k-NN + attention + distances'] = time.time() - t0

    # 5. aggregate over seeds, plots, verdicts
    order = [lab for _, lab, _, _ in STUDENTS] + [lab for _, lab, _ in REFS]
    desc = {lab: d for _, lab, d, _ in STUDENTS}
    desc.update({lab: d for _, lab, d in REFS})
    measures = ('iter_time', 'probe', 'knn', 'finetune', 'spread',
                'last_distance', 'nmi', 'feat_dist', 'rel_kl')
    agg = {lab: {m: mean_std([r.get(m) for r in results if r['label'] == lab])
                 for m in measures} for lab in order}
    import numpy as np
    runs_by_label = {
        lab: [{k: np.asarray(v) for k, v in r['stats'].items()}
              for r in results if r['label'] == lab] for lab in order}
    runs_by_label = {k: v for k, v in runs_by_label.items() if v}
    plot_dir = osp.join(wd, 'plots')
    ref = uniform_reference((args.img_size // args.patch_size, ) * 2,
                            args.patch_size)
    plots = [
        ('Head-averaged attention distance and NMI per layer, mean ± std over '
         'seeds (dashed: uniform attention)',
         plot_layer_bands(runs_by_label,
                          osp.join(plot_dir, 'attention_layers.png'),
                          reference=ref)),
        ('Linear probe, k-NN and fine-tune top-1: mean ± std over seeds (dots: '
         'seeds)',
         plot_accuracy_bars(
             {lab: {m: [r[m] for r in results if r['label'] == lab
                        and r.get(m) is not None]
                    for m in ('probe', 'knn', 'finetune')} for lab in order},
             osp.join(plot_dir, 'accuracy.png'),
             chance=100 / data.num_classes)),
    ]
    claims = verdicts(agg)
    times.update(stages.times)
    total = time.time() - t_start
    report = osp.join(wd, 'report.md')
    write_report(report, agg, order, desc, s, seeds, data_what, claims,
                 [(t, osp.relpath(p, wd)) for t, p in plots], times, total,
                 cmd)
    with open(osp.join(wd, 'results.json'), 'w') as f:
        json.dump(dict(settings=s, seeds=seeds, results=results,
                       aggregate=agg, claims=claims, times=times,
                       total_s=total), f, indent=1, default=float)
    print(open(report).read())
    if stages.failed:
        sys.exit(f'[study] failed stages: {stages.failed}')


if __name__ == '__main__':
    main()
