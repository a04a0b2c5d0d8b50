"""Check the optimised step against the plain reference on a device (fp32).

The optimised path (fused attention, kept-token encoding, relations from q/k
gathered at kept tokens, teachers under inference_mode; with ``--compile`` all
of it compiled) must give the same losses as
``mmhybrid.testing.reference.plain_losses``.

    python tools/speed/check_equivalence.py --device cuda [--compile]
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--arch', default='deit-small')
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--tol', type=float, default=1e-5)
    p.add_argument(
        '--compile',
        action='store_true',
        help='check the compiled path: both teachers (compile=True), '
        'the loss as mmengine compile=True runs it, and the '
        'relation distance (compiled on CUDA only)')
    args = p.parse_args()
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')
    from mmpretrain.models import VisionTransformer
    from mmpretrain.registry import MODELS

    import mmhybrid  # noqa: F401
    from mmhybrid.models.utils import num_kept_tokens, select_kept_tokens
    from mmhybrid.testing import tiny_hybrid_cfg
    from mmhybrid.testing.reference import plain_losses

    if args.device == 'cuda':
        # fp32 matmuls for the comparison, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    arch = dict(VisionTransformer.arch_zoo[args.arch])
    torch.manual_seed(0)
    cfg = tiny_hybrid_cfg(
        student_arch=arch,
        feat_arch=arch,
        rel_arch=arch,
        img_size=224,
        patch_size=16,
        token_selection='topk')
    cfg['loss_rel'] = dict(type='RelationDistillLoss', compile=args.compile)
    for t in ('teacher_feat', 'teacher_rel'):
        cfg[t]['compile'] = args.compile
    model = MODELS.build(cfg)
    model.init_weights()
    model.to(args.device).eval()
    for t in (model.teacher_feat, model.teacher_rel):
        t.autocast_dtype = None  # fp32 for the comparison
    x = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    # mmengine's compile=True compiles train_step, i.e. this loss inside it
    loss_fn = torch.compile(model.loss) if args.compile else model.loss
    worst = 0.0
    for ratio in (0.0, 0.25, 0.5, 0.75):
        model.mask_ratio = ratio
        losses = loss_fn(x)
        keep = None
        if ratio > 0:
            # the teacher as the step calls it (compiled with --compile), so
            # that both sides rank tokens by the same numbers
            imp = model.teacher_feat(x, cls_attn=True).cls_attn
            keep = select_kept_tokens(
                imp, num_kept_tokens(model.backbone.num_patches, ratio),
                'topk')
        with torch.no_grad():
            ref_feat, ref_rel = plain_losses(model, x, keep)
        for name, a, b in (('loss_feat', losses['loss_feat'], ref_feat),
                           ('loss_rel', losses['loss_rel'], ref_rel)):
            rel = abs(a.item() - b.item()) / max(abs(b.item()), 1e-12)
            worst = max(worst, rel)
            print(f'mask_ratio={ratio:.2f} {name}: optimised={a.item():.8f} '
                  f'plain={b.item():.8f} rel.diff={rel:.2e}')
    ok = worst <= args.tol
    print(f'EQUIVALENCE device={args.device} compile={args.compile} '
          f'worst_rel_diff={worst:.2e} '
          f'tol={args.tol:g} {"OK" if ok else "FAIL"}')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
