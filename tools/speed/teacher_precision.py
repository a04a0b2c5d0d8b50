"""How far a teacher run in bf16 / fp16 is from the same teacher in fp32.

The teachers of a config run under autocast (``autocast_dtype``, bf16 by
default). This tool builds the config's model, runs both teachers once in
fp32 and once per low-precision mode on the same images, and prints, per
mode, what the student's losses would see differently:

* ``feat rel.err``: relative error of the feature target (the feature
  teacher's last tokens, whitened as ``FeatureDistillLoss`` whitens them);
* ``rel-logit err``: the relation teacher's attention logits ``q k^T /
  sqrt(d)`` over every relation pair, mean and max absolute error;
* ``kept overlap``: the share of the tokens kept at the final mask ratio
  (top-k of the [CLS] attention that ranks them) that fp32 keeps too.

Modes: ``bf16`` / ``fp16`` with the residual stream fp32 (``fp32_residual``,
the default) and ``bf16-stream`` / ``fp16-stream`` with the whole stream in
the low dtype (the behaviour until 0.1.0).

On a GPU the teachers run exactly as in training (``FrozenTeacher.forward``
with CUDA autocast); on the CPU the same computation runs under CPU autocast
(the same rounding of the same tensors; a measurement of the method, not of
the GPU kernels). Teacher weights are random unless the config's checkpoints
are kept (``--load-checkpoints``, which downloads them): random weights have
smaller activations than trained ones, so their drift is a lower bound.

Usage::

    python tools/speed/teacher_precision.py configs/hybrid_vitb.py \
        [--batch 8] [--device cuda] [--modes bf16 bf16-stream fp16 ...]
"""
import argparse
import copy
import json
import os.path as osp
import sys
from typing import Dict, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODES = {
    'bf16': (torch.bfloat16, True),
    'bf16-stream': (torch.bfloat16, False),
    'fp16': (torch.float16, True),
    'fp16-stream': (torch.float16, False),
}


def build_model(config: str, load_checkpoints: bool, device: str):
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS

    import mmhybrid  # noqa: F401  (registers the components)
    cfg = Config.fromfile(config)
    model_cfg = copy.deepcopy(cfg.model)
    if not load_checkpoints:
        for name in ('teacher_feat', 'teacher_rel'):
            model_cfg[name]['checkpoint'] = None
    model_cfg.pop('data_preprocessor', None)
    # the current logger, quiet: the initialisation report is not the point
    MMLogger.get_instance('teacher_precision', log_level='ERROR')
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.to(device).eval()


def run_teacher(teacher,
                x: torch.Tensor,
                request: dict,
                dtype: Optional[torch.dtype] = None,
                fp32_residual: bool = True):
    """One teacher's outputs in fp32 (``dtype`` None) or under autocast."""
    from mmhybrid.models.teachers.frozen_teacher import cast_frozen_weights
    t = copy.deepcopy(teacher)
    t.fp32_residual = fp32_residual
    if x.is_cuda:
        t.autocast_dtype = None if dtype is None else str(dtype).split('.')[1]
        return t(x, **request)
    # CPU: the same autocast semantics on the CPU
    if dtype is not None:
        cast_frozen_weights(t.backbone, dtype, fp32_residual)
        if fp32_residual:
            # CUDA autocast runs LayerNorm in fp32 (its weights up-cast);
            # CPU autocast leaves it to the input's dtype, so the stored
            # (rounded) weights are up-cast here
            for m in t.backbone.modules():
                if isinstance(m, torch.nn.LayerNorm):
                    m.float()
    args = (x, tuple(request.get('out_layers',
                                 ())), tuple(request.get('parts', ('q', 'k'))),
            request.get('cls_attn', False), request.get('final_tokens',
                                                        True), False)
    with torch.inference_mode(), torch.autocast(
            'cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return t._encode(*args)


def relation_logits(q: torch.Tensor, k: torch.Tensor,
                    num_heads: int) -> torch.Tensor:
    B, L, C = q.shape
    q = q.float().reshape(B, L, num_heads, -1).transpose(1, 2)
    k = k.float().reshape(B, L, num_heads, -1).transpose(1, 2)
    return q @ k.transpose(-2, -1) * q.shape[-1]**-0.5  # (B, H, L, L)


def compare(model, x: torch.Tensor, mode: str, ref: dict) -> Dict[str, float]:
    dtype, fp32_residual = MODES[mode]
    asked = model.teacher_requests()
    tc = run_teacher(model.teacher_feat, x, asked['teacher_feat'], dtype,
                     fp32_residual)
    tm = run_teacher(model.teacher_rel, x, asked['teacher_rel'], dtype,
                     fp32_residual)
    feat = F.layer_norm(tc.tokens.float(), tc.tokens.shape[-1:])
    feat_err = ((feat - ref['feat']).norm() / ref['feat'].norm()).item()
    errs = []
    for block, want in ref['logits'].items():
        r = tm.relations[block]
        got = relation_logits(r['q'], r['k'], model.teacher_rel.num_heads)
        errs.append((got - want).abs().flatten())
    err = torch.cat(errs)
    importance = tc.cls_attn if model.importance_source == 'feat' \
        else tm.cls_attn
    kept = importance.float().topk(ref['num_keep'], dim=1).indices
    overlap = [
        len(set(a.tolist()) & set(b.tolist())) / ref['num_keep']
        for a, b in zip(kept, ref['kept'])
    ]
    return {
        'feat_rel_err': feat_err,
        'logit_err_mean': err.mean().item(),
        'logit_err_max': err.max().item(),
        'kept_overlap': sum(overlap) / len(overlap),
        'finite':
        bool(torch.isfinite(feat).all() and torch.isfinite(err).all())
    }


def reference(model, x: torch.Tensor, final_ratio: float) -> dict:
    from mmhybrid.models.utils.token_masking import num_kept_tokens
    asked = model.teacher_requests()
    tc = run_teacher(model.teacher_feat, x, asked['teacher_feat'])
    tm = run_teacher(model.teacher_rel, x, asked['teacher_rel'])
    importance = tc.cls_attn if model.importance_source == 'feat' \
        else tm.cls_attn
    num_keep = num_kept_tokens(model.backbone.num_patches, final_ratio)
    return dict(
        feat=F.layer_norm(tc.tokens.float(), tc.tokens.shape[-1:]),
        logits={
            t:
            relation_logits(tm.relations[t]['q'], tm.relations[t]['k'],
                            model.teacher_rel.num_heads)
            for _, t in model.relation_pairs
        },
        num_keep=num_keep,
        kept=importance.float().topk(num_keep, dim=1).indices)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--modes', nargs='+', default=list(MODES), choices=list(MODES))
    parser.add_argument('--final-ratio', type=float, default=0.5)
    parser.add_argument('--load-checkpoints', action='store_true')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='also write the figures as JSON here')
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = build_model(args.config, args.load_checkpoints, args.device)
    size = model.backbone.img_size
    x = torch.randn(args.batch, 3, *size, device=args.device)
    ref = reference(model, x, args.final_ratio)
    print(f'{args.config}: {args.batch} images on {args.device}, teacher '
          f'weights {"from the config" if args.load_checkpoints else "random"}'
          f', kept tokens at mask ratio {args.final_ratio}: {ref["num_keep"]}')
    print(f'{"mode":<12} {"feat rel.err":>12} {"logit err mean":>15} '
          f'{"logit err max":>14} {"kept overlap":>13} finite')
    results = {}
    for mode in args.modes:
        r = results[mode] = compare(model, x, mode, ref)
        print(f'{mode:<12} {r["feat_rel_err"]:>12.2e} '
              f'{r["logit_err_mean"]:>15.2e} {r["logit_err_max"]:>14.2e} '
              f'{r["kept_overlap"]:>13.3f} {r["finite"]}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    config=args.config,
                    device=args.device,
                    batch=args.batch,
                    results=results),
                f,
                indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
