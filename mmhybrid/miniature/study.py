"""The paper's study in miniature, on the CPU: ``make study``
(``tools/analysis/run_study.py``).

The :mod:`.pipeline` configured for four students (and ablation rows) over
five seeds:

1. the two tiny teachers, trained once (seed 0) with mmpretrain's own
   algorithms: MoCoV3 with a tiny ViT (feature teacher Tc; ``--feature-teacher
   sup``: the supervised ViT classifier) and an MAE (relation teacher Tm);
   the premise the paper starts from (Tc's last blocks collapsed, Tm's first
   block local) is measured on them before any student is judged
   (:func:`~mmhybrid.miniature.measures.premise`);
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
4. ``WORK_DIR/report.md``: the premise table, mean +- std over seeds, plots
   with error bands and bars, a verdict on each of the paper's three claims
   (holds / does not hold / undecided: :func:`judge`) and the ablations
   (:data:`ABLATIONS`, each paired per seed with the student it varies:
   ``hybrid_topk`` by default, the 3x-iteration rows by ``--students``).

The quick settings (:data:`QUICK`) are the same pipeline on a fraction of the
data and iterations with two seeds (the CI test runs them); their numbers mean
nothing.
"""
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..analysis.attention_report import (plot_accuracy_bars, plot_layer_bands,
                                         uniform_reference)
from .data import resolve_data
from .measures import (head_spread, last_scalar, mean_iter_time, mean_std,
                       premise)
from .pipeline import MiniaturePipeline, Model, Student, estimate_cost

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
# the ablations (issue 21): one extra student row each, paired per seed with
# the student it varies; name, label, description, extra --cfg-options,
# iterations as a multiple of the students'
ABLATIONS = [
    ('hybrid_topk', 'hybrid, top-k',
     'hybrid dropping exactly the least important tokens',
     ['model.token_selection=topk'], 1),
    ('hybrid_3x', 'hybrid, 3x iters', 'hybrid, three times the iterations', [],
     3),
    ('feature_only_3x', 'feature-only, 3x iters',
     'feature-only, three times the iterations',
     ['model.loss_rel.loss_weight=0.0'], 3),
]
#: the ablation rows `make study` runs by default (the 3x rows by
#: ``--students``: they do not fit the 30-minute budget on 2 cores)
DEFAULT_ABLATIONS = ('hybrid_topk', )
#: what each ablation row is compared with (same seed), and on what
ABLATION_PAIRS = [('hybrid, top-k', 'hybrid'), ('hybrid, 3x iters', 'hybrid'),
                  ('feature-only, 3x iters', 'feature-only'),
                  ('hybrid, 3x iters', 'feature-only, 3x iters')]
ABLATION_MEASURES = ('probe', 'knn', 'spread', 'nmi')
#: the feature teacher Tc by kind: stage name, label, description
TEACHERS = dict(
    moco=('teacher_moco', 'Tc: MoCo v3',
          "reference: contrastive ViT (Tc, mmpretrain's MoCoV3)"),
    sup=('teacher_sup', 'Tc: supervised', 'reference: supervised ViT (Tc)'))
#: the feature teacher `make study` trains (the premise table's evidence:
#: docs/study/report.md)
FEATURE_TEACHER = 'moco'
REFS = [('teacher_mae', 'Tm: MAE', 'reference: MAE (Tm)'),
        ('random_init', 'random init', 'reference: no pretraining')]
SEEDS = (0, 1, 2, 3, 4)
# sizes and iterations: (the study, its --quick run for CI)
_SETTINGS = dict(
    num_train=(5000, 100),
    num_val=(500, 40),
    teacher_iters=(600, 12),
    rel_iters=(1800, 24),
    student_iters=(300, 12),
    probe_iters=(100, 8),
    finetune_iters=(150, 8),
    attn_images=(64, 16),
    batch=(32, 16),
    probe_batch=(64, 16))
FULL = {k: full for k, (full, _) in _SETTINGS.items()}
QUICK = {k: quick for k, (_, quick) in _SETTINGS.items()}
MEASURES = ('iter_time', 'probe', 'knn', 'finetune', 'own_top1', 'spread',
            'last_distance', 'nmi', 'feat_dist', 'rel_kl')


def study_settings(quick: bool = False,
                   iters: Optional[int] = None,
                   **overrides: Optional[int]) -> Dict[str, int]:
    """:data:`FULL` (or :data:`QUICK`) with the given values instead;
    ``iters`` sets both the teachers' and the students' iterations."""
    s = dict(QUICK if quick else FULL)
    s.update({k: v for k, v in overrides.items() if v is not None})
    if iters:
        s['teacher_iters'] = s['student_iters'] = iters
    return s


# ----------------------------------------------------------------- verdicts
def paired(per_seed, a, b, measure):
    """Per-seed differences ``a - b`` of a measure (students of one seed share
    their initialisation and data order): ``(mean, std, n)``."""
    d = [
        per_seed[(a, s)][measure] - per_seed[(b, s)][measure]
        for s in sorted({s
                         for (lab, s) in per_seed if lab == a})
        if (b, s) in per_seed and per_seed[(a, s)].get(measure) is not None
        and per_seed[(b, s)].get(measure) is not None
    ]
    if len(d) < 2:
        return float('nan'), float('nan'), len(d)
    return float(np.mean(d)), float(np.std(d, ddof=1)), len(d)


def judge(mean: float, std: float, n: int, rule: str) -> Optional[bool]:
    """One paired comparison under its rule: True (holds), False (does not
    hold) or None (undecided).

    For ``n`` per-seed differences with mean ``mean``, std ``std`` and
    standard error ``se = std / sqrt(n)``: ``'within'`` ("at least ...
    within one std") holds when ``mean >= -std``; ``'above'`` ("clearly
    above") when ``mean > 2 se``; ``'below'`` when ``mean < -2 se`` (the
    rules as written before the first numbers). A comparison that fails its
    rule while its standard error is larger than the effect it judges
    (``se > |mean|``: these seeds cannot even tell the sign of the
    difference) is undecided, not "does not hold". (A failed ``'within'``
    has ``|mean| > std >= se``, so it is always decided.)
    """
    se = std / n**0.5
    ok = {
        'within': mean >= -std,
        'above': mean > 2 * se,
        'below': mean < -2 * se
    }[rule]
    if not ok and se > abs(mean):
        return None
    return bool(ok)


def verdicts(per_seed):
    """The paper's three claims, judged on per-seed paired differences.

    ``per_seed[(label, seed)][measure]`` holds the results; each comparison
    is judged by :func:`judge`. A claim holds when every comparison holds,
    does not hold when one clearly fails, and is otherwise undecided (None;
    also with a missing or single-seed comparison).

    Returns:
        list: ``(claim, ok, detail)`` per claim, ``ok`` True / False / None.
    """

    def check(a, b, m, rule):
        mean, std, n = paired(per_seed, a, b, m)
        if n < 2:
            return None, f'{m}: {a} - {b}: fewer than 2 seeds'
        se = std / n**0.5
        ok = judge(mean, std, n, rule)
        word = {True: 'holds', False: 'fails', None: 'undecided'}[ok]
        return ok, (f'{m}: {a} - {b} = {mean:+.3g} (std {std:.2g}, se '
                    f'{se:.2g}; {rule}: {word})')

    def claim(text, checks):
        results = [check(*c) for c in checks]
        oks = [ok for ok, _ in results]
        ok = False if False in oks else (None if None in oks else True)
        return text, ok, '; '.join(d for _, d in results)

    h, f, r, n = 'hybrid', 'feature-only', 'relation-only', 'hybrid, no mask'
    return [
        claim(
            '(a) the hybrid student discriminates at least as well as the '
            'feature-only one (within one std) and clearly better than the '
            'relation-only one', [(h, f, 'probe', 'within'),
                                  (h, f, 'knn', 'within'),
                                  (h, r, 'probe', 'above'),
                                  (h, r, 'knn', 'above')]),
        claim(
            '(b) its attention is at least as diverse as the relation-only '
            "student's (within one std) and clearly more diverse than the "
            "feature-only one's (per-head distance spread, NMI)",
            [(h, r, 'spread', 'within'), (h, r, 'nmi', 'within'),
             (h, f, 'spread', 'above'), (h, f, 'nmi', 'above')]),
        claim(
            '(c) progressive masking clearly lowers the time per iteration '
            'and keeps the accuracy within one std',
            [(h, n, 'iter_time', 'below'), (h, n, 'probe', 'within'),
             (h, n, 'knn', 'within')]),
    ]


def ablation_rows(per_seed) -> List[tuple]:
    """The ablations' paired differences (:data:`ABLATION_PAIRS`, on
    :data:`ABLATION_MEASURES`) for the rows that ran: ``(a, b, {measure:
    (mean, std, n)})``."""
    labels = {lab for lab, _ in per_seed}
    return [(a, b, {
        m: paired(per_seed, a, b, m)
        for m in ABLATION_MEASURES
    }) for a, b in ABLATION_PAIRS if a in labels and b in labels]


# ------------------------------------------------------------------- report
def _pm(stat, spec='.1f'):
    mean, std, n = stat
    if n == 0:
        return 'n/a'
    return f'{mean:{spec}} ± {std:{spec}}' if n > 1 else f'{mean:{spec}}'


def write_report(path: str, out: dict, s: dict, seeds: Sequence[int],
                 data_what: str, cmd: str) -> str:
    """Write the study's ``report.md`` from :func:`run_study`'s summary ``out``
    (``aggregate``, ``order``, ``desc``, ``claims``, ``plots``, ``times``,
    ``total_s``) and return its text."""
    agg, desc, total = out['aggregate'], out['desc'], out['total_s']
    lines = [
        '# Hybrid Distillation: the study in miniature', '',
        f'Command: `{cmd}`', '',
        f'Data: {data_what}. Tiny ViTs (width 96, 4 blocks, 3 heads). '
        f"Teachers: Tc ({out['tc_label'][4:]}) {s['teacher_iters']}, Tm "
        f"(MAE) {s['rel_iters']} iterations, seed 0. Students: "
        f"{s['student_iters']} iterations, batch {s['batch']}, seeds "
        f"{', '.join(map(str, seeds))} (mean ± std over seeds; teachers and "
        f'the random init: one row per seed where they vary). Linear probe '
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
    for label in out['order']:
        a = agg[label]
        ft = (
            _pm(a['finetune']) if a['own_top1'][2] == 0 else
            f"({_pm(a['own_top1'])}: own training)")
        lines.append(
            f"| {label} | {desc[label]} | {_pm(a['iter_time'], '.3f')} | "
            f"{_pm(a['probe'])} | {_pm(a['knn'])} | {ft} | "
            f"{_pm(a['spread'], '.2f')} | {_pm(a['last_distance'])} | "
            f"{_pm(a['nmi'], '.3f')} | {_pm(a['feat_dist'], '.4f')} | "
            f"{_pm(a['rel_kl'], '.4f')} |")
    lines += [
        '', 'Tc\'s fine-tune cell is its own supervised training from scratch '
        '(the others fine-tune a pretrained backbone). '
        'Top-1 on the val split. Head spread: std over the heads of a layer '
        'of their mean attention distance, averaged over layers (0 when every '
        'head looks equally far). NMI: query-key normalised mutual '
        'information (0: every query attends alike). feat. dist. / rel. KL: '
        'the hybrid config\'s two losses at weight 1 on all tokens of val '
        'images (lower = closer to that teacher; the relation-only student '
        'never trained its projection head, so its feature distance means '
        'nothing). s/iter: mean seconds per pretraining iteration as logged '
        '(stages ran two at a time, so these include contention).', '',
        '## The paper\'s claims at this scale', ''
    ]
    if not out['claims']:
        lines.append('Not judged: an ablation (the verdicts need all four '
                     'students with their own options only).')
    for claim, ok, detail in out['claims']:
        word = {True: 'holds', False: 'does not hold', None: 'undecided'}[ok]
        lines += [f'- {claim}: **{word}**. {detail}.']
    lines += _premise_lines(out.get('premise'))
    lines += _ablation_lines(out.get('ablations', []))
    lines += ['', '## Plots', '']
    for title, p in out['plots']:
        lines += [f'**{title}**', '', f'![{title}]({p})', '']
    lines += ['## Time', '', '| stage | seconds |', '|---|---|']
    lines += [f'| {k} | {v:.0f} |' for k, v in out['times'].items()]
    lines += [
        '', f'Total: {total:.0f} s ({total / 60:.1f} min); '
        f'{os.cpu_count()} CPUs.', ''
    ]
    text = '\n'.join(lines)
    with open(path, 'w') as f:
        f.write(text)
    return text


def _premise_lines(p: Optional[dict]) -> List[str]:
    """The premise section of the report (:func:`premise` of the teachers)."""
    if not p:
        return []
    n = len(p['tc']['distance'])
    head = ' | '.join(f'block {i + 1}' for i in range(n))
    lines = [
        '', '## The premise: the teachers before any student runs', '',
        'Measured on the teachers alone (the attention statistics on the '
        'val images above; k-NN as in the table). The paper starts from '
        'teachers whose attention differs: the CL / supervised teacher\'s '
        'deeper blocks collapse (heads alike, low NMI), the MIM teacher\'s '
        'attention stays local and diverse. Uniform attention over this '
        f"grid: {p['uniform_distance']:.1f} px.", '',
        f'| teacher | measure | {head} |', '|---|---|' + '---|' * n
    ]
    for who in ('tc', 'tm'):
        name = p['tc_label'] if who == 'tc' else 'Tm: MAE'
        for key, what, spec in (('distance', 'head-mean distance (px)',
                                 '.1f'), ('spread', 'head spread (px)', '.2f'),
                                ('nmi', 'NMI', '.3f')):
            cells = ' | '.join(f'{v:{spec}}' for v in p[who][key])
            lines.append(f'| {name} | {what} | {cells} |')
    lines += ['']
    for text, ok in p['checks'].items():
        lines.append(f"- {text}: {'yes' if ok else 'no'}")
    word = {True: 'present', False: 'absent'}
    lines += [
        '', f"k-NN top-1: Tc {p['knn_tc']:.1f} %, Tm {p['knn_tm']:.1f} %" +
        (f"; random init's block-1 head spread "
         f"{p['rand_spread_block1']:.2f} px"
         if p.get('rand_spread_block1') is not None else '') + '.', '',
        f"**Premise: collapse of Tc's last blocks {word[p['collapse']]}, "
        f"locality of Tm's first block {word[p['local']]}.**"
    ]
    return lines


def _ablation_lines(rows: List[tuple]) -> List[str]:
    """The ablations section: per-seed paired differences, mean ± std (standard
    error)."""
    if not rows:
        return []
    lines = [
        '', '## Ablations', '',
        'Paired per seed (same initialisation and data order): mean ± std '
        '(standard error) of the per-seed differences.', '',
        '| comparison | ' + ' | '.join(ABLATION_MEASURES) + ' |',
        '|---|' + '---|' * len(ABLATION_MEASURES)
    ]
    for a, b, d in rows:
        cells = []
        for m in ABLATION_MEASURES:
            mean, std, n = d[m]
            spec = '.1f' if m in ('probe', 'knn') else '.3f'
            se = std / n**0.5 if n >= 2 else 0.0
            cells.append('n/a' if n <
                         2 else f'{mean:+{spec}} ± {std:{spec}} ({se:{spec}})')
        lines.append(f'| {a} - {b} | ' + ' | '.join(cells) + ' |')
    return lines


# -------------------------------------------------------------------- run
def run_study(work_dir: str = 'work_dirs/study',
              settings: Optional[Dict[str, int]] = None,
              seeds: Sequence[int] = SEEDS,
              students: Optional[Sequence[str]] = None,
              feature_teacher: str = FEATURE_TEACHER,
              student_options: Sequence[str] = (),
              data_root: Optional[str] = None,
              num_classes: Optional[int] = None,
              img_size: int = 64,
              patch_size: int = 8,
              jobs: int = 2,
              keep_going: bool = False,
              resume: bool = False,
              subprocess: bool = False,
              command: str = '') -> dict:
    """Run the study and write ``WORK_DIR/report.md`` and ``results.json``.

    Args:
        work_dir (str): Where everything goes. Defaults to
            ``'work_dirs/study'``.
        settings (dict, optional): Sizes and iterations
            (:func:`study_settings`). Defaults to :data:`FULL`.
        seeds (Sequence[int]): One repeat of the students per seed.
            Defaults to :data:`SEEDS` (five).
        students (Sequence[str], optional): Names of the students to run,
            from :data:`STUDENTS` and :data:`ABLATIONS` (the verdicts need
            the four of :data:`STUDENTS`). Defaults to those four and
            :data:`DEFAULT_ABLATIONS`.
        feature_teacher (str): Tc: ``'moco'`` (mmpretrain's MoCoV3) or
            ``'sup'`` (the supervised classifier). Defaults to
            :data:`FEATURE_TEACHER`.
        student_options (Sequence[str]): ``--cfg-options`` given to every
            student before its own (an ablation: no verdicts). Defaults to ().
        data_root (str, optional): An ImageNet-style folder; None for the
            built-in objects (written to ``WORK_DIR/data/objects``).
        num_classes (int, optional): Default: inferred from the data.
        img_size (int): Image side. Defaults to 64.
        patch_size (int): Patch side. Defaults to 8.
        jobs (int): Training stages at once. Defaults to 2.
        keep_going (bool): Report the stages that ran even if one fails.
            Defaults to False.
        resume (bool): Keep stages finished earlier with the same command.
            Defaults to False.
        subprocess (bool): Training stages as ``tools/train.py`` processes,
            not forked calls. Defaults to False.
        command (str): The command line, quoted in the report.

    Returns:
        dict: What ``results.json`` holds.
    """
    t_start = time.time()
    s = settings or dict(FULL)
    if students is None:
        students = [n for n, *_ in STUDENTS] + list(DEFAULT_ABLATIONS)
    chosen = [(*st, 1) for st in STUDENTS if st[0] in students]
    chosen += [st for st in ABLATIONS if st[0] in students]
    wd = osp.abspath(work_dir)
    os.makedirs(wd, exist_ok=True)
    data, data_what = resolve_data('run_study', data_root, num_classes,
                                   img_size, patch_size,
                                   osp.join(wd, 'data', 'objects'),
                                   s['num_train'], s['num_val'])
    data_what += f' at {img_size} px, {patch_size} px patches'
    print(f'[study] data: {data_what}', flush=True)
    n_models = len(seeds) * (len(chosen) + 1)
    pipe = MiniaturePipeline(
        wd,
        data,
        img_size,
        patch_size,
        eval_dir=osp.join(wd, 'eval'),
        log_interval=10,
        jobs=jobs,
        resume=resume,
        keep_going=keep_going,
        tag='[study]',
        subprocess=subprocess,
        total_cost=estimate_cost(
            s['teacher_iters'] * (3 if feature_teacher == 'moco' else 1),
            len(seeds) * sum(st[4] for st in chosen), s['student_iters'],
            n_models + 2, s['probe_iters'], n_models, s['finetune_iters']))
    teachers = pipe.teachers(s['teacher_iters'], 0, s['batch'],
                             feature_teacher, s['rel_iters'])
    models = _train_students(pipe, s, seeds, chosen, student_options, teachers,
                             feature_teacher)
    models = pipe.evaluate(models, s['probe_iters'], s['finetune_iters'],
                           s['probe_batch'], s['batch'])
    results = [_measure(pipe, m, s, teachers) for m in models]
    full = all(n in students for n, *_ in STUDENTS) and not student_options
    out = _summarise(pipe, results, s, seeds, chosen, full,
                     TEACHERS[feature_teacher][1])
    out['total_s'] = time.time() - t_start
    report = write_report(
        osp.join(wd, 'report.md'), out, s, seeds, data_what, command)
    with open(osp.join(wd, 'results.json'), 'w') as f:
        json.dump(
            {
                k: v
                for k, v in out.items()
                if k not in ('order', 'desc', 'plots', 'ablations')
            },
            f,
            indent=1,
            default=float)
    print(report)
    if pipe.stages.failed:
        raise SystemExit(f'[study] failed stages: {pipe.stages.failed}')
    return out


def _train_students(pipe: MiniaturePipeline, s: dict, seeds: Sequence[int],
                    chosen: list, student_options: Sequence[str], teachers,
                    feature_teacher: str) -> List[Model]:
    """Distil every student of every seed; save each seed's random init.

    Returns:
        list: The models to evaluate: trained students and the random init
        per seed, then the two teachers (once).
    """

    def sdir(name, seed):
        return osp.join(pipe.work_dir, f'seed{seed}', f'student_{name}')

    ckpts = pipe.distill([
        Student(f'seed{seed}_student_{name}', sdir(name, seed), seed, extra,
                s['student_iters'] * factor) for seed in seeds
        for name, _, _, extra, factor in chosen
    ], s['student_iters'], teachers, student_options, s['batch'])
    models = []
    for seed in seeds:
        for name, label, *_ in chosen:
            run = f'seed{seed}_student_{name}'
            if run in ckpts:  # --keep-going: the ones that trained
                models.append(
                    Model(label, seed, run, ckpts[run], sdir(name, seed)))
        # initialised as that seed's students are; one network read alike by
        # the probe, the fine-tune, k-NN and the attention statistics
        rand = pipe.random_init(
            seed, osp.join(pipe.work_dir, f'seed{seed}', 'random_init.pth'))
        models.append(
            Model('random init', seed, f'seed{seed}_random_init', rand))
    sup, mae = teachers
    run, label, _ = TEACHERS[feature_teacher]
    return models + [
        Model(label, 0, run, sup, osp.dirname(sup)),
        Model('Tm: MAE', 0, 'teacher_mae', mae, osp.dirname(mae))
    ]


def _measure(pipe: MiniaturePipeline, m: Model, s: dict, teachers) -> dict:
    """One model's row of ``results.json``."""
    student = m.run.startswith(f'seed{m.seed}_student')
    got = pipe.measure(m, s['attn_images'], teachers if student else None,
                       s['student_iters'])
    st = got.pop('stats')
    ft = pipe.eval_work_dir('finetune', m)
    r = dict(
        label=m.label,
        seed=m.seed,
        run=m.run,
        probe=last_scalar(pipe.eval_work_dir('probe', m), 'accuracy/top1'),
        finetune=None if f'finetune_{m.run}' in pipe.stages.failed else
        last_scalar(ft, 'accuracy/top1'),
        spread=head_spread(st),
        nmi=float(st['nmi'].mean()),
        last_distance=float(st['distance'][-1].mean()),
        stats={
            k: v.tolist()
            for k, v in st.items()
        },
        **got)
    if m.pretrain_dir:
        r['iter_time'] = mean_iter_time(m.pretrain_dir)
    if m.run == 'teacher_sup':  # its own training, shown in that column
        r['own_top1'] = last_scalar(m.pretrain_dir, 'accuracy/top1')
    return r


def _summarise(pipe: MiniaturePipeline, results: List[dict], s: dict,
               seeds: Sequence[int], chosen: list, full: bool,
               tc_label: str) -> dict:
    """Mean +- std over seeds, the premise, the ablations, the plots and, for
    the four students without extra options, the verdicts."""
    order = [lab for _, lab, *_ in chosen] + [tc_label
                                              ] + [lab for _, lab, _ in REFS]
    desc = {lab: d for _, lab, d, *_ in STUDENTS + ABLATIONS}
    desc.update({lab: d for _, lab, d in REFS})
    desc.update({lab: d for _, lab, d in TEACHERS.values()})
    agg = {
        lab: {
            m: mean_std([r.get(m) for r in results if r['label'] == lab])
            for m in MEASURES
        }
        for lab in order
    }
    runs_by_label = {
        lab: [{
            k: np.asarray(v)
            for k, v in r['stats'].items()
        } for r in results if r['label'] == lab]
        for lab in order
    }
    plot_dir = osp.join(pipe.work_dir, 'plots')
    ref = uniform_reference((pipe.img_size // pipe.patch_size, ) * 2,
                            pipe.patch_size)
    plots = [
        ('Head-averaged attention distance and NMI per layer, mean ± std over '
         'seeds (dashed: uniform attention)',
         plot_layer_bands({
             k: v
             for k, v in runs_by_label.items() if v
         },
                          osp.join(plot_dir, 'attention_layers.png'),
                          reference=ref)),
        ('Linear probe, k-NN and fine-tune top-1: mean ± std over seeds '
         '(dots: seeds)',
         plot_accuracy_bars(
             {
                 lab: {
                     m: [
                         r[m] for r in results
                         if r['label'] == lab and r.get(m) is not None
                     ]
                     for m in ('probe', 'knn', 'finetune')
                 }
                 for lab in order
             },
             osp.join(plot_dir, 'accuracy.png'),
             chance=100 / pipe.data.num_classes)),
    ]
    per_seed = {(r['label'], r['seed']): r for r in results}
    # ablations (a subset, or options on every student) are not the claims
    claims = verdicts(per_seed) if full else []
    times = dict(pipe.times, **pipe.stages.times)
    by_label = {r['label']: r for r in results if r['seed'] == seeds[0]}
    prem = None
    if tc_label in by_label and 'Tm: MAE' in by_label:
        tc, tm = by_label[tc_label], by_label['Tm: MAE']
        rand = by_label.get('random init')
        prem = premise({
            k: np.asarray(v)
            for k, v in tc['stats'].items()
        }, {
            k: np.asarray(v)
            for k, v in tm['stats'].items()
        }, tc['knn'], tm['knn'], ref['distance'], None if rand is None else {
            k: np.asarray(v)
            for k, v in rand['stats'].items()
        })
        prem['tc_label'] = tc_label
    return dict(
        premise=prem,
        ablations=ablation_rows(per_seed),
        tc_label=tc_label,
        settings=s,
        seeds=list(seeds),
        results=results,
        aggregate=agg,
        claims=claims,
        times=times,
        order=order,
        desc=desc,
        plots=[(t, osp.relpath(p, pipe.work_dir)) for t, p in plots])
