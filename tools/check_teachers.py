"""Check a HybridDistill config's frozen teachers before a run.

    python tools/check_teachers.py configs/hybrid_vitb.py
    python tools/check_teachers.py configs/hybrid_vitb.py --no-load --time 10

For each teacher (the two of the paper's form, or every entry of
``model.teachers``) it prints the file it loads (a URL is downloaded once
into torch hub's cache) with the loader's report (layout, ignored tensors such
as CLIP's text tower, how the final norm was matched), how the student's
images are resized for it, which blocks a training step runs and what it
returns, what it is (a FrozenTeacher's file layout, a ZooTeacher's model and
family), whether its token grid is the student's, and what the student learns
from it (features through which head, relations at which block pairs, token
ranking) under which loss name.

``--time N`` times each teacher as a training step asks it (each stops at
the deepest block it feeds) against their full encoding (every block and the
final norm), interleaved, medians over N rounds after a warm-up, in one
process. ``--no-load`` gives the teachers random weights instead of reading
their files (speed does not depend on the values). The last line is then
machine-readable:

    TEACHER_TIME asked_ms=X full_ms=Y asked_over_full=Z rel_asked_over_full=W
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description="Check a HybridDistill config's frozen teachers")
    p.add_argument('config')
    p.add_argument(
        '--no-load',
        action='store_true',
        help='random teacher weights: do not read the files')
    p.add_argument(
        '--time',
        type=int,
        default=0,
        metavar='ITERS',
        help='time the teachers as asked vs in full, ITERS rounds')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def build(args):
    """The config's HybridDistill with its teachers loaded (or random)."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.model.get('type') != 'HybridDistill':
        sys.exit(f'{args.config}: model.type is {cfg.model.get("type")!r}, '
                 'expected HybridDistill')
    if args.no_load:
        from mmhybrid.analysis.vit_loading import drop_teacher_checkpoints
        drop_teacher_checkpoints(cfg.model)
    model = MODELS.build(copy.deepcopy(cfg.model))
    # created last, so the teachers' loader reports here (the student's own
    # initialisation, irrelevant to the teachers, is not run)
    MMLogger.get_instance('check_teachers', log_level='INFO')
    for teacher in model.teachers.values():
        teacher.init_weights()
    return model.to(args.device).eval()


def _size(teacher) -> tuple:
    """The input size a teacher resizes the student's images to."""
    from mmhybrid.utils.sizes import as_pair
    if hasattr(teacher, 'grid'):  # ZooTeacher
        return as_pair(teacher.img_size)
    return tuple(teacher.backbone.img_size)


def _grid(teacher) -> tuple:
    if hasattr(teacher, 'grid'):
        return tuple(teacher.grid)
    return tuple(teacher.backbone.patch_resolution)


def _kind(teacher) -> str:
    """What the teacher is: its class, and its family or file layout."""
    if hasattr(teacher, 'family'):
        model = teacher.model
        if not isinstance(model, str):  # a backbone config: its type
            model = model.get('type', '?')
        return f'ZooTeacher {model!r}, {teacher.family.name}'
    return (f'FrozenTeacher HybridViT, {teacher.checkpoint_format} file '
            'layout')


def _final_norm(teacher) -> bool:
    """Whether the teacher's feature target passes its final norm."""
    if hasattr(teacher, 'feature_layer'):
        return (teacher.feature_layer == teacher.num_layers - 1
                and getattr(teacher.backbone, 'final_norm', False))
    return bool(teacher.backbone.final_norm)


def targets(model, name: str) -> List[str]:
    """What the student learns from teacher ``name``, in words."""
    out = []
    for f in model.feature_targets:
        if f.teacher == name:
            neck = model.feature_neck(name)
            out.append(f'features ({f.tokens} tokens) through '
                       f'{type(neck).__name__} -> {f.loss}')
    for r in model.relation_targets:
        if r.teacher == name:
            pairs = ', '.join(f'{s}<-{b}' for s, b in r.pairs)
            out.append(f'relations, student<-teacher blocks {pairs} -> '
                       f'{r.loss}')
    if model.importance_teacher == name:
        out.append('token ranking ([CLS] attention)')
    return out


def describe(model) -> List[str]:
    """What each teacher is asked for at every step, in words."""
    from mmhybrid.models.backbones.hybrid_vit import num_blocks_to_run
    from mmhybrid.models.teachers.base_teacher import is_downsize
    lines = []
    student_size = tuple(model.backbone.img_size)
    student_grid = tuple(model.backbone.patch_resolution)
    for name, asked in model.teacher_requests().items():
        teacher = model.teachers[name]
        size, grid = _size(teacher), _grid(teacher)
        final_tokens = asked.get('final_tokens', True)
        depth = num_blocks_to_run(teacher.num_layers,
                                  asked.get('out_layers', ()),
                                  asked.get('cls_attn', False), final_tokens)
        norm = _final_norm(teacher) and final_tokens
        returns = []
        if final_tokens:
            returns.append('last tokens' +
                           (' after the final norm' if norm else ''))
        if asked.get('out_layers'):
            returns.append(f"{'/'.join(asked['parts'])} of blocks "
                           f"{sorted(asked['out_layers'])}")
        if asked.get('cls_attn'):
            returns.append('last-block [CLS] attention')
        if size == student_size:
            resize = 'none'
        else:
            resize = 'bicubic' + (', antialiased' if is_downsize(
                student_size, size) else '')
        if name in model.resampled:
            aligned = (f'{grid} tokens resampled to the student\'s '
                       f'{student_grid} (grid=\'interpolate\')')
        else:
            aligned = f'{grid} tokens, the student\'s {student_grid}: aligned'
        lines.append(
            f'{name}: {teacher.checkpoint or "(random weights)"}\n'
            f'  input {student_size} -> {size} (resize: {resize})\n'
            f'  per step: blocks 0..{depth - 1} of {teacher.num_layers}'
            f"{' + final norm' if norm else ', no final norm'}; "
            f"returns {', '.join(returns)}\n"
            f'  {_kind(teacher)}; grid {aligned}\n'
            f"  teaches: {'; '.join(targets(model, name))}")
    return lines


def time_teachers(model, x: torch.Tensor, iters: int,
                  warmup: int) -> Dict[str, List[float]]:
    """Seconds per call of each teacher, as asked and in full, per round.

    The calls are interleaved (each round calls every variant once), so that
    drift of the machine hits all of them alike.
    """
    asked = model.teacher_requests()
    runs: Dict[str, Callable[[], object]] = {}
    for name, kwargs in asked.items():
        teacher = model.teachers[name]
        full = dict(kwargs, final_tokens=True)  # every block + the final norm
        runs[f'{name} asked'] = lambda t=teacher, k=kwargs: t(x, **k)
        runs[f'{name} full'] = lambda t=teacher, k=full: t(x, **k)
    times = {k: [] for k in runs}
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for it in range(warmup + iters):
        for k, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if it >= warmup:
                times[k].append(time.perf_counter() - t0)
    return times


def paired_ratio(num: List[float], den: List[float]) -> float:
    """Median over rounds of ``num / den``: calls of one round ran back to
    back, so their ratio is less affected by load on a shared machine than the
    ratio of the two medians."""
    return statistics.median(a / b for a, b in zip(num, den))


def main(argv=None):
    args = parse_args(argv)
    import mmhybrid  # noqa: F401
    model = build(args)
    print('\n'.join(describe(model)), flush=True)
    if args.time <= 0:
        return
    x = torch.randn(
        args.batch_size, 3, *model.backbone.img_size, device=args.device)
    times = time_teachers(model, x, args.time, args.warmup)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f'\n[time] batch={args.batch_size} device={args.device} '
          f'threads={torch.get_num_threads()} rounds={args.time} '
          f'warmup={args.warmup}')
    print('| teacher | as asked (ms) | full (ms) | asked / full (paired) |')
    print('|---|---|---|---|')
    ratio = {}
    names = list(model.teachers)
    for name in names:
        ratio[name] = paired_ratio(times[f'{name} asked'],
                                   times[f'{name} full'])
        print(f"| {name} | {ms[f'{name} asked']:.1f} | "
              f"{ms[f'{name} full']:.1f} | {ratio[name]:.3f} |")
    rounds = [{
        k: v[i]
        for k, v in times.items()
    } for i in range(len(times[f'{names[0]} asked']))]
    every = statistics.median(
        sum(r[f'{n} asked'] for n in names) / sum(r[f'{n} full']
                                                  for n in names)
        for r in rounds)
    asked = sum(ms[f'{n} asked'] for n in names)
    full = sum(ms[f'{n} full'] for n in names)
    rel = model.relation_targets[0].teacher if model.relation_targets \
        else names[-1]
    # ms: sums of the per-teacher medians; ratios: medians of per-round ratios
    print(f'TEACHER_TIME asked_ms={asked:.1f} full_ms={full:.1f} '
          f'asked_over_full={every:.3f} '
          f'rel_asked_over_full={ratio[rel]:.3f}')


if __name__ == '__main__':
    main()
