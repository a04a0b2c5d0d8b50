"""The pinned OpenMMLab stack really works together on this machine (CPU)."""
import os.path as osp
import sys

import pytest
import torch

import mmhybrid  # noqa: F401  (applies the torch.load allow-list)


def test_versions_and_registration():
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    import mmseg
    from mmpretrain.registry import HOOKS, MODELS
    assert mmhybrid.__version__
    from mmengine.utils import digit_version

    # mmdet/mmseg assert it
    assert digit_version(mmcv.__version__) < digit_version('2.2.0')
    assert mmengine.__version__ and mmpretrain.__version__
    assert mmdet.__version__ and mmseg.__version__
    for name in ('HybridDistill', 'HybridViT', 'FrozenTeacher',
                 'DistillProjectionNeck', 'FeatureDistillLoss',
                 'RelationDistillLoss'):
        assert MODELS.get(name) is not None, name
    assert HOOKS.get('ProgressiveMaskingHook') is not None


def test_installed_versions_are_the_pins_of_this_venv():
    """Every package pinned for this venv is installed at that version.

    tools/setup_env.sh writes the merged pins (the reference stack's, or the
    minimum stack's) to ``<venv>/constraints.txt``; so a run in the minimum
    stack's venv really is torch 2.1.2 with numpy 1.26.
    """
    import importlib.metadata as md
    import re

    from packaging.version import Version
    pins_file = osp.join(sys.prefix, 'constraints.txt')
    if not osp.isfile(pins_file):
        pytest.skip(f'{sys.prefix} was not made by tools/setup_env.sh')
    pins = {}
    with open(pins_file) as f:
        for line in f:
            m = re.match(r'^([A-Za-z0-9._-]+)==(\S+)$', line.strip())
            if m:
                pins[m.group(1)] = m.group(2)
    assert 'torch' in pins and 'mmcv' in pins, pins_file
    wrong = []
    for name, pinned in pins.items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            continue  # a pin only constrains; not every one is installed
        # '2.14.1+cpu' is the 2.14.1 pin
        if Version(installed).public != Version(pinned).public:
            wrong.append(f'{name} {installed} (pinned {pinned})')
    assert not wrong, f'{pins_file}: ' + ', '.join(wrong)


def test_mmcv_compiled_ops_on_cpu():
    from mmcv.ops import RoIAlign, nms
    feats = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]])
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2,
                   aligned=False)(feats, rois)
    assert out.shape == (1, 1, 2, 2)
    # the mean of a 4x4 corner of an arange grid: strictly increasing values
    assert out[0, 0, 0, 0] < out[0, 0, 1, 1]
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_mmpretrain_vit_forward():
    from mmpretrain.models import VisionTransformer
    vit = VisionTransformer(arch='deit-tiny', img_size=32, patch_size=8)
    out = vit(torch.randn(2, 3, 32, 32))
    assert out[0].shape == (2, 192)


def test_mmseg_vit_upernet_forward():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
        backbone=dict(
            type='VisionTransformer',
            img_size=(64, 64),
            patch_size=16,
            embed_dims=64,
            num_layers=4,
            num_heads=4,
            out_indices=(0, 1, 2, 3)),
        neck=dict(
            type='MultiLevelNeck',
            in_channels=[64] * 4,
            out_channels=64,
            scales=[4, 2, 1, 0.5]),
        decode_head=dict(
            type='UPerHead',
            in_channels=[64] * 4,
            in_index=[0, 1, 2, 3],
            pool_scales=(1, 2),
            channels=32,
            num_classes=5,
            norm_cfg=dict(type='BN', requires_grad=True),
            align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    model.eval()
    out = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, 5, 16, 16)


def test_mmdet_mask_rcnn_loss_backward_predict():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData
    register_all_modules(init_default_scope=False)
    import mmdet
    cfg_path = osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'configs', 'mask_rcnn',
        'mask-rcnn_r50_fpn_1x_coco.py')
    cfg = Config.fromfile(cfg_path)
    m = cfg.model
    m.backbone.depth = 18
    m.backbone.init_cfg = None
    m.neck.in_channels = [64, 128, 256, 512]
    m.roi_head.bbox_head.num_classes = 3
    m.roi_head.mask_head.num_classes = 3
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(m)
    model.init_weights()
    img = torch.rand(1, 3, 64, 64) * 255
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(64, 64),
            ori_shape=(64, 64),
            pad_shape=(64, 64),
            scale_factor=(1.0, 1.0),
            batch_input_shape=(64, 64)))
    from mmdet.structures.mask import BitmapMasks
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:50] = 1
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[12.0, 10.0, 50.0, 40.0]]),
        labels=torch.tensor([1]),
        masks=BitmapMasks(masks.numpy(), 64, 64))
    data = model.data_preprocessor(
        dict(inputs=[img[0]], data_samples=[sample]), True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    total.backward()
    assert torch.isfinite(total)
    assert 'loss_mask' in losses
    # stem and stage 1 are frozen by the config (frozen_stages=1)
    assert model.backbone.conv1.weight.grad is None
    assert model.backbone.layer4[0].conv1.weight.grad is not None
    assert model.roi_head.mask_head.conv_logits.weight.grad is not None
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(inputs=[img[0]], data_samples=[sample]), False)
        preds = model(**data, mode='predict')
    assert hasattr(preds[0], 'pred_instances')
    assert 'masks' in preds[0].pred_instances


@pytest.mark.slow
def test_mmengine_runner_train_save_resume(tmp_path):
    """A toy model trains, saves, and resumes with iteration and optimizer
    state restored; its checkpoint (which holds mmengine's HistoryBuffer and
    numpy objects) reads through mmhybrid's safe loader on every supported
    torch, and through plain ``torch.load(weights_only=True)`` where torch has
    a working ``add_safe_globals`` (>= 2.6; torch 2.1 of the minimum stack has
    none, so there only mmhybrid's loader can read it safely)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    class ToyModel(BaseModel):

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, labels, mode='tensor'):
            out = self.linear(torch.stack(inputs))
            if mode == 'loss':
                return dict(
                    loss=((out.squeeze(-1) - torch.stack(labels))**2).mean())
            return out

    class ToyData(Dataset):

        def __len__(self):
            return 32

        def __getitem__(self, i):
            x = torch.tensor([i / 32.0, 1.0])
            return dict(inputs=x, labels=2 * x[0] + 1)

    def make(work_dir, max_iters, resume):
        return Runner(
            model=ToyModel(),
            work_dir=str(work_dir),
            train_dataloader=dict(
                dataset=ToyData(),
                sampler=dict(type='DefaultSampler', shuffle=True),
                batch_size=4,
                num_workers=0),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(
                checkpoint=dict(
                    type='CheckpointHook', interval=4, by_epoch=False)),
            randomness=dict(seed=0),
            resume=resume,
            experiment_name=f'toy_{max_iters}_{resume}')

    runner = make(tmp_path, 8, False)
    runner.train()
    assert osp.isfile(tmp_path / 'iter_8.pth')
    from mmhybrid.utils import load_checkpoint_file
    from mmhybrid.utils.allow_list import torch_has_safe_globals
    saved = load_checkpoint_file(tmp_path / 'iter_8.pth')
    assert saved['meta']['iter'] == 8
    if torch_has_safe_globals():
        saved = torch.load(tmp_path / 'iter_8.pth', weights_only=True)
        assert saved['meta']['iter'] == 8
    runner2 = make(tmp_path, 12, True)
    runner2.train()
    assert runner2.iter == 12
    # the optimizer's AdamW state was restored: step count continued
    state = runner2.optim_wrapper.optimizer.state_dict()['state']
    assert int(next(iter(state.values()))['step']) == 12
