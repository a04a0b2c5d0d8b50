"""AttentionDiversityHook's collapse warning, and its options in preflight.

Two teachers are built by hand for the demo's tiny ViT: a relation teacher
with sharp, position-dependent and head-specific attention (random q/k/v
scaled up, a strong random position embedding), and a feature teacher with
the same recipe whose heads are made identical (each block's q/k/v rows of
head 0 copied to the others: attention collapsed to one pattern).

Two short demo runs start from the same student, the relation teacher's
weights (a diverse starting point, so that tens of CPU iterations suffice),
and differ only in the loss: features only (the relation loss at weight 0)
out of the collapsed teacher, or hybrid (both losses), both with the demo's
progressive masking. Measured here: the features-only student's deep-layer
NMI falls to 0.48 x the relation teacher's within 20 iterations, the hybrid
student's stays at 0.71 x or above.
With ``collapse_fraction=0.6`` and ``collapse_window=3`` (checks every 5
iterations) the warning fires once for the first and never for the second.
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmhybrid.engine.hooks import AttentionDiversityHook, KNNMonitorHook
from mmhybrid.engine.preflight import ConfigError, check_train_config
from mmhybrid.testing import DEMO_ARCH, DEMO_CONFIG, tiny_hybrid_cfg

WARNING = 'attention is collapsing'


def save_teacher(path, seed, identical_heads):
    """A tiny ViT saved as mmpretrain saves one, its attention sharp and
    position-dependent; with ``identical_heads`` every head of a block computes
    the same map."""
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(seed)
    vit = VisionTransformer(
        arch=copy.deepcopy(DEMO_ARCH), img_size=64, patch_size=8)
    vit.init_weights()
    dims, heads = DEMO_ARCH['embed_dims'], DEMO_ARCH['num_heads']
    hd = dims // heads
    with torch.no_grad():
        vit.pos_embed.normal_(0, 1.0)
        for layer in vit.layers:
            w, b = layer.attn.qkv.weight, layer.attn.qkv.bias
            w.mul_(4.0)
            if identical_heads:
                for part in range(3):  # q, k, v
                    first = slice(part * dims, part * dims + hd)
                    for h in range(1, heads):
                        rows = slice(part * dims + h * hd,
                                     part * dims + (h + 1) * hd)
                        w[rows] = w[first]
                        b[rows] = b[first]
    sd = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    torch.save(dict(state_dict=sd, meta=dict(iter=1)), str(path))
    return str(path)


@pytest.fixture(scope='module')
def attention_teachers(tmp_path_factory):
    d = tmp_path_factory.mktemp('attention_teachers')
    return (save_teacher(d / 'collapsed.pth', 1,
                         True), save_teacher(d / 'diverse.pth', 2, False))


def _train(repo_root, work_dir, data_root, teachers, relation_weight):
    """A 30-iteration demo run with the hook; returns (hook, log text)."""
    from mmhybrid.engine import HybridRunner
    collapsed, diverse = teachers
    cfg = Config.fromfile(osp.join(repo_root, DEMO_CONFIG))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = osp.basename(str(work_dir))
    iters = 30
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'model.teacher_feat.checkpoint': collapsed,
        'model.teacher_rel.checkpoint': diverse,
        'train_cfg.max_iters': iters,
        'param_scheduler.0.end': 2,
        'param_scheduler.1.begin': 2,
        'param_scheduler.1.end': iters,
        'default_hooks.checkpoint.interval': 1000,
    })
    cfg.model.backbone.init_cfg = dict(
        type='Pretrained', checkpoint=diverse, prefix='backbone.')
    cfg.model.loss_rel.loss_weight = relation_weight
    cfg.custom_hooks = [
        dict(type='ProgressiveMaskingHook', final_ratio=0.5),
        dict(
            type='AttentionDiversityHook',
            interval=5,
            num_images=8,
            collapse_fraction=0.6,
            collapse_window=3,
            collapse_after=0.0)
    ]
    runner = HybridRunner.from_cfg(cfg)
    runner.train()
    hook = [h for h in runner.hooks if isinstance(h, AttentionDiversityHook)]
    log = open(glob.glob(osp.join(str(work_dir), '*', '*.log'))[0]).read()
    return hook[0], log


@pytest.mark.slow
def test_collapse_warning_features_only_vs_hybrid(repo_root, tmp_path,
                                                  shapes_imagenet,
                                                  attention_teachers,
                                                  monkeypatch):
    monkeypatch.chdir(repo_root)
    feat_hook, feat_log = _train(repo_root, tmp_path / 'features_only',
                                 shapes_imagenet, attention_teachers, 0.0)
    hybrid_hook, hybrid_log = _train(repo_root, tmp_path / 'hybrid',
                                     shapes_imagenet, attention_teachers, 1.0)
    # the references: the relation teacher is diverse, the feature teacher
    # has identical heads (no spread at all)
    ref_rel = feat_hook.references['teacher_rel']
    ref_feat = feat_hook.references['teacher_feat']
    assert ref_rel['spread'].min() > 0.2 and ref_rel['nmi'].min() > 0.3
    assert ref_feat['spread'].max() < 1e-4

    warnings = [ln for ln in feat_log.splitlines() if WARNING in ln]
    assert len(warnings) == 1, feat_log[-3000:]
    assert ' - WARNING - ' in warnings[0]
    assert 'collapse_fraction' in warnings[0]
    assert WARNING not in hybrid_log, hybrid_log[-3000:]
    assert hybrid_log.count('attention at iter') == 6

    def nmi_ratios(hook):
        return [
            per_layer['nmi'][2:].mean() / ref_rel['nmi'][2:].mean()
            for _, per_layer in hook.history
        ]

    # the margins the docstring states
    assert nmi_ratios(feat_hook)[-1] < 0.55
    assert min(nmi_ratios(hybrid_hook)) > 0.65


def preflight_lines(hooks):
    cfg = Config(
        dict(model=tiny_hybrid_cfg(), custom_hooks=copy.deepcopy(hooks)))
    try:
        check_train_config(cfg)
    except ConfigError as e:
        return str(e).split('\n  ')[1:]
    return []


def test_preflight_checks_monitor_options():
    good = [
        dict(type='ProgressiveMaskingHook'),
        dict(type='AttentionDiversityHook', collapse_fraction=0.5),
        dict(type='mmpretrain.KNNMonitorHook', k=20, bank_size=1000)
    ]
    assert preflight_lines(good) == []
    bad = [
        dict(type='ProgressiveMaskingHook'),
        dict(
            type='AttentionDiversityHook',
            collapse_fraction=1.5,
            collapse_window=0),
        dict(type='KNNMonitorHook', k=0, temperature=-1.0, bank_size=1.5)
    ]
    lines = preflight_lines(bad)
    assert lines == [
        'custom_hooks[1].collapse_window=0: expected an integer >= 1',
        'custom_hooks[1].collapse_fraction=1.5: expected a fraction in '
        "(0, 1] of the relation teacher's deep-layer head spread and NMI",
        'custom_hooks[2].k=0: expected an integer >= 1',
        'custom_hooks[2].temperature=-1.0: expected a number > 0',
        'custom_hooks[2].bank_size=1.5: expected a fraction in (0, 1] or a '
        'count >= 1'
    ]
    # the constructors raise on the same problems, keys relative to the hook
    for cfg, cls, index in ((bad[1], AttentionDiversityHook, 1),
                            (bad[2], KNNMonitorHook, 2)):
        kwargs = {k: v for k, v in cfg.items() if k != 'type'}
        with pytest.raises(ValueError) as info:
            cls(**kwargs)
        mine = [
            ln.replace(f'custom_hooks[{index}].', '') for ln in lines
            if ln.startswith(f'custom_hooks[{index}].')
        ]
        assert str(info.value) == f'{cls.__name__}: ' + '; '.join(mine)


#: the flagships and two configs built on them (they inherit custom_hooks)
FLAGSHIPS = [
    'hybrid_vitb.py', 'hybrid_vitl.py',
    'hybrid-distill_vit-base-p16_clip-b16-mae-b16_8xb256-fp16-coslr-300e_'
    'in1k.py',
    'hybrid-distill_vit-large-p16_clip-l14-mae-l16_8xb128-fp16-coslr-300e_'
    'in1k.py'
]


@pytest.mark.parametrize('name', FLAGSHIPS)
def test_flagship_configs_enable_the_monitors(repo_root, name):
    """Both monitors, at their defaults (the measured overhead of
    docs/monitors.md), in the flagship configs and the configs built on them;
    their options pass the preflight's check."""
    from mmhybrid.engine.preflight import _monitor_hook_problems
    cfg = Config.fromfile(osp.join(repo_root, 'configs', name))
    hooks = {h['type']: h for h in cfg.custom_hooks}
    attn, knn = hooks['AttentionDiversityHook'], hooks['KNNMonitorHook']
    assert set(attn) == {'type'}  # interval 1000, 16 images, 0.5 x 3 checks
    assert set(knn) == {'type', 'pipeline', 'val_overrides'}
    assert knn['val_overrides'] == dict(split='val')
    for i, h in enumerate(cfg.custom_hooks):
        if h['type'] in ('AttentionDiversityHook', 'KNNMonitorHook'):
            assert _monitor_hook_problems(h, f'custom_hooks[{i}].') == []
    knn_hook = KNNMonitorHook(**{k: v for k, v in knn.items() if k != 'type'})
    assert (knn_hook.interval, knn_hook.bank_size, knn_hook.k) == (10, 0.1, 20)
