"""Speed and memory of a Hybrid Distillation training step, against its parts,
a plainly written reference step and mmpretrain's MILAN step.

Everything is measured in ONE process, interleaved (A B C A B C ...), so drift
of the machine cancels; medians over the timed iterations after warm-up.

    python tools/speed/pretrain_speed.py configs/hybrid_vitb.py \\
        --preset cpu-small
    python tools/speed/pretrain_speed.py configs/hybrid_vitb.py \\
        --preset gpu-vitb

The two-teacher form only (``model.teacher_feat`` + ``model.teacher_rel``,
the plain reference step's); a ``model.teachers`` config is refused with one
line. Teacher files are never read: teachers get random weights (speed does not
depend on their values). Compilation follows the config: a teacher's own
``compile``, and mmengine's top-level ``compile`` (which compiles
``train_step``; here the model's ``loss`` and, for the student part,
``forward_distill``), e.g. ``--cfg-options compile=True
model.teacher_feat.compile=True``; compile time falls in the warm-up. The last
printed line is machine-readable:

    RATIOS step_over_parts=X keep05_over_keep10=Y naive_over_step=Z \\
        milan_over_step=W   (one line)
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import tempfile
import threading
import time

import torch

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

PRESETS = {
    # ViT-S/16 student and ViT-S/16 teachers at 224, batch 8, fp32, CPU
    'cpu-small':
    dict(
        device='cpu',
        batch_size=8,
        iters=10,
        warmup=2,
        arch='deit-small',
        amp=False),
    # the flagship: ViT-B/16 with CLIP-B/16 + MAE-B/16, batch 256, bf16,
    # one GPU
    'gpu-vitb':
    dict(
        device='cuda', batch_size=256, iters=10, warmup=3, arch=None,
        amp=True),
}


def parse_args():
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Hybrid Distillation step speed')
    p.add_argument('config')
    p.add_argument('--preset', choices=sorted(PRESETS))
    p.add_argument('--batch-size', type=int)
    p.add_argument('--iters', type=int, help='timed iterations (>= 10)')
    p.add_argument('--warmup', type=int)
    p.add_argument('--keep-ratios', default='1.0,0.5')
    p.add_argument('--device', choices=['cpu', 'cuda'])
    p.add_argument('--no-milan', action='store_true')
    p.add_argument('--no-naive', action='store_true')
    p.add_argument(
        '--profile',
        action='store_true',
        help='print the top operators of one step (keep = last '
        'ratio) and exit')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args()
    preset = PRESETS.get(
        args.preset,
        dict(
            device='cuda' if torch.cuda.is_available() else 'cpu',
            batch_size=8,
            iters=10,
            warmup=2,
            arch=None,
            amp=False))
    for k in ('device', 'batch_size', 'iters', 'warmup'):
        if getattr(args, k) is None:
            setattr(args, k, preset[k])
    args.arch = preset['arch']
    args.amp = preset['amp'] and args.device == 'cuda'
    args.keep_ratios = [float(v) for v in args.keep_ratios.split(',')]
    return args


# ------------------------------------------------------------------ build
def build_model_cfg(args):
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    m = cfg.model
    assert m.type == 'HybridDistill', \
        f'{args.config} is not a HybridDistill config'
    if m.get('teachers') is not None:
        sys.exit(
            f'pretrain_speed: {args.config} sets model.teachers '
            f'({", ".join(m.teachers)}); this tool covers the two-teacher '
            'form (model.teacher_feat + model.teacher_rel), as its plain '
            'reference step (mmhybrid/testing/reference.py) does')
    m.teacher_feat.checkpoint = None
    m.teacher_rel.checkpoint = None
    if args.arch:
        for part in (m.backbone, m.teacher_feat.backbone,
                     m.teacher_rel.backbone):
            part.arch = args.arch
        from mmpretrain.models import VisionTransformer
        width = VisionTransformer.arch_zoo[args.arch]['embed_dims']
        m.neck.in_channels = width
        m.neck.out_channels = width
    return cfg


def build(cfg, device):
    from mmpretrain.registry import MODELS
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    return model.to(device).train()


def build_optim(model, cfg, amp):
    """The config's own optimizer wrapper on GPU; without AMP (the CPU) the
    same optimizer in a plain OptimWrapper.

    Fused AdamW runs on the CPU too since torch 2.4 (about 5x faster than the
    per-tensor loop for a ViT-S), so the config's ``fused=True`` is kept
    wherever torch supports it.
    """
    from mmengine.optim import build_optim_wrapper
    from mmengine.utils import digit_version
    wrapper = copy.deepcopy(cfg.optim_wrapper)
    if not amp:
        wrapper = dict(type='OptimWrapper', optimizer=wrapper['optimizer'])
        if digit_version(torch.__version__) < digit_version('2.4.0'):
            wrapper['optimizer'].pop('fused', None)
    return build_optim_wrapper(model, wrapper)


def build_milan(model, batch_images, device, amp, tmp):
    """mmpretrain's MILAN with a CLIP teacher of the same width/depth as
    ours."""
    from mmpretrain.models.utils.clip_generator_helper import CLIP
    from mmpretrain.registry import MODELS

    from mmhybrid.utils.constants import IMAGENET_MEAN, IMAGENET_STD
    tc = model.teacher_feat.backbone
    s = model.backbone
    clip = CLIP(
        embed_dim=512,
        image_resolution=tc.img_size[0],
        vision_layers=tc.num_layers,
        vision_width=tc.embed_dims,
        vision_patch_size=tc.patch_embed.projection.kernel_size[0],
        context_length=77,
        vocab_size=49408,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=1)
    path = osp.join(tmp, 'clip.pth')
    torch.save(clip.state_dict(), path)
    arch = dict(
        embed_dims=s.embed_dims,
        num_layers=s.num_layers,
        num_heads=s.num_heads,
        feedforward_channels=s.layers[0].ffn.feedforward_channels)
    patch = s.patch_embed.projection.kernel_size[0]
    cfg = dict(
        type='MILAN',
        backbone=dict(
            type='MILANViT',
            arch=arch,
            img_size=s.img_size[0],
            patch_size=patch,
            mask_ratio=0.75),
        neck=dict(
            type='MILANPretrainDecoder',
            num_patches=s.num_patches,
            patch_size=patch,
            embed_dim=s.embed_dims,
            predict_feature_dim=512),
        head=dict(
            type='MIMHead',
            loss=dict(
                type='CosineSimilarityLoss',
                shift_factor=2.0,
                scale_factor=2.0)),
        target_generator=dict(type='CLIPGenerator', tokenizer_path=path),
        data_preprocessor=dict(
            type='SelfSupDataPreprocessor',
            mean=list(IMAGENET_MEAN),
            std=list(IMAGENET_STD),
            to_rgb=True))
    milan = MODELS.build(cfg)
    milan.init_weights()
    return milan.to(device).train()


# -------------------------------------------------------------- measuring
class PeakRSS:
    """Peak resident memory of this process while a block runs (CPU)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss():
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __enter__(self):
        self.peak = self.rss()
        self._stop.clear()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def timed(fn, device):
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    return dt, mem.peak


class Bench:
    """The model, its optimizer and one input batch on a device, and the
    callables :func:`measure` times (one training step each)."""

    def __init__(self, args):
        torch.manual_seed(0)
        self.dev, self.amp, self.B = args.device, args.amp, args.batch_size
        self.cfg = build_model_cfg(args)
        self.model = build(self.cfg, self.dev)
        self.optim = build_optim(self.model, self.cfg, args.amp)
        self.size = self.model.backbone.img_size
        self.x = torch.randn(self.B, 3, *self.size, device=self.dev)
        self.loss_fn = self.model.loss
        self.student_fn = self.model.backbone.forward_distill
        self.compile_cfg = self.cfg.get('compile')
        if self.compile_cfg:
            kwargs = ({}
                      if self.compile_cfg is True else dict(self.compile_cfg))
            self.loss_fn = torch.compile(self.loss_fn, **kwargs)
            self.student_fn = torch.compile(self.student_fn, **kwargs)

    def amp_ctx(self):
        if self.amp:
            return torch.autocast('cuda', dtype=torch.bfloat16)
        return torch.autocast('cpu', enabled=False)

    def step(self, keep):
        """One HybridDistill training step at ``keep`` (kept token share)."""
        model, optim = self.model, self.optim

        def run():
            model.mask_ratio = 1.0 - keep
            with optim.optim_context(model):
                losses = self.loss_fn(self.x)
            total, _ = model.parse_losses(losses)
            optim.update_params(total)

        return run

    def teacher(self, name):
        """A teacher's forward, asked exactly what a training step asks it (the
        relation teacher stops at its deepest paired block)."""
        kwargs = self.model.teacher_requests()[name]
        module = getattr(self.model, name)

        def run():
            module(self.x, **kwargs)

        return run

    def student(self, keep):
        """The student's forward + backward alone at ``keep``."""
        from mmhybrid.models.utils import num_kept_tokens, select_kept_tokens
        model, B, dev = self.model, self.B, self.dev
        N = model.backbone.num_patches
        s_layers = [s for s, _ in model.relation_pairs]
        parts = model.loss_rel.parts
        K = num_kept_tokens(N, 1.0 - keep)
        idx = None if K == N else select_kept_tokens(
            torch.rand(B, N, device=dev), K)

        def run():
            with self.amp_ctx():
                out = self.student_fn(self.x, idx, s_layers, parts)
                loss = out.tokens.float().mean() + sum(
                    p.float().mean() for r in out.relations.values()
                    for p in r.values())
            loss.backward()
            self.optim.zero_grad()

        return run

    def naive(self):
        """The plainly written reference step: explicit maps in every block,
        fp32 teachers, no masking, full maps."""
        from mmhybrid.testing.reference import plain_losses
        model, optim = self.model, self.optim
        # fp32 copies: the real teachers keep bf16 weights on CUDA once they
        # ran
        teachers = (copy.deepcopy(model.teacher_feat).float(),
                    copy.deepcopy(model.teacher_rel).float())

        def run():
            with self.amp_ctx():
                loss_feat, loss_rel = plain_losses(
                    model, self.x, teachers=teachers)
            (loss_feat + loss_rel).backward()
            optim.step()
            optim.zero_grad()

        return run

    def milan(self):
        """mmpretrain's MILAN step on the same input."""
        milan = build_milan(self.model, self.x, self.dev, self.amp,
                            tempfile.mkdtemp())
        optim = build_optim(milan, self.cfg, self.amp)

        def run():
            with optim.optim_context(milan):
                losses = milan.loss(self.x, None)
            total, _ = milan.parse_losses(losses)
            optim.update_params(total)

        return run


def bench_functions(bench, args):
    """Everything timed, by its row name."""
    fns = {}
    for keep in args.keep_ratios:
        fns[f'step keep={keep:g}'] = bench.step(keep)
        fns[f'student fwd+bwd keep={keep:g}'] = bench.student(keep)
    fns['teacher_feat fwd'] = bench.teacher('teacher_feat')
    fns['teacher_rel fwd'] = bench.teacher('teacher_rel')
    if not args.no_naive:
        fns['naive step (keep=1)'] = bench.naive()
    if not args.no_milan:
        fns['mmpretrain MILAN step'] = bench.milan()
    return fns


def settle_compiled_graphs(bench, keep_ratios):
    """Training sees a new kept-token count every few iterations: after the
    unmasked graph and a first masked one, dynamo recompiles with a dynamic
    count, and that graph serves the rest of training.

    One step at an extra ratio before the warm-up makes the timed steps use it
    too, not graphs specialised to the measured counts.
    """
    extra = next(k for k in (0.9, 0.8, 0.7, 0.6) if k not in keep_ratios)
    for keep in (1.0, extra):
        bench.step(keep)()
        bench.student(keep)()


def print_profile(bench, keep):
    """The top operators of one step at ``keep``."""
    from torch.profiler import ProfilerActivity, profile
    cuda = bench.dev == 'cuda'
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn = bench.step(keep)
    fn()
    with profile(activities=acts) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    key = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
    print(f'[bench] profile of one step at keep={keep:g}')
    print(prof.key_averages().table(sort_by=key, row_limit=20))


def measure(fns, device, warmup, iters):
    """Interleaved rounds (every callable once per round, so drift of the
    machine cancels): medians over the timed rounds and peak memory."""
    times = {k: [] for k in fns}
    mems = {k: 0 for k in fns}
    for it in range(warmup + iters):
        for name, fn in fns.items():
            dt, mem = timed(fn, device)
            if it >= warmup:
                times[name].append(dt)
            mems[name] = max(mems[name], mem)
        print(f'[bench] round {it + 1}/{warmup + iters}', flush=True)
    return {k: statistics.median(v) for k, v in times.items()}, mems


def report(med, mems, args):
    """The table, the ratios and the machine-readable RATIOS line."""
    B = args.batch_size
    mem_label = ('peak GPU mem (GiB)'
                 if args.device == 'cuda' else 'peak RSS (GiB)')
    print(f'\n| measured | ms/step | images/s | {mem_label} |')
    print('|---|---|---|---|')
    for k in med:
        print(f'| {k} | {med[k] * 1e3:.1f} | {B / med[k]:.1f} | '
              f'{mems[k] / 2**30:.2f} |')

    def parts_sum(keep):
        return (med['teacher_feat fwd'] + med['teacher_rel fwd'] +
                med[f'student fwd+bwd keep={keep:g}'])

    keep_lo, keep_hi = min(args.keep_ratios), max(args.keep_ratios)
    step_lo = med[f'step keep={keep_lo:g}']

    def over_step(row):
        return med[row] / step_lo if row in med else float('nan')

    ratios = dict(
        step_over_parts=step_lo / parts_sum(keep_lo),
        keep05_over_keep10=step_lo / med[f'step keep={keep_hi:g}'],
        naive_over_step=over_step('naive step (keep=1)'),
        milan_over_step=over_step('mmpretrain MILAN step'))
    print()
    for keep in args.keep_ratios:
        print(f'step / sum of parts at keep={keep:g}: '
              f'{med[f"step keep={keep:g}"] / parts_sum(keep):.3f}')
    print(f'step(keep={keep_lo:g}) / step(keep={keep_hi:g}): '
          f'{ratios["keep05_over_keep10"]:.3f}')
    print(f'naive / step(keep={keep_lo:g}): {ratios["naive_over_step"]:.3f}')
    print(f'MILAN / step(keep={keep_lo:g}): {ratios["milan_over_step"]:.3f}')
    print(
        'RATIOS ' + ' '.join(f'{k}={v:.3f}' for k, v in ratios.items()),
        flush=True)


def main():
    args = parse_args()
    if args.iters < 10:
        sys.exit(
            '--iters must be >= 10 (medians over at least 10 timed steps)')
    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda asked for, but torch sees no GPU')
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')
    import mmhybrid  # noqa: F401
    bench = Bench(args)
    fns = bench_functions(bench, args)
    if bench.compile_cfg:
        settle_compiled_graphs(bench, args.keep_ratios)
    if args.profile:
        print_profile(bench, args.keep_ratios[-1])
        return
    model = bench.model
    rel_compile = bool(model.loss_rel.compile_cfg) and bench.dev == 'cuda'
    print(
        f'[bench] {args.config} preset={args.preset} device={bench.dev} '
        f'batch={bench.B} img={bench.size} amp_bf16={args.amp} '
        f'warmup={args.warmup} iters={args.iters} '
        f'threads={torch.get_num_threads()} '
        f'compile={bench.compile_cfg or False} '
        f'teacher_compile={model.teacher_feat.compile_cfg},'
        f'{model.teacher_rel.compile_cfg} '
        f'rel_compile={rel_compile}',
        flush=True)
    report(*measure(fns, bench.dev, args.warmup, args.iters), args)


if __name__ == '__main__':
    main()
