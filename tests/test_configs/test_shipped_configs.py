"""Every shipped config parses and builds (ViT-B/L are built, never
trained)."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    p for p in glob.glob(
        osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, ROOT))


def _is_large(path):
    return 'vitl' in path or 'vit-large' in path


@pytest.mark.parametrize(
    'path', [
        pytest.param(p, marks=pytest.mark.slow) if _is_large(p) else p
        for p in CONFIGS
    ],
    ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.get('custom_imports', {}).get('imports') == ['mmhybrid']
    model_cfg = cfg.model
    if model_cfg.type == 'HybridDistill':
        # do not touch the (remote) teacher files: building must not load them
        teachers = [e.teacher for e in model_cfg.get('teachers', {}).values()
                    ] or [model_cfg.teacher_feat, model_cfg.teacher_rel]
        for t in teachers:
            t.checkpoint = None
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    from mmengine.registry import MODELS
    model = MODELS.build(model_cfg)
    if model_cfg.type == 'HybridDistill':
        assert 0.0 <= model.mask_ratio < 1.0
        hooks = [h['type'] for h in cfg.get('custom_hooks', [])]
        assert 'ProgressiveMaskingHook' in hooks
        # teachers are never part of the student's state dict
        assert not any('teacher' in k for k in model.state_dict())


def test_flagship_recipe():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'hybrid_vitb.py'))
    assert cfg.train_dataloader.batch_size == 256
    assert cfg.optim_wrapper.type == 'BF16OptimWrapper'  # bf16 AMP
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and tuple(opt.betas) == (0.9, 0.95)
    assert opt.lr == pytest.approx(1.5e-4 * 2048 / 256)
    assert cfg.train_cfg.max_epochs == 300
    m = cfg.model
    assert m.loss_feat.loss_type == 'smooth_l1' and m.loss_feat.beta == 2.0
    assert m.loss_feat.loss_weight == 1.0 and m.loss_rel.loss_weight == 1.0
    assert m.loss_rel.loss_type == 'kl'
    assert m.teacher_feat.checkpoint.startswith(
        'https://download.openmmlab.com')
    assert m.teacher_rel.checkpoint.startswith(
        'https://download.openmmlab.com')
    hook = [h for h in cfg.custom_hooks
            if h.type == 'ProgressiveMaskingHook'][0]
    assert hook.final_ratio == 0.5
    assert cfg.get('find_unused_parameters', False) is False
    assert 'find_unused_parameters' not in cfg.get('model_wrapper_cfg', {})


#: datasets read in their official layouts, not as an ImageNet-style folder
TRANSFER_DATASETS = ('CheckedCIFAR100', 'CheckedStanfordCars',
                     'INaturalist2019')


def _classification_loaders():
    """(config, loader name) for every shipped ImageNet-style data loader."""
    out = []
    for path in CONFIGS:
        if '/mmseg/' in path or '/mmdet/' in path or '/demo/' in path:
            continue  # other layouts; their own end-to-end tests read them
        cfg = Config.fromfile(path)
        if cfg.train_dataloader.dataset.type in TRANSFER_DATASETS:
            continue  # official layouts: test_transfer_classification.py
        for name in ('train_dataloader', 'val_dataloader'):
            if cfg.get(name) is not None:
                out.append(
                    pytest.param(
                        path, name, id=f'{osp.relpath(path, ROOT)}:{name}'))
    return out


@pytest.mark.parametrize('path,loader', _classification_loaders())
def test_config_dataloader_yields_a_batch(path, loader, shapes_imagenet):
    """The loaders as tools/train.py's runner builds them, on a tiny ImageNet-
    style folder.

    Configs with an ``mmpretrain::`` dataset base get ``_scope_`` inside
    ``collate_fn``; mmengine's own ``Runner`` passes it on and the first batch
    raises ``default_collate() got an unexpected keyword argument '_scope_'``;
    ``HybridRunner`` (the tools' default runner) looks it up in its scope.
    """
    from mmhybrid.engine.runners import HybridRunner as Runner
    cfg = Config.fromfile(path)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    loader_cfg = cfg[loader]
    loader_cfg.update(batch_size=4, num_workers=0, persistent_workers=False)
    loader_cfg.dataset.data_root = shapes_imagenet
    batch = next(iter(Runner.build_dataloader(loader_cfg, seed=0)))
    assert len(batch['inputs']) == 4
    assert tuple(batch['inputs'][0].shape[-2:]) == (224, 224)
