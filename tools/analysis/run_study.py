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
    p.add_argument('--students', nargs='+', default=None,
                   choices=[n for n, _, _, _ in STUDENTS],
                   help='a subset of the students (ablations); the verdicts '
                   'need all four. Default: all')
    p.add_argument('--student-options', nargs='+', default=[],
                   metavar='KEY=VALUE',
                   help='--cfg-options given to every student before its '
                   'own (an ablation: e.g. --students hybrid '
                   '--student-options model.loss_rel.loss_weight=0.5); no '
                   'verdicts then')
    p.add_argument('--data-root', default=None,
                   help='your own ImageNet-style folder (train/ and val/ with '
                   'class folders, or meta/train.txt + meta/val.txt). '
                   'Default: the built-in generated objects')
    p.add_argument('--num-classes', type=int, default=None,
                   help='default: inferred from the data')
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--patch-size', type=int, default=8)
    p.add_argument('--iters', type=int, default=None,
                   help='iterations of the supervised teacher and of each '
                   'student (the MAE runs twice as many); sets '
                   '--teacher-iters and --student-iters')
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


# ----------------------------------------------------------------- verdicts
def paired(per_seed, a, b, measure):
    """Per-seed differences ``a - b`` of a measure (students of one seed share
    their initialisation and data order): ``(mean, std, n)``."""
    import numpy as np
    d = [per_seed[(a, s)][measure] - per_seed[(b, s)][measure]
         for s in sorted({s for (lab, s) in per_seed if lab == a})
         if (b, s) in per_seed and per_seed[(a, s)].get(measure) is not None
         and per_seed[(b, s)].get(measure) is not None]
    if len(d) < 2:
        return float('nan'), float('nan'), len(d)
    return float(np.mean(d)), float(np.std(d, ddof=1)), len(d)


def verdicts(per_seed):
    """The paper's three claims, judged on per-seed paired differences.

    ``per_seed[(label, seed)][measure]`` holds the results. For a difference
    ``d`` over ``n`` seeds with mean ``m``, std ``s`` and standard error
    ``se = s / sqrt(n)``: "at least ... within one std" is ``m >= -s``;
    "clearly above / lower" is ``m > 2 se`` (``m < -2 se``). A claim with a
    missing or single-seed comparison is not judged (None).
    """
    def check(a, b, m, rule):
        mean, std, n = paired(per_seed, a, b, m)
        if n < 2:
            return None, f'{m}: {a} - {b}: fewer than 2 seeds'
        se = std / n ** 0.5
        ok = {'within': mean >= -std, 'above': mean > 2 * se,
              'below': mean < -2 * se}[rule]
        return ok, f'{m}: {a} - {b} = {mean:+.3g} (std {std:.2g}, se {se:.2g})'

    def claim(text, checks):
        results = [check(*c) for c in checks]
        oks = [ok for ok, _ in results]
        ok = None if None in oks else all(oks)
        return text, ok, '; '.join(d for _, d in results)

    h, f, r, n = 'hybrid', 'feature-only', 'relation-only', 'hybrid, no mask'
    return [
        claim('(a) the hybrid student discriminates at least as well as the '
              'feature-only one (within one std) and clearly better than the '
              'relation-only one',
              [(h, f, 'probe', 'within'), (h, f, 'knn', 'within'),
               (h, r, 'probe', 'above'), (h, r, 'knn', 'above')]),
        claim('(b) its attention is at least as diverse as the relation-only '
              "student's (within one std) and clearly more diverse than the "
              "feature-only one's (per-head distance spread, NMI)",
              [(h, r, 'spread', 'within'), (h, r, 'nmi', 'within'),
               (h, f, 'spread', 'above'), (h, f, 'nmi', 'above')]),
        claim('(c) progressive masking clearly lowers the time per iteration '
              'and keeps the accuracy within one std',
              [(h, n, 'iter_time', 'below'), (h, n, 'probe', 'within'),
               (h, n, 'knn', 'within')]),
    ]


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
        ft = (_pm(a['finetune']) if a['own_top1'][2] == 0 else
              f"({_pm(a['own_top1'])}: own training)")
        lines.append(
            f"| {label} | {desc[label]} | {_pm(a['iter_time'], '.3f')} | "
            f"{_pm(a['probe'])} | {_pm(a['knn'])} | {ft} | "
            f"{_pm(a['spread'], '.2f')} | {_pm(a['last_distance'])} | "
            f"{_pm(a['nmi'], '.3f')} | {_pm(a['feat_dist'], '.4f')} | "
            f"{_pm(a['rel_kl'], '.4f')} |")
    lines += [
        '',
        'Tc\'s fine-tune cell is its own supervised training from scratch '
        '(the others fine-tune a pretrained backbone). '
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
    if not claims:
        lines.append('Not judged: an ablation (the verdicts need all four '
                     'students with their own options only).')
    for claim, ok, detail in claims:
        word = {True: 'holds', False: 'does not hold', None: 'not judged'}[ok]
        lines += [f'- {claim}: **{word}**. {detail}.']
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
    students = [st for st in STUDENTS
                if args.students is None or st[0] in args.students]
    t_start = time.time()
    wd = osp.abspath(args.work_dir)
    os.makedirs(wd, exist_ok=True)
    cmd = 'python tools/analysis/run_study.py ' + ' '.join(argv)

    import mmhybrid  # noqa: F401  (imported once; forked stages inherit it)
    from mmhybrid.analysis.attention_report import (plot_accuracy_bars,
                                                    plot_layer_bands,
                                                    uniform_reference)
    from mmhybrid.analysis.miniature import (Stage, Stages, attention_stats_of,
                                             data_options, distill_distances,
                                             head_spread, in_child, knn_eval,
                                             last_scalar,
                                             mean_iter_time, mean_std,
                                             model_options, resolve_data,
                                             save_random_init,
                                             schedule_options)
    data, data_what = resolve_data(
        'run_study', args.data_root, args.num_classes, args.img_size,
        args.patch_size, osp.join(wd, 'data', 'objects'), s['num_train'],
        s['num_val'])
    data_what += f' at {args.img_size} px, {args.patch_size} px patches'
    print(f'[study] data: {data_what}', flush=True)
    size = (args.img_size, args.patch_size, data.num_classes)
    ti, si, pi, fi = (s['teacher_iters'], s['student_iters'],
                      s['probe_iters'], s['finetune_iters'])
    nst = len(students)
    eval_cost = 0.2 * si  # k-NN, attention and distances of one model
    total_cost = (2 * ti + len(seeds) * (nst * 2 * si + (nst + 1) *
                                         (0.5 * pi + fi + eval_cost))
                  + 2 * (0.5 * pi + eval_cost))
    stages = Stages(wd, ROOT, None if args.subprocess else
                    load_train_tool().main, jobs=args.jobs,
                    resume=args.resume, total_cost=total_cost, tag='[study]')

    def opts(kind, iters, batch, seed, loaders=('train', ), warmup=True):
        o = [f'randomness.seed={seed}', 'default_hooks.logger.interval=10',
             f'train_dataloader.batch_size={batch}',
             f'train_cfg.max_iters={iters}',
             f'default_hooks.checkpoint.interval={iters}']
        o += data_options(data, 0, loaders) + model_options(kind, *size)
        o += schedule_options(iters, warmup)
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
              ] + args.student_options + extra, 2 * si)
        for seed in seeds for name, _, _, extra in students
    ])
    check('students')
    times['students'] = time.time() - t0

    # 3. probes and fine-tunes: students and random init per seed, teachers once
    eval_opts = data_options(data, 0, ('val', )) + model_options('probe', *size)
    models = []  # (label, seed, run name, checkpoint, pretraining work dir)
    for seed in seeds:
        for name, label, _, _ in students:
            models.append((label, seed, f'seed{seed}_student_{name}',
                           osp.join(sdir(name, seed), f'iter_{si}.pth'),
                           sdir(name, seed)))
        # initialised as that seed's students are; one network read alike by
        # the probe, the fine-tune, k-NN and the attention statistics
        rand_ckpt = osp.join(wd, f'seed{seed}', 'random_init.pth')
        in_child(save_random_init, PROBE_CFG, eval_opts, seed, rand_ckpt)
        models.append(('random init', seed, f'seed{seed}_random_init',
                       rand_ckpt, None))
    models += [('Tc: supervised', 0, 'teacher_sup', sup_ckpt, sup_dir),
               ('Tm: MAE', 0, 'teacher_mae', mae_ckpt, mae_dir)]
    t0 = time.time()
    runs = []
    trained = [m for m in models if not m[2].startswith(f'seed{m[1]}_student')
               or m[2] not in stages.failed]
    for label, seed, run, ckpt, _ in trained:
        init = f'model.backbone.init_cfg.checkpoint={ckpt}'
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
    hyb_opts = model_options('hybrid', *size)
    results = []
    for label, seed, run, ckpt, pre_dir in trained:
        if f'probe_{run}' in stages.failed:
            continue  # --keep-going: report what ran
        r = dict(label=label, seed=seed, run=run,
                 probe=last_scalar(osp.join(wd, 'eval', f'probe_{run}'),
                                   'accuracy/top1'),
                 finetune=None if f'finetune_{run}' in stages.failed else
                 last_scalar(osp.join(wd, 'eval', f'finetune_{run}'),
                             'accuracy/top1'),
                 knn=knn_eval(PROBE_CFG, eval_opts, ckpt, data, 20, seed))
        st = attention_stats_of(PROBE_CFG, eval_opts, ckpt,
                                osp.join(data.root, 'val'), s['attn_images'])
        r.update(spread=head_spread(st), nmi=float(st['nmi'].mean()),
                 last_distance=float(st['distance'][-1].mean()),
                 stats={k: v.tolist() for k, v in st.items()})
        if pre_dir:
            r['iter_time'] = mean_iter_time(pre_dir)
        if run.startswith(f'seed{seed}_student'):
            r['feat_dist'], r['rel_kl'] = distill_distances(
                HYB_CFG, hyb_opts, ckpt, (sup_ckpt, mae_ckpt), data,
                s['attn_images'])
        if run == 'teacher_sup':  # its own training, shown in that column
            r['own_top1'] = last_scalar(sup_dir, 'accuracy/top1')
        results.append(r)
        stages.add_done(eval_cost)
        print(f'[study] k-NN, attention, distances of {run}: done '
              f'({stages.progress()})', flush=True)
    times['k-NN + attention + distances'] = time.time() - t0

    # 5. aggregate over seeds, plots, verdicts
    order = [lab for _, lab, _, _ in students] + [lab for _, lab, _ in REFS]
    desc = {lab: d for _, lab, d, _ in STUDENTS}
    desc.update({lab: d for _, lab, d in REFS})
    measures = ('iter_time', 'probe', 'knn', 'finetune', 'own_top1', 'spread',
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
    per_seed = {(r['label'], r['seed']): r for r in results}
    # ablations (a subset, or options on every student) are not the claims
    claims = (verdicts(per_seed) if len(students) == len(STUDENTS)
              and not args.student_options else [])
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
