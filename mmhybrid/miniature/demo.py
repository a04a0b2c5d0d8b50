"""The main job in miniature, on the CPU, in about five minutes: ``make demo``
(``tools/demo/run_demo.py``).

The :mod:`.pipeline` configured for one student:

1. data: the built-in generated objects (5 shape classes, 64 px), or a user's
   ImageNet-style folder;
2. the two tiny teachers, trained with mmpretrain's own algorithms: a
   supervised ViT classifier (feature teacher Tc) and an MAE (relation teacher
   Tm), side by side;
3. hybrid distillation of a tiny student from them (progressive token masking
   0 -> 0.5);
4. a linear probe of the student, both teachers and a random initialisation;
5. k-NN on frozen [CLS] features (k = 20, cosine) and attention statistics per
   layer and head of each; one table, one line on attention diversity, and a
   PNG of the per-layer attention distance and NMI
   (``WORK_DIR/attention_layers.png``).
"""
import os
import os.path as osp
import time
from typing import Dict, List, Optional

from ..analysis.attention_report import plot_layer_means, uniform_reference
from .data import resolve_data
from .measures import head_spread, last_scalar, premise, read_scalars
from .pipeline import KNN_K, MiniaturePipeline, Model, Student, estimate_cost

#: (report label, short tag) of the models the demo evaluates.
MODELS = [('hybrid student', 'hybrid'), ('teacher Tc (supervised ViT)', 'Tc'),
          ('teacher Tm (MAE)', 'Tm'),
          ('random init (no pretraining)', 'random')]


def run_demo(work_dir: str = 'work_dirs/demo',
             data_root: Optional[str] = None,
             builtin_root: str = 'data/shapes/objects',
             num_classes: Optional[int] = None,
             img_size: int = 64,
             patch_size: int = 8,
             iters: int = 300,
             probe_iters: int = 200,
             num_train: int = 5000,
             num_val: int = 500,
             attn_images: int = 64,
             seed: int = 0,
             jobs: int = 2,
             resume: bool = False,
             subprocess: bool = False) -> str:
    """Run the demo and write ``WORK_DIR/report.md``.

    Args:
        work_dir (str): Where everything goes. Defaults to
            ``'work_dirs/demo'``.
        data_root (str, optional): An ImageNet-style folder; None for the
            built-in objects. Defaults to None.
        builtin_root (str): Where the built-in data is written (once).
            Defaults to ``'data/shapes/objects'``.
        num_classes (int, optional): Default: inferred from the data.
        img_size (int): Image side. Defaults to 64.
        patch_size (int): Patch side. Defaults to 8.
        iters (int): Iterations of Tc and of the distillation (Tm runs twice
            as many). Defaults to 300.
        probe_iters (int): Linear-probe iterations. Defaults to 200.
        num_train (int): Built-in data: training images. Defaults to 5000.
        num_val (int): Built-in data: validation images. Defaults to 500.
        attn_images (int): Val images of the attention statistics.
            Defaults to 64.
        seed (int): Seed of every stage. Defaults to 0.
        jobs (int): Training stages at once. Defaults to 2.
        resume (bool): Keep stages finished earlier with the same command.
            Defaults to False.
        subprocess (bool): Training stages as ``tools/train.py`` processes,
            not forked calls. Defaults to False.

    Returns:
        str: The report (also printed).
    """
    t_start = time.time()
    wd = osp.abspath(work_dir)
    os.makedirs(wd, exist_ok=True)
    data, what = resolve_data('run_demo', data_root, num_classes, img_size,
                              patch_size, builtin_root, num_train, num_val)
    print(f'[demo] data: {what}', flush=True)
    pipe = MiniaturePipeline(
        wd,
        data,
        img_size,
        patch_size,
        jobs=jobs,
        resume=resume,
        subprocess=subprocess,
        total_cost=estimate_cost(iters, 1, iters, len(MODELS), probe_iters))
    # the random reference: initialised as the students are, one network read
    # alike by the probe, k-NN and the attention statistics
    ckpts = dict(
        random=pipe.random_init(seed, osp.join(wd, 'random_init.pth')))
    ckpts['Tc'], ckpts['Tm'] = pipe.teachers(iters, seed)
    hyb_dir = osp.join(wd, 'hybrid')
    ckpts['hybrid'] = pipe.distill(
        [Student('hybrid_distill', hyb_dir, seed)], iters,
        (ckpts['Tc'], ckpts['Tm']))['hybrid_distill']
    models = [Model(label, seed, tag, ckpts[tag]) for label, tag in MODELS]
    pipe.evaluate(models, probe_iters)
    stats, rows, knn = {}, [], {}
    for m in models:
        r = pipe.measure(m, attn_images, student_iters=iters)
        stats[m.run], knn[m.run] = r['stats'], r['knn']
        rows.append(
            (m.label,
             last_scalar(pipe.eval_work_dir('probe', m),
                         'accuracy/top1'), r['knn']))
    ref = uniform_reference((img_size // patch_size, ) * 2, patch_size)
    png = plot_layer_means(
        {
            'Tc: supervised': stats['Tc'],
            'Tm: MAE': stats['Tm'],
            'hybrid student': stats['hybrid'],
            'random init': stats['random']
        },
        osp.join(wd, 'attention_layers.png'),
        reference=ref)
    header = (f'Hybrid Distillation demo (CPU; {what}; {img_size} px, '
              f'{patch_size} px patches; {iters} iterations of Tc and of the '
              f'distillation, {2 * iters} of Tm; {probe_iters}-iteration '
              f'linear probe, k-NN k={KNN_K} on frozen [CLS])')
    lines = demo_report_lines(
        header, rows, stats, ref, read_scalars(hyb_dir),
        last_scalar(osp.dirname(ckpts['Tc']), 'accuracy/top1'),
        data.num_classes, png, pipe)
    lines.insert(-3, premise_line(stats, knn, ref))  # after the diversity
    lines.append(f'total time: {time.time() - t_start:.0f}s')
    report = '\n'.join(lines)
    print(report)
    with open(osp.join(wd, 'report.md'), 'w') as f:
        f.write(report + '\n')
    return report


def premise_line(stats: Dict[str, dict], knn: Dict[str, float],
                 ref: Dict[str, float]) -> str:
    """One line on the paper's premise in the demo's teachers
    (:func:`~mmhybrid.miniature.measures.premise`): the demo keeps the cheap
    supervised Tc, whose deeper blocks are not collapsed, so it says when the
    premise is absent."""
    p = premise(stats['Tc'], stats['Tm'], knn['Tc'], knn['Tm'],
                ref['distance'], stats.get('random'))
    n = len(p['tc']['spread'])
    last = ', '.join(
        f"block {i + 1}: spread {p['tc']['spread'][i]:.2f} vs "
        f"{p['tm']['spread'][i]:.2f} px, NMI {p['tc']['nmi'][i]:.3f} vs "
        f"{p['tm']['nmi'][i]:.3f}" for i in range(n - 2, n))
    word = 'present' if p['holds'] else 'ABSENT'
    return (f"the paper's premise is {word} in this demo: Tc's last blocks "
            f"collapsed (spread and NMI <= half Tm's): "
            f"{'yes' if p['collapse'] else 'no'} (Tc vs Tm, {last}); Tm's "
            f'block 1 local (<= 0.75 x uniform): '
            f"{'yes' if p['local'] else 'no'} ({p['tm']['distance'][0]:.1f} "
            f"vs {ref['distance']:.1f} px)" +
            ('' if p['holds'] else
             '; the demo keeps its cheap supervised Tc, so its attention '
             "diversity numbers do not test the method's premise (make "
             "study's premise table does)"))


def demo_report_lines(header: str, rows: List[tuple], stats: Dict[str, dict],
                      ref: Dict[str, float], hybrid_logs: List[dict],
                      tc_top1: float, num_classes: int, png: str,
                      pipe: MiniaturePipeline) -> List[str]:
    """The demo's table (probe and k-NN top-1 per model), attention diversity,
    distillation losses and times, as report lines."""
    recs = [r for r in hybrid_logs if 'loss' in r]
    d = {t: s['distance'] for t, s in stats.items()}
    lines = [
        '', header, '', '| model | linear probe top-1 (%) | k-NN top-1 (%) |',
        '|---|---|---|'
    ]
    lines += [f'| {n} | {p:.1f} | {k:.1f} |' for n, p, k in rows]
    lines += [
        '',
        f'Tc\'s own supervised training reached {tc_top1:.1f} % val top-1. '
        f'Chance: {100 / num_classes:.1f} %.',
        'attention diversity (spread of mean attention distance across heads, '
        'averaged over layers; uniform attention: '
        f"{ref['distance']:.1f} px at every head): student "
        f"{head_spread(stats['hybrid']):.2f} px, Tc "
        f"{head_spread(stats['Tc']):.2f} px, Tm "
        f"{head_spread(stats['Tm']):.2f} "
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
                                    for k, v in pipe.stages.times.items()) +
        f", k-NN + attention {pipe.times['measure']:.0f}s",
    ]
    return lines
