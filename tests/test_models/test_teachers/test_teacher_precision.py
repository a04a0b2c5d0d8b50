"""A teacher under autocast keeps its residual stream fp32 (``fp32_residual``),
and ``tools/speed/teacher_precision.py`` measures both choices against fp32."""
import subprocess
import sys

import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.models.teachers.frozen_teacher import (RESIDUAL_PARAMS,
                                                     cast_frozen_weights)
from mmhybrid.testing import tiny_vit_cfg


def _dtypes(backbone):
    return {n: p.dtype for n, p in backbone.named_parameters()}


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_fp32_residual_keeps_only_the_added_parameters_fp32(dtype):
    vit = MODELS.build(tiny_vit_cfg())
    cast_frozen_weights(vit, dtype, fp32_residual=True)
    got = _dtypes(vit)
    assert {n for n, d in got.items() if d == torch.float32} == \
        set(RESIDUAL_PARAMS)
    assert all(d == dtype for n, d in got.items() if n not in RESIDUAL_PARAMS)
    cast_frozen_weights(vit, dtype, fp32_residual=False)
    assert set(_dtypes(vit).values()) == {dtype}


def test_the_residual_stream_of_a_cast_teacher_is_fp32():
    """With pos_embed fp32, the tokens after the embedding (and so every
    block's residual sum) are fp32 although the matmuls run in bf16."""
    vit = MODELS.build(tiny_vit_cfg())
    vit.eval()
    x = torch.randn(2, 3, 32, 32)
    for fp32_residual, want in ((True, torch.float32), (False,
                                                        torch.bfloat16)):
        cast_frozen_weights(vit, torch.bfloat16, fp32_residual)
        tokens = vit.embed(x.to(torch.bfloat16))
        assert tokens.dtype == want, fp32_residual


def test_frozen_teacher_default_and_option():
    t = MODELS.build(dict(type='FrozenTeacher', backbone=tiny_vit_cfg()))
    assert t.fp32_residual is True
    t._cast_weights(torch.bfloat16)
    assert t.backbone.pos_embed.dtype == torch.float32
    assert t.backbone.patch_embed.projection.weight.dtype == torch.bfloat16
    t = MODELS.build(
        dict(
            type='FrozenTeacher', backbone=tiny_vit_cfg(),
            fp32_residual=False))
    t._cast_weights(torch.bfloat16)
    assert t.backbone.pos_embed.dtype == torch.bfloat16


def test_precision_tool_on_the_demo_config(repo_root):
    """The tool runs (CPU autocast) and prints one finite row per mode; fp32
    against itself would be zero, so the low-precision errors are not."""
    proc = subprocess.run([
        sys.executable, 'tools/speed/teacher_precision.py',
        'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py',
        '--batch', '2'
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {
        line.split()[0]: line.split()[1:]
        for line in proc.stdout.splitlines()
        if line.split() and line.split()[0] in ('bf16', 'bf16-stream', 'fp16',
                                                'fp16-stream')
    }
    assert set(rows) == {'bf16', 'bf16-stream', 'fp16', 'fp16-stream'}
    for mode, (feat, mean, peak, overlap, finite) in rows.items():
        assert finite == 'True', mode
        assert 0 < float(feat) < 0.1 and 0 < float(mean) <= float(peak)
        assert 0 <= float(overlap) <= 1


def test_precision_tool_on_every_teacher_of_a_teachers_config(
        repo_root, tmp_path):
    """``model.teachers``: every teacher (two FrozenTeachers, a ZooTeacher
    with random weights and no download) asked what a step asks it; the
    worst feature target, every relation pair, the importance teacher."""
    import importlib.util
    import json
    import os.path as osp
    spec = importlib.util.spec_from_file_location(
        'teacher_precision',
        osp.join(repo_root, 'tools/speed/teacher_precision.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'precision.json'
    assert tool.main([
        osp.join(
            repo_root, 'configs/demo/'
            'hybrid-distill_vit-tiny-p8_3-teachers_1xb32-4e_shapes.py'),
        '--batch', '2', '--modes', 'bf16', 'fp16', '--out',
        str(out)
    ]) == 0
    results = json.loads(out.read_text())['results']
    for mode, r in results.items():
        assert r['finite'], mode
        assert 0 < r['feat_rel_err'] < 0.1, mode
        assert 0 < r['logit_err_mean'] <= r['logit_err_max'], mode
        assert 0 <= r['kept_overlap'] <= 1, mode
    # fp16's 10 mantissa bits against bf16's 7
    assert results['fp16']['logit_err_mean'] < \
        results['bf16']['logit_err_mean']
