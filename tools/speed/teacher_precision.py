"""How far a teacher run in bf16 / fp16 is from the same teacher in fp32.

The teachers of a config run under autocast (``autocast_dtype``, bf16 by
default). This tool builds the config's model, runs every teacher once in
fp32 and once per low-precision mode on the same images (each asked what a
training step asks it), and prints, per mode, what the student's losses
would see differently:

* ``feat rel.err``: relative error of the feature targets (each feature
  teacher's last tokens, whitened as ``FeatureDistillLoss`` whitens them;
  the worst teacher's);
* ``rel-logit err``: the relation teachers' attention logits ``q k^T /
  sqrt(d)`` over every relation pair, mean and max absolute error;
* ``kept overlap``: the share of the tokens kept at the final mask ratio
  (top-k of the importance teacher's [CLS] attention, on its own grid)
  that fp32 keeps too.

Both forms of config: the two teachers (``teacher_feat``, ``teacher_rel``)
or ``model.teachers`` (``FrozenTeacher`` and ``ZooTeacher``, whose random
weights, without ``--load-checkpoints``, are not downloaded).

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
    from mmhybrid.analysis.vit_loading import drop_teacher_checkpoints
    model_cfg = copy.deepcopy(cfg.model)
    if not load_checkpoints:
        drop_teacher_checkpoints(model_cfg)
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
        cast_frozen_weights(t.backbone, dtype, fp32_residual,
                            t.residual_params)
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


def teacher_outputs(model,
                    x: torch.Tensor,
                    dtype: Optional[torch.dtype] = None,
                    fp32_residual: bool = True) -> dict:
    """Every teacher's outputs (:func:`run_teacher`), asked what a training
    step asks it (``teacher_requests``), by name."""
    asked = model.teacher_requests()
    return {
        name: run_teacher(t, x, asked[name], dtype, fp32_residual)
        for name, t in model.teachers.items()
    }


def targets(model, outs: dict) -> dict:
    """What the losses and the masking see of the teachers' outputs: the
    whitened feature targets by teacher, the relation logits by (teacher,
    block), the importance map."""
    feat = {}
    for f in model.feature_targets:
        tokens = outs[f.teacher].tokens.float()
        feat[f.teacher] = F.layer_norm(tokens, tokens.shape[-1:])
    logits = {}
    for r in model.relation_targets:
        heads = model.teachers[r.teacher].num_heads
        for _, block in r.pairs:
            rel = outs[r.teacher].relations[block]
            logits[(r.teacher,
                    block)] = relation_logits(rel['q'], rel['k'], heads)
    return dict(
        feat=feat,
        logits=logits,
        importance=outs[model.importance_teacher].cls_attn.float())


def compare(model, x: torch.Tensor, mode: str, ref: dict) -> Dict[str, float]:
    dtype, fp32_residual = MODES[mode]
    got = targets(model, teacher_outputs(model, x, dtype, fp32_residual))
    feat_err = max(((got['feat'][n] - want).norm() / want.norm()).item()
                   for n, want in ref['feat'].items())
    err = torch.cat([(got['logits'][key] - want).abs().flatten()
                     for key, want in ref['logits'].items()])
    kept = got['importance'].topk(ref['num_keep'], dim=1).indices
    overlap = [
        len(set(a.tolist()) & set(b.tolist())) / ref['num_keep']
        for a, b in zip(kept, ref['kept'])
    ]
    finite = all(torch.isfinite(f).all() for f in got['feat'].values())
    return {
        'feat_rel_err': feat_err,
        'logit_err_mean': err.mean().item(),
        'logit_err_max': err.max().item(),
        'kept_overlap': sum(overlap) / len(overlap),
        'finite': bool(finite and torch.isfinite(err).all())
    }


def reference(model, x: torch.Tensor, final_ratio: float) -> dict:
    from mmhybrid.models.utils.token_masking import num_kept_tokens
    ref = targets(model, teacher_outputs(model, x))
    importance = ref.pop('importance')
    # on the importance teacher's own grid (the student's in the two-teacher
    # form)
    num_keep = num_kept_tokens(importance.shape[1], final_ratio)
    return dict(
        ref, num_keep=num_keep, kept=importance.topk(num_keep, dim=1).indices)


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
