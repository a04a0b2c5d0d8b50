"""ViTDet-style backbone (``WindowedViT``): windowed attention equals global
attention masked to the windows (padding included), relative position biases
start at zero, and the student checkpoint loads into it completely."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmhybrid.models.backbones import WindowedAttention, WindowedViT
from mmhybrid.utils import load_checkpoint_file
from .conftest import ROOT

VITDET = 'configs/benchmarks/mmdet/mask-rcnn_vitdet-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py'  # noqa: E501
VITDET_DEMO = 'configs/benchmarks/demo/mask-rcnn_vitdet-tiny-p8_hybrid-distill-300i-pre_sfp_1xb2-4i_shapes.py'  # noqa: E501


def masked_global_reference(attn: WindowedAttention, x: torch.Tensor, grid,
                            window: int) -> torch.Tensor:
    """Global attention over the extra tokens and the zero-padded grid, each
    pair's logit masked unless ViTDet's windowed attention has it, the relative
    bias of every pair looked up one by one; padded rows dropped."""
    B, L, C = x.shape
    H, W = grid
    extra = L - H * W
    heads, d = attn.num_heads, C // attn.num_heads
    Hp = math.ceil(H / window) * window if window else H
    Wp = math.ceil(W / window) * window if window else W
    padded = x.new_zeros(B, Hp, Wp, C)
    padded[:, :H, :W] = x[:, extra:].reshape(B, H, W, C)
    tokens = torch.cat([x[:, :extra], padded.reshape(B, Hp * Wp, C)], 1)
    T = tokens.shape[1]
    qkv = F.linear(tokens, attn.qkv.weight, attn.qkv.bias)
    q, k, v = (
        t.reshape(B, T, heads, d).transpose(1, 2) for t in qkv.split(C, -1))
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)

    rows = [None] * extra + [p // Wp for p in range(Hp * Wp)]
    cols = [None] * extra + [p % Wp for p in range(Hp * Wp)]
    size_h, size_w = (window, window) if window else (H, W)
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            if rows[i] is None or rows[j] is None:  # an extra token
                allowed[i, j] = (i == j) if window else True
                continue
            if window and (rows[i] // window != rows[j] // window
                           or cols[i] // window != cols[j] // window):
                continue
            allowed[i, j] = True
            if attn.use_rel_pos:
                rh = attn.rel_pos_h[rows[i] - rows[j] + size_h - 1]
                rw = attn.rel_pos_w[cols[i] - cols[j] + size_w - 1]
                logits[:, :, i, j] += q[:, :, i] @ (rh + rw)
    logits = logits.masked_fill(~allowed, float('-inf'))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    keep = list(range(extra)) + [
        extra + r * Wp + c for r in range(H) for c in range(W)
    ]
    return attn.proj(out[:, keep])


@pytest.mark.parametrize(
    'grid,window,extra',
    [
        ((7, 9), 4, 1),  # padded on both sides, [CLS]
        ((6, 6), 3, 1),  # no padding
        ((5, 3), 4, 0),  # one window column, no extra token
        ((5, 7), 0, 1),  # global block, relative bias of the whole grid
    ])
def test_windowed_attention_equals_masked_global_reference(
        grid, window, extra):
    torch.manual_seed(0)
    size = (window, window) if window else grid
    attn = WindowedAttention(
        24, 3, window_size=window, rel_pos_size=size).double().eval()
    # zero-initialised as ViTDet; random here so that every lookup counts
    assert not attn.rel_pos_h.any() and not attn.rel_pos_w.any()
    with torch.no_grad():
        for p in (attn.rel_pos_h, attn.rel_pos_w, attn.qkv.bias):
            p.normal_()
    x = torch.randn(2, extra + grid[0] * grid[1], 24, dtype=torch.double)
    got = attn(x, grid)
    want = masked_global_reference(attn, x, grid, window)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_relative_tables_learn_from_zero():
    """Zero-initialised tables still get gradients (through the extra query
    channels the bias is folded into)."""
    torch.manual_seed(0)
    attn = WindowedAttention(16, 2, window_size=3, rel_pos_size=(3, 3))
    x = torch.randn(2, 1 + 25, 16)
    attn(x, (5, 5)).pow(2).sum().backward()
    assert attn.rel_pos_h.grad.abs().sum() > 0
    assert attn.rel_pos_w.grad.abs().sum() > 0


def test_window_blocks_do_not_see_other_windows():
    """Changing one window's tokens changes no other window's output."""
    torch.manual_seed(0)
    attn = WindowedAttention(16, 2, window_size=2, rel_pos_size=(2, 2)).eval()
    x = torch.randn(1, 1 + 16, 16)
    y = x.clone()
    y[:, 1 + 0] += 5.0  # patch (0, 0): window (0, 0)
    a, b = attn(x, (4, 4)), attn(y, (4, 4))
    changed = (a - b).abs().amax(-1)[0] > 1e-6
    window_00 = [1 + r * 4 + c for r in (0, 1) for c in (0, 1)]
    assert changed.nonzero().flatten().tolist() == window_00


def _backbone_cfg(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    bb = cfg.model.backbone.to_dict()
    bb['type'] = bb['type'].split('.')[-1]
    return cfg, bb


def test_vitdet_config_recipe():
    cfg, bb = _backbone_cfg(VITDET)
    assert bb['type'] == 'WindowedViT'
    assert bb['window_size'] == 14
    assert bb['global_attn_indexes'] == [2, 5, 8, 11]
    assert bb['use_rel_pos'] is True
    assert bb['arch'] == 'base' and tuple(bb['img_size']) == (1024, 1024)
    assert bb['init_cfg']['allow'] == r'^layers\.\d+\.attn\.rel_pos_[hw]$'
    base = Config.fromfile(
        osp.join(ROOT, VITDET.replace('vitdet-base', 'vit-base')))
    # everything but the backbone's attention is the global-attention config
    for key in ('neck', 'rpn_head', 'roi_head', 'train_cfg', 'test_cfg'):
        assert cfg.model[key] == base.model[key], key
    assert cfg.optim_wrapper == base.optim_wrapper
    assert cfg.param_scheduler == base.param_scheduler
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
    demo_cfg, demo = _backbone_cfg(VITDET_DEMO)
    assert demo['type'] == bb['type'] and demo['use_rel_pos']
    assert demo['init_cfg']['allow'] == bb['init_cfg']['allow']


def test_builds_from_the_student_with_every_tensor_loaded(
        synthetic_student, capsys):
    """The demo backbone from the raw student checkpoint: every student tensor
    is in it (pos_embed resized 8x8 -> 12x12), the relative position tables are
    the only other tensors, are zero and are reported as new."""
    from mmengine.logging import MMLogger

    from mmhybrid.downstream import fit_pos_embed
    _, bb = _backbone_cfg(VITDET_DEMO)
    bb['init_cfg']['checkpoint'] = synthetic_student
    bb.pop('_scope_', None)
    bb.pop('type')
    MMLogger.get_instance('windowed_vit_test')
    model = WindowedViT(**bb)
    model.init_weights()
    student = load_checkpoint_file(synthetic_student)['state_dict']
    student = {
        k[len('backbone.'):]: v
        for k, v in student.items() if k.startswith('backbone.')
    }
    state = model.state_dict()
    new = sorted(set(state) - set(student))
    assert set(student) <= set(state)
    assert new == sorted(f'layers.{i}.attn.rel_pos_{a}' for i in range(4)
                         for a in 'hw')
    for k in new:
        assert not state[k].any(), k
    for k, v in student.items():
        if k == 'pos_embed':
            v = fit_pos_embed(v, (12, 12))
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)
    # windowed blocks 0 and 2 (5 x 5 windows, 12 x 12 grid: padded to 15),
    # global blocks 1 and 3 with tables for the whole grid
    assert [layer.attn.window_size for layer in model.layers] == [5, 0, 5, 0]
    assert model.layers[1].attn.rel_pos_h.shape[0] == 2 * 12 - 1
    out = capsys.readouterr()
    assert 'WindowedViT: loaded all' in out.out + out.err
    assert 'left to init (allow)' in out.out + out.err
    feats = model(torch.randn(1, 3, 96, 96))
    assert feats[0].shape == (1, 96, 12, 12)


def test_without_allow_the_new_tables_are_missing(synthetic_student):
    """Strict by default: the same load without ``allow`` names them."""
    from mmhybrid.downstream import PretrainedMismatchError
    _, bb = _backbone_cfg(VITDET_DEMO)
    bb.pop('_scope_', None)
    bb.pop('type')
    bb['init_cfg'] = dict(type='Pretrained', checkpoint=synthetic_student)
    model = WindowedViT(**bb)
    with pytest.raises(PretrainedMismatchError, match='rel_pos_h'):
        model.init_weights()


def test_launcher_converts_with_the_configs_allow(capsys):
    """The one-command launcher hands the config's ``init_cfg.allow`` to the
    converter (the new tables), and nothing to configs without one."""
    from mmhybrid.downstream import launcher
    assert launcher.main(['coco-vitdet', 'ckpt.pth', '--dry-run']) == 0
    out = capsys.readouterr().out
    assert "--allow '^layers\\.\\d+\\.attn\\.rel_pos_[hw]$'" in out
    assert launcher.main(['coco', 'ckpt.pth', '--dry-run']) == 0
    assert '--allow' not in capsys.readouterr().out


@pytest.mark.slow
def test_vitdet_coco_trains_and_reports_box_and_mask_ap(
        synthetic_student, tmp_path):
    """The one-command launcher on the demo ViTDet config: conversion with the
    config's ``allow`` (the tables reported as new), two training iterations
    and one evaluation on generated COCO-style data, bbox and segm AP through
    mmdet's CocoMetric."""
    import os
    import subprocess
    import sys

    from mmhybrid.datasets import make_coco_style
    from mmhybrid.utils.scalars import read_scalars
    data = make_coco_style(
        str(tmp_path / 'coco'), num_train=4, num_val=2, size=64, seed=0)
    ann = osp.join(data, 'annotations', 'instances_val2017.json')
    work = tmp_path / 'work'
    proc = subprocess.run([
        sys.executable, 'tools/benchmarks/downstream.py', 'demo-coco-vitdet',
        synthetic_student, '--launcher', 'none', '--work-dir',
        str(work), '--', '--cfg-options', *[
            f'{s}_dataloader.dataset.data_root={data}/'
            for s in ('train', 'val', 'test')
        ], f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}',
        'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2'
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'missing keys: 0, unexpected keys: 0' in proc.stdout
    assert "left to the target's init: 8 tensors" in proc.stdout
    log = proc.stdout + proc.stderr
    assert 'WindowedViT: loaded all 54 backbone tensors' in log
    metrics = {
        k: v
        for r in read_scalars(str(work), required=True)
        for k, v in r.items()
    }
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert -1.0 <= metrics[key] <= 1.0, key
