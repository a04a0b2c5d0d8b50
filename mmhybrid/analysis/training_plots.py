"""What ``tools/analysis/plot_training.py`` draws: a run's logged curves from
its ``scalars.json`` (every timestamped folder of the work dir, a resumed run's
later records of an iteration replacing the earlier ones).

* ``losses.png``: every logged ``loss*`` against the iteration.
* ``mask_ratio.png``: the progressive masking ratio.
* ``attention.png``: per layer, the student's attention distance, head
  spread and NMI over training (``AttentionDiversityHook``), with the relation
  teacher's values as dashed lines of the same colour, and the deep-layer
  ratios to the relation teacher.
* ``knn_top1.png``: ``knn/top1`` (``KNNMonitorHook``).
"""
import os
import os.path as osp
import re
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from mmhybrid.utils.scalars import read_scalars
from .attention_report import _plt, _save

_ATTN = re.compile(r'^attn_(distance|spread|nmi)/(.+)_layer(\d+)$')
_LABELS = dict(
    distance='attention distance (px), head mean',
    spread='head spread of distance (px)',
    nmi='query-key NMI, head mean')

Series = Dict[str, List[Tuple[float, float]]]


def collect_series(records: List[dict]) -> Series:
    """``{key: [(iteration, value), ...]}`` of every numeric scalar, sorted by
    iteration; a later record of the same key and iteration (a resumed run)
    replaces the earlier one. Training records are placed at their ``iter``,
    the monitors' records at their ``step``."""
    points: Dict[str, Dict[float, float]] = defaultdict(dict)
    for rec in records:
        x = rec.get('iter', rec.get('step'))
        if x is None:
            continue
        for key, value in rec.items():
            if key in ('iter', 'step', 'epoch') or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                points[key][float(x)] = float(value)
    return {k: sorted(v.items()) for k, v in points.items()}


def _xy(points):
    return [p[0] for p in points], [p[1] for p in points]


def _line_plot(series: Series, keys: List[str], path: str, ylabel: str,
               title: str, dpi: int) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for key in keys:
        x, y = _xy(series[key])
        # markers where the points are few (monitors log every N iterations)
        ax.plot(x, y, '-o' if len(x) <= 60 else '-', lw=1.2, ms=3, label=key)
    ax.set_xlabel('iteration')
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        ax.legend(fontsize=7)
    return _save(fig, path, dpi)


def plot_attention(series: Series, path: str, dpi: int = 90) -> str:
    """Per-layer attention statistics over training: one panel per metric
    (student lines coloured by depth, relation teacher dashed at its reference
    value), plus the deep-layer ratios to the relation teacher."""
    plt = _plt()
    by_model: Dict[str,
                   Dict[str,
                        Dict[int,
                             list]]] = defaultdict(lambda: defaultdict(dict))
    for key, points in series.items():
        m = _ATTN.match(key)
        if m:
            metric, model, layer = m.group(1), m.group(2), int(m.group(3))
            by_model[model][metric][layer] = points
    student = by_model.get('student', {})
    teacher = by_model.get('teacher_rel', {})
    ratios = [
        k for k in ('attn_collapse/spread_ratio', 'attn_collapse/nmi_ratio')
        if k in series
    ]
    panels = [m for m in ('distance', 'spread', 'nmi') if m in student]
    count = len(panels) + (1 if ratios else 0)
    ncols = min(count, 2)
    nrows = -(-count // ncols)
    fig, grid = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.0 * nrows + 0.4), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.axis('off')
    num_layers = max((max(v) + 1 for v in student.values()), default=1)
    cmap = plt.get_cmap('viridis')
    for ax, metric in zip(axes, panels):
        for layer in sorted(student[metric]):
            color = cmap(layer / max(num_layers - 1, 1))
            x, y = _xy(student[metric][layer])
            ax.plot(
                x,
                y,
                '-o',
                ms=2.5,
                lw=1.1,
                color=color,
                label=f'layer {layer}')
            ref = teacher.get(metric, {}).get(layer)
            if ref:
                ax.axhline(ref[-1][1], ls='--', lw=0.8, color=color)
        ax.set_xlabel('iteration')
        ax.set_ylabel(_LABELS[metric], fontsize=8)
        ax.grid(alpha=0.3)
    if ratios:
        ax = axes[len(panels)]
        for key in ratios:
            x, y = _xy(series[key])
            ax.plot(x, y, '-o', ms=2.5, lw=1.1, label=key.split('/')[1])
        ax.axhline(1.0, ls='--', lw=0.8, color='grey')
        ax.set_xlabel('iteration')
        ax.set_ylabel('student / relation teacher,\ndeep layers', fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if panels:
        # above the first panel: the lines fill the panels
        axes[0].legend(
            fontsize=7,
            ncol=min(num_layers, 6),
            loc='lower left',
            bbox_to_anchor=(0.0, 1.01),
            frameon=False)
    fig.suptitle(
        'student attention per layer (dashed: relation teacher)'
        if teacher else 'student attention per layer',
        fontsize=9)
    return _save(fig, path, dpi)


def plot_training(work_dir: str,
                  out: Optional[str] = None,
                  dpi: int = 90) -> Dict[str, str]:
    """Draw a run's curves into PNGs.

    Args:
        work_dir (str): The run's work directory (``<timestamp>/vis_data/
            scalars.json`` under it).
        out (str, optional): Output folder. Defaults to
            ``work_dir/plots``.
        dpi (int): Defaults to 90.

    Returns:
        dict[str, str]: The PNG of each curve drawn (``losses``,
        ``mask_ratio``, ``attention``, ``knn_top1``); curves the run did not
        log are left out.
    """
    records = read_scalars(work_dir, all_runs=True, required=True)
    series = collect_series(records)
    out = out or osp.join(work_dir, 'plots')
    os.makedirs(out, exist_ok=True)
    written = {}
    losses = sorted(k for k in series if re.fullmatch(r'(\w+/)?loss\w*', k))
    if losses:
        written['losses'] = _line_plot(series, losses,
                                       osp.join(out, 'losses.png'), 'loss',
                                       'training losses', dpi)
    if 'mask_ratio' in series:
        written['mask_ratio'] = _line_plot(series, ['mask_ratio'],
                                           osp.join(out, 'mask_ratio.png'),
                                           'mask ratio',
                                           'progressive token masking', dpi)
    if any(_ATTN.match(k) and '/student_' in k for k in series):
        written['attention'] = plot_attention(series,
                                              osp.join(out, 'attention.png'),
                                              dpi)
    if 'knn/top1' in series:
        written['knn_top1'] = _line_plot(series, ['knn/top1'],
                                         osp.join(out, 'knn_top1.png'),
                                         'k-NN top-1 (%)',
                                         'k-NN top-1 (KNNMonitorHook)', dpi)
    return written
