"""The paper's study in miniature, on the CPU: `make study`.

On the built-in generated shapes data:

1. train the two tiny teachers with mmpretrain's own algorithms: a supervised ViT
   classifier (feature teacher Tc) and an MAE (relation teacher Tm);
2. pretrain four students from them with identical budget and seed (same
   config, iterations, batch, learning-rate schedule and initialisation; only
   the options below differ):

   ==================  ==================================================
   feature-only        ``model.loss_rel.loss_weight=0`` (FD-like)
   relation-only       ``model.loss_feat.loss_weight=0`` (TinyMIM-like)
   hybrid              the demo config as is (both terms, weight 1 each,
                       progressive masking 0 -> 0.5)
   hybrid, no masking  ``custom_hooks=[]``: no ProgressiveMaskingHook, so
                       the mask ratio stays at the model's 0 and the
                       student always encodes every token
   ==================  ==================================================

   A zero-weight term is still computed (both teachers run, the loss is
   multiplied by 0), so the four students cost the same per iteration except
   the unmasked one, which encodes all tokens; the table reports the measured
   seconds per iteration. Every student keeps Tc's [CLS] attention as the token
   importance (the relation-only one too): only the loss weights differ;
3. evaluate every student, both teachers and a random initialisation by a
   linear probe and a short fine-tune (mmpretrain's ImageClassifier), by
   ``tools/analysis/attention_stats.py`` (attention distance, entropy, NMI per
   layer and head) and by how close each student is to its teachers on the
   validation images (feature distance to Tc, relation KL to Tm);
4. write ``WORK_DIR/report.md``: one table and the plots.

Every training stage is ``tools/train.py`` with a config of ``configs/demo/`` or
``tools/analysis/study_configs/`` (the exact command is printed and logged, so any
stage can be rerun alone). By default the stages run in forked children of this
process, which has imported the stack once (seconds saved per stage), two at a
time (``--jobs``), each with one thread and no dataloader workers (on two cores
the workers only add start-up and hand-over cost); ``--subprocess`` runs every
stage in a fresh process instead (``run_study.py --train-stage ARGS``, i.e.
``tools/train.py ARGS``). Before anything runs, the study checks that
``tools/train.py`` keeps ``train_dataloader`` on the train split
(:func:`_dataloader_aliasing`).

``--quick`` is the same pipeline on a fraction of the data and iterations (the CI
test runs it); its numbers mean nothing.
"""
import argparse
import glob
import importlib.util
import json
import multiprocessing as mp
import os
import os.path as osp
import subprocess
import sys
import time
import traceback

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
DEMO = osp.join(ROOT, 'configs', 'demo')
STUDY_CFG = osp.join(ROOT, 'tools', 'analysis', 'study_configs')
SUP_CFG = osp.join(DEMO, 'vit-tiny-p8_sup_1xb32-300i_shapes.py')
MAE_CFG = osp.join(DEMO, 'mae_vit-tiny-p8_1xb32-300i_shapes.py')
HYB_CFG = osp.join(DEMO, 'hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py')
PROBE_CFG = osp.join(DEMO, 'linear-probe_vit-tiny-p8_1xb64-200i_shapes.py')
FT_CFG = osp.join(STUDY_CFG, 'finetune_vit-tiny-p8_1xb32-150i_shapes.py')

# name, description, extra --cfg-options
STUDENTS = [
    ('feature_only', 'features of Tc only (FD-like)',
     ['model.loss_rel.loss_weight=0.0']),
    ('relation_only', 'relations of Tm only (TinyMIM-like)',
     ['model.loss_feat.loss_weight=0.0']),
    ('hybrid', 'hybrid: features of Tc + relations of Tm', []),
    ('hybrid_no_mask', 'hybrid without progressive masking',
     ['custom_hooks=[]']),
]
FULL = dict(num_train=1000, num_val=250, teacher_iters=300, student_iters=300,
            probe_iters=100, finetune_iters=150, attn_images=64, batch=32,
            probe_batch=64, workers=0)
QUICK = dict(num_train=96, num_val=32, teacher_iters=12, student_iters=12,
             probe_iters=8, finetune_iters=8, attn_images=16, batch=16,
             probe_batch=16, workers=0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='The Hybrid Distillation study in miniature (CPU).')
    p.add_argument('--work-dir', default='work_dirs/study')
    p.add_argument('--quick', action='store_true',
                   help='a few iterations of everything (CI); numbers are '
                   'meaningless')
    p.add_argument('--seed', type=int, default=0,
                   help='randomness.seed of every run. Default: 0')
    p.add_argument('--jobs', type=int, default=2,
                   help='independent stages run at once, each with '
                   'max(1, 2 // jobs) threads. Default: 2')
    p.add_argument('--subprocess', action='store_true',
                   help='run tools/train.py processes instead of forked '
                   'children')
    p.add_argument('--keep-going', action='store_true',
                   help='report the stages that ran even if one fails')
    p.add_argument('--resume', action='store_true',
                   help='keep the stages an earlier run in WORK_DIR finished '
                   'with the same command (their times are then missing)')
    for k, v in FULL.items():
        p.add_argument('--' + k.replace('_', '-'), type=int, default=None,
                       help=f'default {v} (quick: {QUICK[k]})')
    return p.parse_args(argv)


# ---------------------------------------------------------------- train runs
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


def train_stage(argv):
    """One ``tools/train.py`` run (``--subprocess`` mode's entry point)."""
    load_train_tool().main(argv)


def _child(train_main, argv, log, threads):
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        import torch
        torch.set_num_threads(threads)
        train_main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: B902  (reported in the stage's log)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Stages:
    """Runs ``tools/train.py`` stages, ``jobs`` at a time, and times them."""

    DONE = '.study_stage_done'

    def __init__(self, work_dir, jobs=1, use_subprocess=False, resume=False):
        self.work_dir = work_dir
        self.resume = resume
        self.skipped = []
        self.jobs = max(1, jobs)
        self.use_subprocess = use_subprocess
        self.threads = max(1, 2 // self.jobs)
        self.times = {}
        self.failed = []
        tool = load_train_tool()
        self._train = None if use_subprocess else tool

    def argv(self, config, work_dir, options):
        return [config, '--work-dir', work_dir, '--cfg-options'] + options

    def run(self, batch):
        """Run ``[(name, config, work_dir, options), ...]``; wait for all."""
        pending = list(batch)
        running = {}
        while pending or running:
            while pending and len(running) < self.jobs:
                name, config, wd, options = pending.pop(0)
                argv = self.argv(config, wd, options)
                log = osp.join(self.work_dir, 'logs', f'{name}.log')
                cmd = 'python tools/train.py ' + ' '.join(
                    osp.relpath(a, ROOT) if osp.isabs(a) and a.startswith(ROOT)
                    else a for a in argv)
                done_file = osp.join(wd, self.DONE)
                if self.resume and osp.isfile(done_file) and open(
                        done_file).read() == cmd + '\n':
                    print(f'[study] {name}: done by an earlier run with the '
                          'same command, kept (--resume)', flush=True)
                    self.skipped.append(name)
                    continue
                if osp.isfile(done_file):
                    os.remove(done_file)
                print(f'[study] {name}: {cmd}', flush=True)
                with open(log + '.cmd', 'w') as f:
                    f.write(cmd + '\n')
                if self.use_subprocess:
                    env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
                    f = open(log, 'w')
                    proc = subprocess.Popen(
                        [sys.executable, osp.abspath(__file__), '--train-stage']
                        + argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                        env=env)
                    proc._log_file = f
                else:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    proc = mp.get_context('fork').Process(
                        target=_child,
                        args=(self._train.main, argv, log, self.threads))
                    proc.start()
                running[name] = (proc, time.time(), log, wd, cmd)
            time.sleep(0.2)
            for name in list(running):
                proc, t0, log, wd, cmd = running[name]
                code = proc.poll() if self.use_subprocess else (
                    None if proc.is_alive() else proc.exitcode)
                if code is None:
                    continue
                if self.use_subprocess:
                    proc._log_file.close()
                del running[name]
                self.times[name] = time.time() - t0
                if code != 0:
                    self.failed.append(name)
                    with open(log) as f:
                        tail = f.read()[-2500:]
                    print(f'[study] {name} FAILED (exit {code}); log {log}\n'
                          f'{tail}', flush=True)
                else:
                    with open(osp.join(wd, self.DONE), 'w') as f:
                        f.write(cmd + '\n')
                    print(f'[study] {name}: done in {self.times[name]:.0f}s',
                          flush=True)


# ---------------------------------------------------------------- results
def _scalars(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not files:
        return []
    return [json.loads(line) for line in open(files[-1])]


def last_scalar(work_dir, key):
    value = None
    for rec in _scalars(work_dir):
        if key in rec:
            value = rec[key]
    return value


def mean_iter_time(work_dir, skip=1):
    """Mean seconds per training iteration (the logger's windows, first
    ``skip`` windows dropped: worker start-up)."""
    t = [r['time'] for r in _scalars(work_dir) if 'loss' in r and 'time' in r]
    t = t[skip:] if len(t) > skip else t
    return sum(t) / len(t) if t else None


def distill_distances(ckpt, teachers, data_root, num_images, seed=0):
    """Feature distance to Tc and relation KL to Tm of a student checkpoint on
    validation images, with the hybrid config's losses at weight 1 and no
    masking (all tokens): how close each student got to each teacher."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from mmhybrid.analysis.vit_loading import load_images
    from mmhybrid.utils.checkpoint import extract_state_dict, load_checkpoint_file
    cfg = Config.fromfile(HYB_CFG)
    cfg.model.teacher_feat.checkpoint = teachers[0]
    cfg.model.teacher_rel.checkpoint = teachers[1]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
        model.init_weights()
    sd = extract_state_dict(load_checkpoint_file(ckpt), ckpt)
    sd = {k: v for k, v in sd.items() if not k.startswith('data_preprocessor')}
    model.load_state_dict(sd, strict=False)
    model.eval()
    model.mask_ratio = 0.0
    images, _ = load_images(osp.join(data_root, 'val'), 64, num_images, seed)
    mean = torch.tensor(cfg.model.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.data_preprocessor.std).view(1, 3, 1, 1)
    feat = rel = 0.0
    n = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], 32):
            x = (images[start:start + 32].float() - mean) / std
            out = model.loss(x)
            b = x.shape[0]
            feat += float(out['loss_feat']) * b
            rel += float(out['loss_rel']) * b
            n += b
    return feat / n, rel / n


# ---------------------------------------------------------------- report
def _fmt(v, spec='.1f', none='n/a'):
    return none if v is None else format(v, spec)


def write_report(path, rows, stats_rows, s, times, total, cmd, load, plots,
                 notes=()):
    lines = [
        '# Hybrid Distillation: the study in miniature', '',
        f'Command: `{cmd}`', '',
        f"Data: built-in generated shapes, 5 classes, {s['num_train']} train / "
        f"{s['num_val']} val images at 64 px; tiny ViT (width 96, 4 blocks, 3 "
        'heads, 8 px patches: 8 x 8 tokens).',
        f"Teachers: {s['teacher_iters']} iterations each (supervised ViT = Tc, "
        f"MAE = Tm). Students: {s['student_iters']} iterations each, batch "
        f"{s['batch']}, same seed. Linear probe: {s['probe_iters']} iterations "
        f"(batch {s['probe_batch']}); fine-tune: {s['finetune_iters']} "
        f"iterations (batch {s['batch']}). Attention statistics: "
        f"{s['attn_images']} val images.", '',
        '| model | pretraining | s/iter | linear probe top-1 (%) | fine-tune '
        'top-1 (%) | feat. dist. to Tc | rel. KL to Tm | last-layer attn. '
        'distance (px), heads mean [min, max] | last-layer NMI | NMI, mean '
        'of layers |', '|---|---|---|---|---|---|---|---|---|---|'
    ]
    for r in rows:
        st = stats_rows.get(r['name'])
        if st is not None:
            d = st['distance'][-1]
            dist = f'{d.mean():.1f} [{d.min():.1f}, {d.max():.1f}]'
            nmi_last = f"{st['nmi'][-1].mean():.3f}"
            nmi_mean = f"{st['nmi'].mean():.3f}"
        else:
            dist = nmi_last = nmi_mean = 'n/a'
        lines.append(
            f"| {r['label']} | {r['desc']} | {_fmt(r.get('iter_time'), '.3f')} | "
            f"{_fmt(r.get('probe'))} | {r.get('finetune_text') or _fmt(r.get('finetune'))} | "
            f"{_fmt(r.get('feat_dist'), '.4f')} | {_fmt(r.get('rel_kl'), '.4f')} | "
            f'{dist} | {nmi_last} | {nmi_mean} |')
    lines += [
        '',
        'Top-1 on the val split; chance is 20 % (5 balanced classes). '
        's/iter: mean seconds per pretraining iteration as logged (the unmasked '
        'student encodes all 64 tokens, the others 64 -> 32 as the mask ratio '
        'rises; stages run two at a time, so these include contention). '
        'feat. dist. / rel. KL: the hybrid config\'s two losses at '
        'weight 1, on all tokens of the val images (lower = closer to that '
        'teacher); the relation-only student never trained its projection head, '
        'so its feature distance is not meaningful. NMI: query-key normalised '
        'mutual information (0: every query attends alike; 1: each query has '
        'its own keys).', ''
    ] + [f'Note: {n}' for n in notes] + (['', ] if notes else []) + [
        '## Plots', ''
    ]
    for title, p in plots:
        lines += [f'**{title}**', '', f'![{title}]({p})', '']
    lines += ['## Time', '', '| stage | seconds |', '|---|---|']
    lines += [f'| {k} | {v:.0f} |' for k, v in times.items()]
    lines += ['', f'Total: {total:.0f} s ({total / 60:.1f} min). CPU load '
              f'average (1/5/15 min) at the start: {load[0]}, at the end: '
              f'{load[1]}; {os.cpu_count()} CPUs.', '']
    with open(path, 'w') as f:
        f.write('\n'.join(lines))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['--train-stage']:
        return train_stage(argv[1:])
    args = parse_args(argv)
    s = dict(QUICK if args.quick else FULL)
    for k in s:
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    t_start = time.time()
    load0 = ' / '.join(f'{v:.2f}' for v in os.getloadavg())
    wd = osp.abspath(args.work_dir)
    os.makedirs(osp.join(wd, 'logs'), exist_ok=True)
    cmd = 'python tools/analysis/run_study.py ' + ' '.join(argv)

    import mmhybrid  # noqa: F401  (imported once; forked stages inherit it)
    from mmhybrid.datasets import make_imagenet_style
    times = {}
    t0 = time.time()
    data = make_imagenet_style(osp.join(wd, 'data', 'imagenet'),
                               num_train=s['num_train'], num_val=s['num_val'],
                               size=64, seed=0)
    times['data'] = time.time() - t0
    print(f'[study] data: {data}', flush=True)

    stages = Stages(wd, args.jobs, args.subprocess, args.resume)
    common = [f'randomness.seed={args.seed}',
              f"train_dataloader.num_workers={s['workers']}",
              'default_hooks.logger.interval=10']

    def train_opts(iters, batch, warmup_index=0, warmup=True, val=False):
        opts = common + [
            f'train_dataloader.dataset.data_root={data}',
            f'train_dataloader.batch_size={batch}',
            f'train_cfg.max_iters={iters}',
            f'default_hooks.checkpoint.interval={iters}',
        ]
        if warmup:
            w = max(1, iters // 10)
            opts += [f'param_scheduler.0.end={w}',
                     f'param_scheduler.1.begin={w}',
                     f'param_scheduler.1.end={iters}']
        else:
            opts += [f'param_scheduler.0.end={iters}']
        if val:
            # test_dataloader too: preflight checks every dataset the
            # config names, and the base config points it at data/shapes.
            opts += [f'val_dataloader.dataset.data_root={data}',
                     f'test_dataloader.dataset.data_root={data}',
                     f'train_cfg.val_interval={iters}',
                     f"val_dataloader.num_workers={s['workers']}"]
        return opts

    ti, si = s['teacher_iters'], s['student_iters']
    sup_dir, mae_dir = osp.join(wd, 'teacher_sup'), osp.join(wd, 'teacher_mae')
    sup_ckpt = osp.join(sup_dir, f'iter_{ti}.pth')
    mae_ckpt = osp.join(mae_dir, f'iter_{ti}.pth')

    def stage_time(label):
        """Call the returned function when the stage ``label`` is over."""
        t = time.time()
        return lambda: times.__setitem__(label, time.time() - t)

    # 1. teachers
    done = stage_time('teachers')
    stages.run([
        ('teacher_sup', SUP_CFG, sup_dir,
         train_opts(ti, s['batch'], val=True)),
        ('teacher_mae', MAE_CFG, mae_dir, train_opts(ti, s['batch'])),
    ])
    done()
    if stages.failed:
        sys.exit(f'[study] teachers failed: {stages.failed}')

    # 2. students
    done = stage_time('students')
    stages.run([(f'student_{name}', HYB_CFG, osp.join(wd, f'student_{name}'),
                 train_opts(si, s['batch']) + [
                     f'model.teacher_feat.checkpoint={sup_ckpt}',
                     f'model.teacher_rel.checkpoint={mae_ckpt}'
                 ] + extra) for name, _, extra in STUDENTS])
    done()
    if stages.failed and not args.keep_going:
        sys.exit(f'[study] failed: {stages.failed}')

    models = [(f'student_{n}', d, osp.join(wd, f'student_{n}', f'iter_{si}.pth'))
              for n, d, _ in STUDENTS]
    refs = [('teacher_sup', 'reference: supervised ViT (Tc)', sup_ckpt),
            ('teacher_mae', 'reference: MAE (Tm)', mae_ckpt),
            ('random_init', 'reference: no pretraining (random init)', None)]

    # 3. linear probes and fine-tunes
    done = stage_time('evaluation (probe + fine-tune)')
    pi, fi = s['probe_iters'], s['finetune_iters']
    runs = []
    for name, _, ckpt in models + refs:
        init = (f'model.backbone.init_cfg.checkpoint={ckpt}' if ckpt else
                'model.backbone.init_cfg=None')
        runs.append((f'probe_{name}', PROBE_CFG, osp.join(wd, f'probe_{name}'),
                     train_opts(pi, s['probe_batch'], warmup=False, val=True) +
                     [init]))
        if not name.startswith('teacher'):
            runs.append((f'finetune_{name}', FT_CFG,
                         osp.join(wd, f'finetune_{name}'),
                         train_opts(fi, s['batch'], val=True) + [init]))
    stages.run(runs)
    done()
    if stages.failed and not args.keep_going:
        sys.exit(f'[study] failed: {stages.failed}')

    # 4. attention statistics (the tool's own code, in this process)
    done = stage_time('attention statistics')
    spec = importlib.util.spec_from_file_location(
        '_mmhybrid_attention_stats',
        osp.join(ROOT, 'tools', 'analysis', 'attention_stats.py'))
    attn_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(attn_tool)
    from mmhybrid.analysis.attention_report import (plot_layer_means,
                                                    plot_stats, read_csv,
                                                    uniform_reference)
    stats = {}
    short = {'student_feature_only': 'feature-only',
             'student_relation_only': 'relation-only',
             'student_hybrid': 'hybrid', 'student_hybrid_no_mask':
             'hybrid, no mask', 'teacher_sup': 'Tc: supervised',
             'teacher_mae': 'Tm: MAE', 'random_init': 'random init'}
    for name, _, ckpt in models + refs:
        out = osp.join(wd, 'attention', name)
        src = ['--checkpoint', ckpt] if ckpt else ['--random-init']
        argv_a = [PROBE_CFG, *src, '--data', osp.join(data, 'val'), '--out', out,
                  '--num-images', str(s['attn_images']), '--name', short[name],
                  '--seed', str(args.seed), '--device', 'cpu']
        print('[study] attention_stats: python tools/analysis/attention_stats.py '
              + ' '.join(osp.relpath(a, ROOT) if osp.isabs(a) else a
                         for a in argv_a), flush=True)
        if ckpt is None or osp.isfile(ckpt):
            attn_tool.main(argv_a)
            stats[name] = read_csv(osp.join(out, 'attention_stats.csv'))[
                short[name]]
    done()

    # 5. plots
    plot_dir = osp.join(wd, 'plots')
    order = ['teacher_sup', 'teacher_mae'] + [m[0] for m in models] + [
        'random_init']
    by_label = {short[n]: stats[n] for n in order if n in stats}
    ref = uniform_reference((8, 8), 8)
    plots = [
        ('Attention distance, entropy and NMI per layer; one dot per head '
         '(dashed: uniform attention)',
         plot_stats(by_label, osp.join(plot_dir, 'attention_per_head.png'),
                    separate=True, reference=ref)),
        ('Head-averaged attention distance and NMI per layer',
         plot_layer_means(by_label, osp.join(plot_dir, 'attention_layers.png'),
                          reference=ref)),
    ]
    vm_spec = importlib.util.spec_from_file_location(
        '_mmhybrid_visualize_masking',
        osp.join(ROOT, 'tools', 'analysis', 'visualize_masking.py'))
    vm_tool = importlib.util.module_from_spec(vm_spec)
    vm_spec.loader.exec_module(vm_tool)
    mask_png = osp.join(plot_dir, 'masking_schedule.png')
    vm_tool.main([HYB_CFG, '--data', osp.join(data, 'val'), '--out', mask_png,
                  '--num-images', '4', '--device', 'cpu', '--cfg-options',
                  f'model.teacher_feat.checkpoint={sup_ckpt}',
                  f'model.teacher_rel.checkpoint={mae_ckpt}',
                  f'train_cfg.max_iters={si}'])
    plots.append(('Kept (bright) vs. masked (grey) tokens of the hybrid '
                  'student along its schedule', mask_png))

    # 6. table
    done = stage_time('distances to the teachers')
    rows = []
    for name, desc, ckpt in models + refs:
        row = dict(name=name, label=short[name], desc=desc,
                   probe=last_scalar(osp.join(wd, f'probe_{name}'),
                                     'accuracy/top1'),
                   finetune=last_scalar(osp.join(wd, f'finetune_{name}'),
                                        'accuracy/top1'))
        if name.startswith('student') and ckpt and osp.isfile(ckpt):
            row['iter_time'] = mean_iter_time(osp.join(wd, name))
            row['feat_dist'], row['rel_kl'] = distill_distances(
                ckpt, (sup_ckpt, mae_ckpt), data, s['attn_images'], args.seed)
        elif name.startswith('teacher'):
            row['iter_time'] = mean_iter_time(osp.join(wd, name))
        if name == 'teacher_sup':  # its own supervised training's val top-1
            own = last_scalar(sup_dir, 'accuracy/top1')
            row['own_top1'] = own
            row['finetune_text'] = f'({_fmt(own)}: its own training)'
        rows.append(row)
    done()
    times.update({k: v for k, v in stages.times.items()})
    total = time.time() - t_start
    load1 = ' / '.join(f'{v:.2f}' for v in os.getloadavg())
    rel_plots = [(t, osp.relpath(p, wd)) for t, p in plots]
    report = osp.join(wd, 'report.md')
    notes = []
    if stages.skipped:
        notes.append('--resume kept these stages from an earlier run (their '
                     'times are not in the totals): ' + ', '.join(stages.skipped))
    write_report(report, rows, stats, s, times, total, cmd, (load0, load1),
                 rel_plots, notes)
    with open(osp.join(wd, 'results.json'), 'w') as f:
        json.dump(dict(settings=s, rows=rows, times=times, total_s=total),
                  f, indent=1, default=float)
    print(open(report).read())
    if stages.failed:
        sys.exit(f'[study] failed stages: {stages.failed}')


if __name__ == '__main__':
    main()
