"""tools/model_converters: strict key checks, position-embedding resizing, the
converted weights inside each downstream model, and the timm export checked
numerically against mmpretrain's ViT."""
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmhybrid import converters
from mmhybrid.utils import load_checkpoint_file
from mmhybrid.vit_checkpoints import ViTArch
from .conftest import (DEMO, DEMO_TARGET, ROOT, TINY_ARCH,
                       make_student_checkpoint)


def _backbone(path):
    sd = load_checkpoint_file(path)['state_dict']
    return {
        k[len('backbone.'):]: v
        for k, v in sd.items() if k.startswith('backbone.')
    }


def test_convert_without_config_keeps_every_tensor(synthetic_student,
                                                   tmp_path):
    dst = tmp_path / 'out.pth'
    report = converters.convert_to_mmpretrain(
        synthetic_student,
        str(dst),
        img_size=64,
        num_heads=TINY_ARCH['num_heads'])
    assert report['missing'] == [] and report['unexpected'] == []
    assert report['pos_embed'] == dict(src_grid=[8, 8], dst_grid=[8, 8])
    out = load_checkpoint_file(dst)
    assert set(out) == {'state_dict', 'meta'}
    src = _backbone(synthetic_student)
    assert set(out['state_dict']) == set(src)  # neck dropped, no prefix
    for k, v in src.items():
        assert torch.equal(out['state_dict'][k], v), k
    assert report['arch']['embed_dims'] == 96
    assert report['arch']['num_layers'] == 4
    assert report['arch']['final_norm'] and not report['arch']['pre_norm']


@pytest.mark.parametrize('task', list(DEMO))
def test_converted_weights_load_into_each_demo_model(synthetic_student,
                                                     tmp_path, task):
    """Convert against the demo config, build that config's whole model (the
    mmpretrain classifier / mmseg UperNet / mmdet Mask R-CNN) and run its
    ``init_weights``: every backbone tensor equals the converted one (zero
    missing keys), and the log reports no key mismatch."""
    from mmengine.logging import MMLogger
    from mmengine.registry import MODELS
    dst = tmp_path / f'{task}.pth'
    report = converters.convert_to_mmpretrain(
        synthetic_student,
        str(dst),
        config=osp.join(ROOT, DEMO[task]),
        target=DEMO_TARGET[task])
    assert report['missing'] == [] and report['unexpected'] == []
    # the report names the source grid, not the resized one
    assert report['pos_embed']['src_grid'] == [8, 8]
    assert report['allowed_missing'] == [] and report['dropped'] == []
    converted = load_checkpoint_file(dst)['state_dict']

    cfg = Config.fromfile(osp.join(ROOT, DEMO[task]))
    cfg.model.backbone.init_cfg.checkpoint = str(dst)
    log_file = tmp_path / 'init.log'
    MMLogger.get_instance(f'convert_{task}', log_file=str(log_file))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    log = log_file.read_text()
    assert f'Loads checkpoint by local backend from path: {dst}' in log
    assert 'do not match exactly' not in log
    assert 'Resize the pos_embed' not in log  # resized by the converter
    state = model.backbone.state_dict()
    assert set(state) == set(converted)
    for k, v in converted.items():
        assert torch.equal(state[k], v), k
    expected_grid = {'ft': 8, 'linear': 8, 'ade20k': 8, 'coco': 12}[task]
    assert report['pos_embed']['dst_grid'] == [expected_grid] * 2


def test_pos_embed_resized_like_mmpretrain(synthetic_student, tmp_path):
    """224 -> 512-style resize (here 64 -> 128 px, 8x8 -> 16x16 grid): [CLS]
    untouched, the grid equal to mmpretrain's bicubic resize, and what a ViT
    built at the new size computes from the original checkpoint (its own hook
    at load time) is what it computes from the converted one."""
    from mmpretrain.models import VisionTransformer
    from mmpretrain.models.utils import resize_pos_embed
    dst = tmp_path / 'r.pth'
    report = converters.convert_to_mmpretrain(
        synthetic_student,
        str(dst),
        img_size=128,
        target='mmseg',
        num_heads=TINY_ARCH['num_heads'])
    assert report['pos_embed'] == dict(src_grid=[8, 8], dst_grid=[16, 16])
    src = _backbone(synthetic_student)
    out = load_checkpoint_file(dst)['state_dict']
    assert out['pos_embed'].shape == (1, 1 + 16 * 16, 96)
    assert torch.equal(out['pos_embed'][:, :1], src['pos_embed'][:, :1])
    ref = resize_pos_embed(src['pos_embed'], (8, 8), (16, 16), 'bicubic', 1)
    torch.testing.assert_close(out['pos_embed'], ref)

    vit = VisionTransformer(arch=TINY_ARCH, img_size=128, patch_size=8)
    vit.load_state_dict(dict(src))  # mmpretrain's hook resizes on load
    x = torch.randn(1, 3, 128, 128)
    vit.eval()
    with torch.no_grad():
        a = vit(x)[0]
        vit.load_state_dict(out)
        b = vit(x)[0]
    torch.testing.assert_close(a, b)
    # shrinking works too (the demo ADE20K slide windows are smaller)
    small = converters.resize_pos_embed(src['pos_embed'], (6, 6))
    assert small.shape == (1, 37, 96)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    path = make_student_checkpoint(tmp_path / 's.pth')
    sd = torch.load(path, weights_only=True)
    del sd['state_dict']['backbone.layers.2.attn.qkv.weight']
    sd['state_dict']['backbone.extra_token'] = torch.zeros(1, 1, 96)
    bad = tmp_path / 'bad.pth'
    torch.save(sd, bad)
    with pytest.raises(converters.ConversionError) as err:
        converters.convert_to_mmpretrain(
            str(bad), str(tmp_path / 'o.pth'), img_size=64, num_heads=3)
    msg = str(err.value)
    assert 'missing keys (1): layers.2.attn.qkv.weight' in msg
    assert 'unexpected keys (1): extra_token' in msg
    assert not (tmp_path / 'o.pth').exists()


def test_shape_mismatch_against_config_is_named(tmp_path):
    """A 4-block, 64-wide student against the 96-wide demo config."""
    path = make_student_checkpoint(
        tmp_path / 'narrow.pth',
        arch=dict(
            embed_dims=64, num_layers=4, num_heads=2,
            feedforward_channels=256))
    with pytest.raises(
            converters.ConversionError,
            match=r'shape mismatches .*cls_token \(1, 1, 64\) vs '
            r'\(1, 1, 96\)'):
        converters.convert_to_mmpretrain(
            path, str(tmp_path / 'o.pth'), config=osp.join(ROOT, DEMO['ft']))


def test_final_norm_off_needs_allow(synthetic_student, tmp_path):
    """A global-pool head without the final norm (MAE-style fine-tuning): the
    strict check names ln1 (unused) and ln2 (new); --allow accepts exactly
    those."""
    cfg = Config.fromfile(osp.join(ROOT, DEMO['ft']))
    cfg.model.backbone.out_type = 'avg_featmap'
    cfg.model.backbone.final_norm = False
    path = str(tmp_path / 'avgpool.py')
    cfg.dump(path)
    with pytest.raises(converters.ConversionError) as err:
        converters.convert_to_mmpretrain(
            synthetic_student, str(tmp_path / 'o.pth'), config=path)
    assert re.search(r'missing keys \(2\): ln2.bias, ln2.weight',
                     str(err.value))
    assert re.search(r'unexpected keys \(2\): ln1.bias, ln1.weight',
                     str(err.value))
    report = converters.convert_to_mmpretrain(
        synthetic_student,
        str(tmp_path / 'o.pth'),
        config=path,
        allow=r'^ln[12]\.')
    assert report['allowed_missing'] == ['ln2.bias', 'ln2.weight']
    assert report['dropped'] == ['ln1.bias', 'ln1.weight']


def test_cli_exit_status_and_report(synthetic_student, tmp_path, capsys):
    dst = tmp_path / 'cli.pth'
    assert converters.main(
        'mmdet',
        [synthetic_student,
         str(dst), '--img-size', '96', '--num-heads', '3']) == 0
    out = capsys.readouterr().out
    assert 'missing keys: 0, unexpected keys: 0' in out
    assert 'pos_embed [8, 8] -> [12, 12]' in out
    assert dst.is_file()
    # a checkpoint with teacher weights, a missing file: status 1, a reason
    assert converters.main(
        'mmseg', [str(tmp_path / 'nope.pth'),
                  str(tmp_path / 'x.pth')]) == 1
    assert 'not found' in capsys.readouterr().err
    sd = torch.load(synthetic_student, weights_only=True)
    sd['state_dict']['teacher_feat.cls_token'] = torch.zeros(1)
    torch.save(sd, tmp_path / 't.pth')
    assert converters.main('mmpretrain',
                           [str(tmp_path / 't.pth'),
                            str(tmp_path / 'x.pth')]) == 1
    assert 'teacher' in capsys.readouterr().err


class _Payload:
    """Unpickling this would create a file: the converter must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_code_in_pickle_is_refused_and_never_runs(synthetic_student, tmp_path,
                                                  capsys):
    marker = tmp_path / 'pwned'
    sd = torch.load(synthetic_student, weights_only=True)
    sd['x'] = _Payload(marker)
    torch.save(sd, tmp_path / 'evil.pth')
    assert converters.main(
        'mmpretrain', [str(tmp_path / 'evil.pth'),
                       str(tmp_path / 'x.pth')]) == 1
    assert 'refused to load' in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / 'x.pth').exists()


@pytest.fixture(scope='module')
def vitb_student():
    """State dict of the flagship student (configs/hybrid_vitb.py)."""
    from mmpretrain.registry import MODELS
    pre = Config.fromfile(osp.join(ROOT, 'configs/hybrid_vitb.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        student = MODELS.build(pre.model.backbone)
    return student.state_dict()


@pytest.mark.parametrize(
    'config',
    [
        'mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb128-coslr-100e_in1k.py',  # noqa: E501
        'mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb2048-linear-coslr-90e_in1k.py',  # noqa: E501
        'mmseg/upernet_vit-base-p16_hybrid-distill-300e-pre_8xb2-160k_ade20k-512x512.py',  # noqa: E501
        'mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py',  # noqa: E501
    ])
def test_vitb_student_fits_the_flagship_configs(vitb_student, config):
    """The ViT-B/16 student of configs/hybrid_vitb.py (224 px) against each
    flagship config's backbone: zero missing/unexpected keys once the position
    embedding is resized (14 -> 14, 32 or 64 patches a side)."""
    sd = dict(vitb_student)
    config = osp.join(ROOT, 'configs', 'benchmarks', config)
    target_cfg = converters.backbone_cfg_from_config(config)
    target = converters.build_backbone(target_cfg)
    grid = tuple(target.patch_embed.init_out_size)
    assert grid == {
        224: (14, 14),
        512: (32, 32),
        1024: (64, 64)
    }[target.img_size[0]]
    sd['pos_embed'] = converters.resize_pos_embed(sd['pos_embed'], grid)
    kept, allowed, dropped = converters.check_against(sd, target.state_dict(),
                                                      config)
    assert len(kept) == len(
        target.state_dict()) and not allowed and not dropped


def test_timm_export_matches_mmpretrain_numerically(synthetic_student,
                                                    tmp_path):
    """The .safetensors export loads strictly into timm's VisionTransformer and
    gives mmpretrain's [CLS] features; timm's own reader maps it back."""
    from mmpretrain.models import VisionTransformer
    from safetensors.torch import load_file
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from mmhybrid.vit_checkpoints import convert_vit_state_dict
    dst = tmp_path / 'student.safetensors'
    report = converters.convert_to_timm(
        synthetic_student, str(dst), img_size=64, num_heads=3)
    assert report['missing'] == [] and report['unexpected'] == []
    tensors = load_file(str(dst))
    assert 'blocks.3.mlp.fc2.weight' in tensors and 'norm.weight' in tensors
    assert not any(
        k.startswith(('backbone.', 'neck.', 'layers.')) for k in tensors)

    timm_vit = TimmViT(**report['timm_kwargs'])
    result = timm_vit.load_state_dict(tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    mm_vit = VisionTransformer(arch=TINY_ARCH, img_size=64, patch_size=8)
    mm_vit.load_state_dict(_backbone(synthetic_student), strict=True)
    timm_vit.eval()
    mm_vit.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = mm_vit(x)[0]
        got = timm_vit(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    # round trip through mmhybrid's timm reader
    back, fmt = convert_vit_state_dict(tensors, 'timm')
    assert fmt == 'timm'
    src = _backbone(synthetic_student)
    assert set(back) == set(src)
    for k in src:
        assert torch.equal(back[k], src[k]), k


def test_timm_export_resizes_and_names_vit_base(tmp_path):
    """A ViT-B/16 student at 224 px gets the timm name vit_base_patch16_224; a
    64 px tiny one exported at 96 px gets a 12x12 position grid."""
    arch = ViTArch(
        embed_dims=768,
        num_layers=12,
        num_heads=12,
        feedforward_channels=3072,
        patch_size=(16, 16),
        grid=(14, 14),
        qkv_bias=True,
        patch_bias=True,
        pre_norm=False,
        final_norm=True,
        fc_norm=False,
        layer_scale=False)
    assert converters.timm_model_name(arch, 224) == 'vit_base_patch16_224'
    path = make_student_checkpoint(tmp_path / 's.pth', perturb=False)
    report = converters.convert_to_timm(
        path, str(tmp_path / 'o.safetensors'), img_size=96, num_heads=3)
    assert report['pos_embed'] == dict(src_grid=[8, 8], dst_grid=[12, 12])
    with pytest.raises(converters.ConversionError, match='safetensors'):
        converters.convert_to_timm(path, str(tmp_path / 'o.pth'))
