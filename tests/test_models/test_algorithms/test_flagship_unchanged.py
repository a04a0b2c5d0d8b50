"""The flagship configs' losses on a fixed batch with fixed weights are the
ones recorded before the N-teacher generalisation (issue 22), to 1e-6.

The numbers in ``tests/data/flagship_losses_0.2.json`` were computed by this
same procedure at commit 27ab9cd, before ``HybridDistill`` learned to take any
number of teachers; the two-teacher configs must still give them, and the
student's state dict must still have the keys and shapes it had (a digest
recorded at the same commit).
"""
import hashlib
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
RECORD = osp.join(ROOT, 'tests', 'data', 'flagship_losses_0.2.json')
with open(RECORD) as f:
    RECORDED = json.load(f)
CONFIGS = [k for k in RECORDED if not k.startswith('_')]
KEYS = RECORDED['_state_dict']


def build(config: str):
    """The config's model with random teachers."""
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(ROOT, config))
    m = cfg.model
    m.teacher_feat.checkpoint = None
    m.teacher_rel.checkpoint = None
    m.loss_rel.compile = False
    return MODELS.build(m)


def flagship_losses(config: str) -> dict:
    """The config's losses at mask ratios 0 and 0.5, as recorded."""
    torch.manual_seed(0)
    model = build(config)
    model.init_weights()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    out = {}
    for ratio in (0.0, 0.5):
        model.mask_ratio = ratio
        torch.manual_seed(2)
        with torch.no_grad():
            losses = model.loss(x)
        out[str(ratio)] = {
            k: float(v)
            for k, v in losses.items() if k.startswith('loss')
        }
    return out


@pytest.mark.parametrize('config', CONFIGS)
def test_flagship_losses_are_the_recorded_ones(config):
    got = flagship_losses(config)
    want = RECORDED[config]
    assert set(got) == set(want)
    for ratio in want:
        assert set(got[ratio]) == set(want[ratio]), ratio
        for name, value in want[ratio].items():
            assert got[ratio][name] == pytest.approx(
                value, abs=1e-6), (config, ratio, name)


@pytest.mark.parametrize('config', sorted(KEYS))
def test_a_student_checkpoint_saved_before_still_fits(config):
    """The student's state dict has the keys and shapes it had before N
    teachers (a checkpoint saved then loads strictly)."""
    sd = build(config).state_dict()
    lines = sorted(f'{k} {tuple(v.shape)}' for k, v in sd.items())
    want = KEYS[config]
    assert len(lines) == want['tensors']
    digest = hashlib.sha256('\n'.join(lines).encode()).hexdigest()
    assert digest == want["sha256 of sorted 'key (shape)' lines"]
