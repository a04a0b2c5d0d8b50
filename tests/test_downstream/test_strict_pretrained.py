"""Every shipped downstream config loads a pretraining checkpoint completely.

It loads the raw file the runner saves (``backbone.*`` + ``neck.*``, with or
without ``prefix='backbone.'``) and the converters' output alike, ``pos_embed``
resized; a checkpoint that leaves any backbone tensor unloaded stops with an
``ERROR:`` before training (mmengine's own ``Pretrained`` init only warns, and
a raw checkpoint without the prefix loads nothing).
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mmhybrid import converters
from mmhybrid.downstream import PretrainedMismatchError
from .conftest import DEMO, ROOT, TINY_ARCH, make_student_checkpoint

B = 'configs/benchmarks'
SHIPPED = {
    'ft-b':
    f'{B}/mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb128-coslr-100e_in1k.py',  # noqa: E501
    'ft-l':
    f'{B}/mmpretrain/vit-large-p16_hybrid-distill-300e-pre_8xb128-coslr-50e_in1k.py',  # noqa: E501
    'linear':
    f'{B}/mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb2048-linear-coslr-90e_in1k.py',  # noqa: E501
    'ade20k':
    f'{B}/mmseg/upernet_vit-base-p16_hybrid-distill-300e-pre_8xb2-160k_ade20k-512x512.py',  # noqa: E501
    'coco':
    f'{B}/mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py',  # noqa: E501
    'coco-25e':
    f'{B}/mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-25e_coco.py',  # noqa: E501
}
#: the target size of the tiny backbones: a 12 x 12 grid against the student's
#: 8 x 8, so every load resizes pos_embed (as 224 -> 512 / 1024 does)
IMG = 96


def _student(path):
    sd = torch.load(path, weights_only=True)['state_dict']
    return {
        k[len('backbone.'):]: v
        for k, v in sd.items() if k.startswith('backbone.')
    }


def _resized(pos_embed, grid):
    """mmpretrain's own bicubic resize, the reference."""
    from mmpretrain.models.utils import resize_pos_embed
    return resize_pos_embed(pos_embed, (8, 8), grid, 'bicubic', 1)


def _tiny_backbone(config, checkpoint, **init):
    """The config's ``model.backbone`` with the tiny student arch, built in the
    config's scope and initialised."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    bb = cfg.model.backbone
    bb.arch = dict(TINY_ARCH)
    bb.patch_size = 8
    bb.img_size = IMG
    if 'out_indices' in bb:
        bb.out_indices = [3]
    if bb.get('frozen_stages', -1) > 0:
        bb.frozen_stages = TINY_ARCH['num_layers']
    bb.init_cfg = dict(bb.init_cfg, checkpoint=str(checkpoint), **init)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(bb)
    model.init_weights()
    return model


def _assert_is_student(model, student, grid=(IMG // 8, IMG // 8)):
    state = model.state_dict()
    assert set(state) == set(student)
    for k, v in student.items():
        expected = _resized(v, grid) if k == 'pos_embed' else v
        assert torch.equal(state[k], expected), k


@pytest.fixture(scope='module')
def student_files(tmp_path_factory):
    """A raw pretraining checkpoint and the converter's output of it."""
    d = tmp_path_factory.mktemp('strict')
    raw = make_student_checkpoint(d / 'epoch_300.pth')
    converted = d / 'converted.pth'
    converters.convert_to_mmpretrain(
        raw, str(converted), img_size=IMG, num_heads=TINY_ARCH['num_heads'])
    return dict(raw=raw, converted=str(converted))


@pytest.mark.parametrize('config', list(SHIPPED))
@pytest.mark.parametrize(
    'source,init', [
        ('raw', {}),
        ('raw', dict(prefix='backbone.')),
        ('converted', {}),
        ('converted', dict(prefix='backbone.')),
    ],
    ids=['raw', 'raw-prefix', 'converted', 'converted-prefix'])
def test_shipped_config_loads_every_backbone_tensor(student_files, config,
                                                    source, init):
    model = _tiny_backbone(SHIPPED[config], student_files[source], **init)
    assert type(model).__name__ == 'StrictPretrainedViT'
    _assert_is_student(model, _student(student_files['raw']))


@pytest.mark.parametrize('config', list(SHIPPED))
def test_missing_backbone_key_is_an_error(tmp_path, config):
    path = make_student_checkpoint(tmp_path / 'student.pth')
    ckpt = torch.load(path, weights_only=True)
    del ckpt['state_dict']['backbone.layers.2.attn.qkv.weight']
    bad = tmp_path / 'missing.pth'
    torch.save(ckpt, bad)
    with pytest.raises(PretrainedMismatchError) as err:
        _tiny_backbone(SHIPPED[config], bad)
    msg = str(err.value)
    assert '\n' not in msg
    assert str(bad) in msg and 'StrictPretrainedViT' in msg
    assert 'missing [layers.2.attn.qkv.weight]' in msg


def test_unexpected_and_misshapen_keys_are_errors(tmp_path):
    """A tensor the model has no place for, and a 64-wide student in a 96-wide
    model, are errors too (mmengine would skip both)."""
    path = make_student_checkpoint(tmp_path / 'student.pth')
    ckpt = torch.load(path, weights_only=True)
    ckpt['state_dict']['backbone.layers.0.attn.gamma1.weight'] = torch.ones(96)
    torch.save(ckpt, tmp_path / 'extra.pth')
    with pytest.raises(
            PretrainedMismatchError,
            match=r'1 unexpected \[layers\.0\.attn\.gamma1\.weight'):
        _tiny_backbone(SHIPPED['ft-b'], tmp_path / 'extra.pth')
    narrow = make_student_checkpoint(
        tmp_path / 'narrow.pth',
        arch=dict(
            embed_dims=64, num_layers=4, num_heads=2,
            feedforward_channels=256))
    with pytest.raises(
            PretrainedMismatchError,
            match=r'shape mismatches .*cls_token \(1, 1, 64\) vs '
            r'\(1, 1, 96\)'):
        _tiny_backbone(SHIPPED['ade20k'], narrow)


def test_allow_leaves_named_keys_to_init(tmp_path):
    """MAE-style global pooling (final_norm=False): the student's final norm
    has no place, the pooled-feature norm is new; allow names exactly those."""
    path = make_student_checkpoint(tmp_path / 'student.pth')
    cfg_kw = dict(allow=r'^ln[12]\.')
    cfg = Config.fromfile(osp.join(ROOT, SHIPPED['ft-b']))
    bb = cfg.model.backbone
    bb.update(
        arch=dict(TINY_ARCH),
        patch_size=8,
        img_size=64,
        out_type='avg_featmap',
        final_norm=False)
    bb.init_cfg = dict(bb.init_cfg, checkpoint=path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(bb)
        with pytest.raises(
                PretrainedMismatchError,
                match=r'2 of \d+ target tensors missing '
                r'\[ln2.bias, ln2.weight\]; 2 unexpected'):
            model.init_weights()
        bb.init_cfg.update(cfg_kw)
        model = MODELS.build(bb)
    model.init_weights()
    student = _student(path)
    state = model.state_dict()
    for k, v in student.items():
        if not k.startswith('ln1.'):
            assert torch.equal(state[k], v), k
    assert torch.equal(state['ln2.weight'], torch.ones(96))


def test_unknown_init_cfg_key_is_an_error(student_files):
    with pytest.raises(PretrainedMismatchError, match=r"unknown \['strict'\]"):
        _tiny_backbone(SHIPPED['ft-b'], student_files['raw'], strict=False)


@pytest.mark.parametrize('task', list(DEMO))
def test_demo_model_loads_the_raw_pretraining_checkpoint(
        student_files, task, tmp_path):
    """The demo twins' whole models (classifier, UperNet, Mask R-CNN) with the
    raw checkpoint, through the model's own init_weights as the runner calls
    it; the log says every tensor was loaded."""
    from mmengine.logging import MMLogger
    cfg = Config.fromfile(osp.join(ROOT, DEMO[task]))
    cfg.model.backbone.init_cfg.checkpoint = student_files['raw']
    log_file = tmp_path / 'init.log'
    MMLogger.get_instance(f'strict_{task}', log_file=str(log_file))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    student = _student(student_files['raw'])
    grid = tuple(model.backbone.patch_resolution)
    _assert_is_student(model.backbone, student, grid)
    log = log_file.read_text()
    assert (f'StrictPretrainedViT: loaded all {len(student)} backbone tensors '
            f'from {student_files["raw"]}') in log
    assert 'do not match exactly' not in log


@pytest.mark.slow
def test_train_stops_with_one_error_line_before_training(
        tmp_path, shapes_imagenet):
    """tools/train.py with the demo fine-tuning config and a checkpoint that
    lacks a tensor: exit status 1, one ``ERROR:`` line naming file and key, no
    traceback, no training iteration."""
    path = make_student_checkpoint(tmp_path / 'student.pth')
    ckpt = torch.load(path, weights_only=True)
    del ckpt['state_dict']['backbone.pos_embed']
    bad = tmp_path / 'no_pos_embed.pth'
    torch.save(ckpt, bad)
    opts = [f'model.backbone.init_cfg.checkpoint={bad}'] + [
        f'{split}_dataloader.dataset.data_root={shapes_imagenet}'
        for split in ('train', 'val', 'test')
    ]
    proc = subprocess.run([
        sys.executable, 'tools/train.py', DEMO['ft'], '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *opts
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith('ERROR:')]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert str(bad) in errors[0] and 'missing [pos_embed]' in errors[0]
    assert 'Traceback' not in proc.stderr
    assert 'Iter(train)' not in proc.stdout + proc.stderr


def test_preflight_names_a_missing_pretrained_file(tmp_path):
    """tools/train.py's config check: a missing pretrained file fails before
    datasets and model are built, naming the config key."""
    from mmhybrid.engine.preflight import ConfigError, check_train_config
    cfg = Config.fromfile(osp.join(ROOT, DEMO['ft']))
    missing = str(tmp_path / 'nope.pth')
    cfg.model.backbone.init_cfg.checkpoint = missing
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    assert (f'model.backbone.init_cfg.checkpoint={missing!r}: pretrained '
            'checkpoint unusable: file not found') in str(err.value)
