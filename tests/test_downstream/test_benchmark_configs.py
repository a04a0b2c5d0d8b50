"""The flagship downstream configs carry the paper's protocol
(docs/method.md#recipe), and the one-command launcher maps every task to
them."""
import os.path as osp

import pytest
from mmengine.config import Config

from .conftest import ROOT

B = 'configs/benchmarks'
FT_B = f'{B}/mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb128-coslr-100e_in1k.py'  # noqa: E501
FT_L = f'{B}/mmpretrain/vit-large-p16_hybrid-distill-300e-pre_8xb128-coslr-50e_in1k.py'  # noqa: E501
LINEAR = f'{B}/mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb2048-linear-coslr-90e_in1k.py'  # noqa: E501
ADE = f'{B}/mmseg/upernet_vit-base-p16_hybrid-distill-300e-pre_8xb2-160k_ade20k-512x512.py'  # noqa: E501
COCO = f'{B}/mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py'  # noqa: E501
COCO_25E = f'{B}/mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-25e_coco.py'  # noqa: E501


def _cfg(path):
    return Config.fromfile(osp.join(ROOT, path))


def _types(pipeline):
    return [t['type'] for t in pipeline]


def test_imagenet_finetune_vitb_recipe():
    cfg = _cfg(FT_B)
    assert cfg.custom_imports.imports == ['mmhybrid']
    assert cfg.default_scope == 'mmpretrain'
    bb = cfg.model.backbone
    assert bb.type == 'StrictPretrainedViT'  # loads all tensors or fails
    assert bb.arch == 'base' and bb.patch_size == 16 and bb.img_size == 224
    assert bb.drop_path_rate == 0.1
    assert bb.init_cfg == dict(
        type='Pretrained', checkpoint='pretrain/hybrid_vitb_mmpretrain.pth')
    assert cfg.train_cfg.max_epochs == 100
    assert cfg.train_dataloader.batch_size * 8 == 1024
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper'
    assert ow.constructor == 'ViTLayerDecayOptimWrapperConstructor'
    assert ow.paramwise_cfg == dict(layer_decay_rate=0.65)
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.lr == 2e-3
    pipe = cfg.train_dataloader.dataset.pipeline
    assert 'RandAugment' in _types(pipe) and 'RandomErasing' in _types(pipe)
    augments = {a['type']: a['alpha'] for a in cfg.model.train_cfg.augments}
    assert augments == {'Mixup': 0.8, 'CutMix': 1.0}
    loss = cfg.model.head.loss
    assert loss.type == 'LabelSmoothLoss' and loss.label_smooth_val == 0.1
    assert cfg.val_evaluator.type == 'Accuracy'


def test_imagenet_finetune_vitl_variant():
    cfg = _cfg(FT_L)
    assert cfg.model.backbone.arch == 'large'
    assert cfg.model.backbone.type == 'StrictPretrainedViT'
    assert cfg.model.head.in_channels == 1024
    assert cfg.optim_wrapper.paramwise_cfg == dict(layer_decay_rate=0.75)
    assert cfg.optim_wrapper.constructor == \
        'ViTLayerDecayOptimWrapperConstructor'
    assert cfg.train_cfg.max_epochs == 50


def test_linear_probe_recipe():
    cfg = _cfg(LINEAR)
    bb = cfg.model.backbone
    assert bb.type == 'StrictPretrainedViT'
    assert bb.frozen_stages == 12 and bb.out_type == 'cls_token'
    assert bb.final_norm is True
    assert cfg.model.neck.type == 'ClsBatchNormNeck'
    assert cfg.optim_wrapper.optimizer.type == 'LARS'
    assert cfg.train_cfg.max_epochs == 90
    assert 'prefix' not in bb.init_cfg


def test_ade20k_upernet_recipe():
    cfg = _cfg(ADE)
    assert cfg.default_scope == 'mmseg'
    m = cfg.model
    assert m.type == 'EncoderDecoder' and m.pretrained is None
    assert m.backbone.type == 'mmpretrain.StrictPretrainedViT'
    assert m.backbone.out_type == 'featmap'
    assert list(m.backbone.out_indices) == [3, 5, 7, 11]
    assert tuple(m.backbone.img_size) == (512, 512)
    assert m.backbone.drop_path_rate == 0.1
    assert m.decode_head.type == 'UPerHead'
    assert m.decode_head.num_classes == 150
    assert m.test_cfg.mode == 'slide'
    assert tuple(m.test_cfg.crop_size) == (512, 512)
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    crop = [
        t for t in cfg.train_dataloader.dataset.pipeline
        if t['type'] == 'RandomCrop'
    ][0]
    assert tuple(crop['crop_size']) == (512, 512)
    ow = cfg.optim_wrapper
    assert ow.constructor == 'ViTLayerDecayOptimWrapperConstructor'
    assert ow.paramwise_cfg.layer_decay_rate == 0.65
    assert cfg.val_evaluator.type == 'IoUMetric'
    assert cfg.train_dataloader.collate_fn.type == 'pseudo_collate'


@pytest.mark.parametrize('path,times', [(COCO, 4), (COCO_25E, 1)])
def test_coco_mask_rcnn_vitdet_recipe(path, times):
    cfg = _cfg(path)
    assert cfg.default_scope == 'mmdet'
    m = cfg.model
    assert m.type == 'MaskRCNN'
    assert m.backbone.type == 'mmpretrain.StrictPretrainedViT'
    assert tuple(m.backbone.img_size) == (1024, 1024)
    assert list(m.backbone.out_indices) == [11]
    assert m.neck.type == 'SimpleFeaturePyramid'
    assert tuple(m.neck.scale_factors) == (4.0, 2.0, 1.0, 0.5)
    assert m.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
    pipe = cfg.train_dataloader.dataset.dataset.pipeline
    jitter = [t for t in pipe if t['type'] == 'RandomResize'][0]
    assert tuple(jitter['ratio_range']) == (0.1, 2.0)  # large-scale jitter
    assert tuple(jitter['scale']) == (1024, 1024)
    assert cfg.train_dataloader.dataset.times == times
    assert cfg.train_cfg.max_epochs == 25
    ow = cfg.optim_wrapper
    assert ow.constructor == 'ViTLayerDecayOptimWrapperConstructor'
    assert ow.paramwise_cfg.layer_decay_rate == 0.7
    assert ow.optimizer.weight_decay == 0.1
    assert cfg.train_dataloader.batch_size * 8 == 64
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
    assert cfg.val_evaluator.type == 'CocoMetric'


def test_flagship_segmentor_and_detector_optimizers_build():
    """ViT-B inside mmseg's UperNet and mmdet's Mask R-CNN: the layer-decay
    constructor gives 14 depths, the heads the base lr, the stem 0.65^13 (ADE)
    or 0.7^13 (COCO) of it."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    for path, rate in ((ADE, 0.65), (COCO, 0.7)):
        cfg = _cfg(path)
        cfg.model.backbone.init_cfg = None
        ow = dict(cfg.optim_wrapper, type='OptimWrapper')  # CPU
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = MODELS.build(cfg.model)
            wrapper = build_optim_wrapper(model, ow)
        lrs = {}
        for g in wrapper.optimizer.param_groups:
            lrs[g['layer_depth']] = g['lr']
        assert sorted(lrs) == list(range(14))
        base = cfg.optim_wrapper.optimizer.lr
        assert lrs[13] == pytest.approx(base)
        assert lrs[0] == pytest.approx(base * rate**13)


def test_launcher_tasks_resolve(tmp_path, capsys):
    from mmhybrid.downstream import launcher as ds
    for task, (config, target) in ds.TASKS.items():
        assert osp.isfile(osp.join(ROOT, config)), task
        assert ds.main([task, 'ckpt.pth', '--dry-run', '--gpus', '8']) == 0
        out = capsys.readouterr().out
        assert f'hybrid2{target}.py ckpt.pth' in out
        assert 'tools/dist_train.sh' in out and config in out
        assert f'model.backbone.init_cfg.checkpoint=work_dirs/benchmarks/' \
            f'{task}/ckpt/pretrain_{target}.pth' in out
    assert ds.main([
        'ade20k', 'ckpt.pth', '--launcher', 'slurm', '--partition', 'gpu',
        '--dry-run', '--', '--amp'
    ]) == 0
    out = capsys.readouterr().out
    assert 'tools/slurm_train.sh gpu hybrid-ade20k' in out
    assert out.rstrip().endswith('--amp')
    with pytest.raises(SystemExit):
        ds.main(['no-such-task', 'ckpt.pth', '--dry-run'])


def test_train_py_keeps_each_dataloader_its_own_dataset(monkeypatch, tmp_path):
    """tools/train.py fills dataloader defaults; the train loader must keep its
    own dataset and sampler (every downstream config has distinct train/val
    loaders)."""
    import sys

    from mmhybrid.apis import train
    cfg = Config(
        dict(
            train_dataloader=dict(
                batch_size=8,
                sampler=dict(type='InfiniteSampler', shuffle=True),
                dataset=dict(type='CustomDataset', data_prefix='train')),
            val_dataloader=dict(
                batch_size=20,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=dict(type='CustomDataset', data_prefix='val')),
            test_dataloader=dict(
                batch_size=20,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=dict(type='CustomDataset', data_prefix='val'))))
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv',
                        ['train.py', 'x.py', '--work-dir',
                         str(tmp_path)])
    args = train.parse_args()
    cfg = train.merge_args(cfg, args)
    assert cfg.train_dataloader.dataset.data_prefix == 'train'
    assert cfg.train_dataloader.sampler.type == 'InfiniteSampler'
    assert cfg.train_dataloader.batch_size == 8
    assert cfg.val_dataloader.dataset.data_prefix == 'val'
