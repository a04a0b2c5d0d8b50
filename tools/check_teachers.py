"""Check a HybridDistill config's frozen teachers before a run.

    python tools/check_teachers.py configs/hybrid_vitb.py
    python tools/check_teachers.py configs/hybrid_vitb.py --no-load --time 10

For each teacher it prints the file it loads (a URL is downloaded once into
torch hub's cache) with the loader's report (layout, ignored tensors such as
CLIP's text tower, how the final norm was matched), how the student's images
are resized for it, and which blocks a training step runs and what it returns.

``--time N`` times the teachers as a training step asks them (each stops at
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

TEACHERS = ('teacher_feat', 'teacher_rel')


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
        for name in TEACHERS:
            cfg.model[name].checkpoint = None
    model = MODELS.build(copy.deepcopy(cfg.model))
    # created last, so the teachers' loader reports here (the student's own
    # initialisation, irrelevant to the teachers, is not run)
    MMLogger.get_instance('check_teachers', log_level='INFO')
    for name in TEACHERS:
        getattr(model, name).init_weights()
    return model.to(args.device).eval()


def describe(model) -> List[str]:
    """What each teacher is asked for at every step, in words."""
    from mmhybrid.models.backbones.hybrid_vit import num_blocks_to_run
    from mmhybrid.models.teachers.frozen_teacher import is_downsize
    lines = []
    student_size = tuple(model.backbone.img_size)
    for name, asked in model.teacher_requests().items():
        teacher = getattr(model, name)
        vit = teacher.backbone
        size = tuple(vit.img_size)
        final_tokens = asked.get('final_tokens', True)
        depth = num_blocks_to_run(vit.num_layers, asked.get('out_layers', ()),
                                  asked.get('cls_attn', False), final_tokens)
        norm = vit.final_norm and final_tokens
        returns = []
        if final_tokens:
            returns.append('last tokens' +
                           (' after the final norm' if vit.final_norm else ''))
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
        lines.append(f'{name}: {teacher.checkpoint or "(random weights)"}\n'
                     f'  input {student_size} -> {size} (resize: {resize})\n'
                     f'  per step: blocks 0..{depth - 1} of {vit.num_layers}'
                     f"{' + final norm' if norm else ', no final norm'}; "
                     f"returns {', '.join(returns)}")
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
        teacher = getattr(model, name)
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
    for name in TEACHERS:
        ratio[name] = paired_ratio(times[f'{name} asked'],
                                   times[f'{name} full'])
        print(f"| {name} | {ms[f'{name} asked']:.1f} | "
              f"{ms[f'{name} full']:.1f} | {ratio[name]:.3f} |")
    rounds = list(
        zip(*(times[f'{n} {m}'] for n in TEACHERS for m in ('asked', 'full'))))
    both = statistics.median((r[0] + r[2]) / (r[1] + r[3]) for r in rounds)
    asked = sum(ms[f'{n} asked'] for n in TEACHERS)
    full = sum(ms[f'{n} full'] for n in TEACHERS)
    # ms: sums of the per-teacher medians; ratios: medians of per-round ratios
    print(f'TEACHER_TIME asked_ms={asked:.1f} full_ms={full:.1f} '
          f'asked_over_full={both:.3f} '
          f"rel_asked_over_full={ratio['teacher_rel']:.3f}")


if __name__ == '__main__':
    main()
