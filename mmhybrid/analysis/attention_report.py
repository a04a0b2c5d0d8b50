"""Attention statistics of a whole ViT on a set of images: compute, save, plot.

``stats`` below is a dict ``{'distance': A, 'entropy': A, 'nmi': A}`` of numpy
arrays ``A`` of shape ``(num_layers, num_heads)``: per layer and head, the mean
over images of the per-image statistic of :mod:`.attention_metrics`.
"""
import csv
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .attention_metrics import METRICS, vit_attention_stats

METRIC_LABELS = {
    'distance': 'attention distance (px)',
    'entropy': 'attention entropy (nats)',
    'nmi': 'query-key NMI',
}
CSV_FIELDS = ('model', 'layer', 'head', 'attn_distance_px',
              'attn_entropy_nats', 'nmi', 'num_images')
_CSV_KEYS = dict(
    distance='attn_distance_px', entropy='attn_entropy_nats', nmi='nmi')


@torch.no_grad()
def compute_attention_stats(
        vit,
        images: torch.Tensor,
        batch_size: int = 32,
        layers: Optional[Sequence[int]] = None) -> Dict[str, np.ndarray]:
    """Per layer and head statistics of a ViT over images.

    Args:
        vit (AnalysisVit): The model and its normalisation
            (:mod:`.vit_loading`).
        images (Tensor): ``(B, 3, H, W)`` uint8 RGB at ``vit.img_size``.
        batch_size (int): Images per forward pass. Defaults to 32.
        layers (Sequence[int], optional): Blocks (0-based); all when None.

    Returns:
        dict[str, np.ndarray]: ``distance``, ``entropy``, ``nmi``, each
        ``(num_layers, num_heads)`` (rows in the order of ``layers``).
    """
    if tuple(images.shape[-2:]) != vit.img_size:
        raise ValueError(f'images are {tuple(images.shape[-2:])}, the model '
                         f'expects {vit.img_size}')
    batches = (
        vit.normalize(images[start:start + batch_size])
        for start in range(0, images.shape[0], batch_size))
    return vit_attention_stats(vit.model, batches, vit.grid_hw, vit.patch_size,
                               layers)


def write_csv(path: str,
              stats: Dict[str, np.ndarray],
              model: str,
              num_images: int,
              layers: Optional[Sequence[int]] = None) -> None:
    """One row per layer and head (layers and heads 0-based)."""
    num_layers, num_heads = stats['distance'].shape
    layers = list(range(num_layers)) if layers is None else list(layers)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for li, layer in enumerate(layers):
            for h in range(num_heads):
                w.writerow([model, layer, h] +
                           [f'{float(stats[m][li, h]):.6f}'
                            for m in METRICS] + [num_images])


def read_csv(path: str) -> Dict[str, Dict[str, np.ndarray]]:
    """Read :func:`write_csv` files back: ``{model: stats}``."""
    rows: Dict[str, List[dict]] = {}
    with open(path, newline='') as f:
        for r in csv.DictReader(f):
            rows.setdefault(r['model'], []).append(r)
    out = {}
    for model, rs in rows.items():
        layers = sorted({int(r['layer']) for r in rs})
        heads = sorted({int(r['head']) for r in rs})
        stats = {m: np.zeros((len(layers), len(heads))) for m in METRICS}
        for r in rs:
            li, h = layers.index(int(r['layer'])), heads.index(int(r['head']))
            for m in METRICS:
                stats[m][li, h] = float(r[_CSV_KEYS[m]])
        out[model] = stats
    return out


def layer_summary(stats: Dict[str, np.ndarray],
                  layers: Optional[Sequence[int]] = None) -> List[str]:
    """One line per layer: head mean and [min, max] of every statistic."""
    num_layers = stats['distance'].shape[0]
    layers = list(range(num_layers)) if layers is None else list(layers)
    lines = []
    for li, layer in enumerate(layers):
        d, e, n = (stats[m][li] for m in METRICS)
        lines.append(
            f'layer {layer:2d}: distance {d.mean():6.2f} px '
            f'[{d.min():.2f}, {d.max():.2f}]  entropy {e.mean():5.3f} nats '
            f'[{e.min():.3f}, {e.max():.3f}]  NMI {n.mean():5.3f} '
            f'[{n.min():.3f}, {n.max():.3f}]')
    return lines


def _save(fig, path: str, dpi: int) -> str:
    """Lay out, write (creating the folder) and close a figure."""
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return path


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def uniform_reference(grid_hw, patch_size) -> Dict[str, float]:
    """The statistics of uniform attention over an ``(h, w)`` patch grid:

    distance = mean pairwise patch distance (px), entropy = ``log N``, NMI = 0.
    Drawn as dashed lines, they show how far a model is from "attends to
    everything alike".
    """
    from .attention_metrics import patch_distance_matrix
    dist = patch_distance_matrix(grid_hw, patch_size)
    return dict(
        distance=float(dist.mean()),
        entropy=float(np.log(dist.shape[0])),
        nmi=0.0)


def plot_metric(ax,
                stats_by_model: Dict[str, Dict[str, np.ndarray]],
                metric: str,
                colors: Optional[Dict[str, str]] = None,
                reference: Optional[Dict[str, float]] = None) -> None:
    """Draw one metric on ``ax``: layer on x, one dot per head per model, a
    line through the head means, and a dashed line at ``reference[metric]``
    (e.g. :func:`uniform_reference`) when given."""
    names = list(stats_by_model)
    width = 0.6
    for mi, name in enumerate(names):
        a = stats_by_model[name][metric]
        num_layers, num_heads = a.shape
        offset = (mi - (len(names) - 1) / 2) * width / max(len(names), 1)
        color = (colors or {}).get(name)
        xs = np.arange(1, num_layers + 1) + offset
        pts = ax.scatter(
            np.repeat(xs, num_heads),
            a.reshape(-1),
            s=14,
            alpha=0.8,
            color=color,
            label=name)
        ax.plot(
            xs, a.mean(1), '-', lw=1, alpha=0.6, color=pts.get_facecolor()[0])
    ax.set_xlabel('layer')
    ax.set_ylabel(METRIC_LABELS[metric])
    num_layers = max(s[metric].shape[0] for s in stats_by_model.values())
    ax.set_xticks(range(1, num_layers + 1))
    if reference is not None and metric in reference:
        ax.axhline(reference[metric], ls='--', lw=0.8, color='grey')
        ax.text(
            0.98,
            reference[metric],
            'uniform',
            ha='right',
            va='bottom',
            fontsize=7,
            color='grey',
            transform=ax.get_yaxis_transform())
    ax.grid(alpha=0.3)


def plot_stats(stats_by_model: Dict[str, Dict[str, np.ndarray]],
               path: str,
               title: Optional[str] = None,
               metrics: Sequence[str] = METRICS,
               separate: bool = False,
               reference: Optional[Dict[str, float]] = None,
               dpi: int = 90) -> str:
    """Paper-style plots: per metric, layer on x and one dot per head.

    Args:
        stats_by_model (dict): ``{name: stats}``.
        path (str): Output PNG.
        title (str, optional): Figure title.
        metrics (Sequence[str]): Which statistics, one panel (row) each.
        separate (bool): One column per model (y shared along each metric's
            row) instead of all models overlaid in one panel. Defaults to
            False.
        reference (dict, optional): A dashed line per metric, e.g.
            :func:`uniform_reference`.
        dpi (int): Resolution. Defaults to 90.

    Returns:
        str: ``path``.
    """
    plt = _plt()
    names = list(stats_by_model)
    palette = plt.rcParams['axes.prop_cycle'].by_key()['color']
    colors = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    if separate:  # rows: metrics, columns: models
        fig, axes = plt.subplots(
            len(metrics),
            len(names),
            figsize=(2.5 * len(names) + 0.6, 2.3 * len(metrics) + 0.5),
            squeeze=False,
            sharey='row')
        for r, metric in enumerate(metrics):
            for c, name in enumerate(names):
                ax = axes[r, c]
                plot_metric(ax, {name: stats_by_model[name]}, metric, colors,
                            reference)
                if r == 0:
                    ax.set_title(name, fontsize=9)
                if c > 0:
                    ax.set_ylabel('')
    else:  # one panel per metric, side by side, models overlaid
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(3.4 * len(metrics), 2.9), squeeze=False)
        for c, metric in enumerate(metrics):
            plot_metric(axes[0, c], stats_by_model, metric, colors, reference)
    if not separate and len(names) > 1:
        axes[0, 0].legend(fontsize=7, loc='best')
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)


def plot_layer_means(stats_by_model: Dict[str, Dict[str, np.ndarray]],
                     path: str,
                     metrics: Sequence[str] = ('distance', 'nmi'),
                     reference: Optional[Dict[str, float]] = None,
                     dpi: int = 90) -> str:
    """Head-averaged statistic per layer, one line per model (compact view),
    with the dashed ``reference`` (e.g. :func:`uniform_reference`)."""
    return _plot_layers({
        k: [v]
        for k, v in stats_by_model.items()
    },
                        path,
                        metrics,
                        reference,
                        dpi,
                        repeats=False)


def plot_layer_bands(runs_by_model: Dict[str, Sequence[Dict[str, np.ndarray]]],
                     path: str,
                     metrics: Sequence[str] = ('distance', 'nmi'),
                     reference: Optional[Dict[str, float]] = None,
                     dpi: int = 90) -> str:
    """Head-averaged statistic per layer, mean over repeats (seeds) with a.

    +-1 std band, one line per model, and the dashed ``reference``.
    """
    return _plot_layers(
        runs_by_model, path, metrics, reference, dpi, repeats=True)


def _plot_layers(runs_by_model: Dict[str,
                                     Sequence[Dict[str,
                                                   np.ndarray]]], path: str,
                 metrics: Sequence[str], reference: Optional[Dict[str, float]],
                 dpi: int, repeats: bool) -> str:
    """One panel per metric: the head mean per layer of every model, mean over
    its runs; with ``repeats``, a +-1 std band and the run count in the
    legend."""
    plt = _plt()
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(3.6 * len(metrics) + 1.8, 2.9),
        squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, runs in runs_by_model.items():
            per_run = np.stack([r[metric].mean(1) for r in runs])  # (S, L)
            x = np.arange(1, per_run.shape[1] + 1)
            mean = per_run.mean(0)
            label = f'{name} (n={len(runs)})' if repeats else name
            line, = ax.plot(x, mean, 'o-', ms=3, label=label)
            if repeats and len(runs) > 1:
                std = per_run.std(0, ddof=1)
                ax.fill_between(
                    x,
                    mean - std,
                    mean + std,
                    alpha=0.2,
                    color=line.get_color())
        if reference is not None and metric in reference:
            ax.axhline(
                reference[metric],
                ls='--',
                lw=0.8,
                color='grey',
                label='uniform attention')
        ax.set_xlabel('layer')
        ax.set_xticks(x)
        ax.set_ylabel(METRIC_LABELS[metric] + ', head mean')
        ax.grid(alpha=0.3)
    axes[0, -1].legend(
        fontsize=7, loc='center left', bbox_to_anchor=(1.02, 0.5))
    return _save(fig, path, dpi)


def plot_accuracy_bars(values: Dict[str, Dict[str, Sequence[float]]],
                       path: str,
                       chance: Optional[float] = None,
                       dpi: int = 90) -> str:
    """Grouped bars: ``values[model][measure]`` is a list of repeats; bar =
    mean, error bar = std, dots = the repeats."""
    plt = _plt()
    models = list(values)
    measures = list(dict.fromkeys(m for v in values.values() for m in v))
    width = 0.8 / max(len(measures), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(models) + 2.5, 3.2))
    for j, measure in enumerate(measures):
        for i, model in enumerate(models):
            runs = np.asarray(values[model].get(measure, []), dtype=float)
            if runs.size == 0:
                continue
            x = i + (j - (len(measures) - 1) / 2) * width
            ax.bar(
                x,
                runs.mean(),
                width,
                yerr=runs.std(ddof=1) if runs.size > 1 else 0,
                capsize=3,
                color=f'C{j}',
                label=measure if i == 0 else None)
            ax.plot(np.full(runs.size, x), runs, 'k.', ms=3)
    if chance is not None:
        ax.axhline(chance, ls='--', lw=0.8, color='grey', label='chance')
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=20, ha='right', fontsize=8)
    ax.set_ylabel('top-1 (%)')
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path, dpi)
