"""hybrid2mmseg.py against mmseg's own MAE protocol (the config MAE's 48.1 mIoU
comes from) and its BEiT backbone: the converted file, given to mmseg's shipped
config as ``model.pretrained``, puts the student into every backbone tensor but
layer scale and relative-position tables; the qkv-bias split is exact; targets
the converter cannot handle are one ``ERROR:`` line naming the type."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mmhybrid import converters
from .conftest import TINY_ARCH, make_student_checkpoint

MAE_CFG = 'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'
BEIT_CFG = 'mmseg::beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py'
TINY_MMSEG = dict(
    embed_dims=96, num_layers=4, num_heads=3, mlp_ratio=4, patch_size=8)
OWN = ('gamma_1', 'gamma_2', 'relative_position_bias_table',
       'relative_position_index')


def _shipped(spec):
    """The config file mmseg ships (site-packages/mmseg/.mim/configs)."""
    import mmseg
    path = osp.join(
        osp.dirname(mmseg.__file__), '.mim', 'configs',
        spec.split('::')[1])
    assert osp.isfile(path), path
    return path


def _tiny(spec, img_size=(128, 128)):
    """mmseg's shipped config with the tiny student's arch (in memory)."""
    cfg = Config.fromfile(_shipped(spec))
    cfg.model.backbone.update(
        TINY_MMSEG, img_size=img_size, out_indices=[0, 1, 2, 3])
    cfg.model.neck.embed_dim = 96
    cfg.model.decode_head.update(in_channels=[96] * 4, channels=32)
    cfg.model.auxiliary_head.update(in_channels=96, channels=32)
    return cfg


def _student(path):
    sd = torch.load(path, weights_only=True)['state_dict']
    return {
        k[len('backbone.'):]: v
        for k, v in sd.items() if k.startswith('backbone.')
    }


def _checkpoint(path, **zero):
    """A tiny student checkpoint; ``zero`` names parts set to 0 (``q_bias``,
    ``pos_embed``) to isolate one conversion step."""
    make_student_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    sd = ckpt['state_dict']
    if zero.get('q_bias'):
        for k in [k for k in sd if k.endswith('attn.qkv.bias')]:
            sd[k][:TINY_ARCH['embed_dims']] = 0
    if zero.get('pos_embed'):
        sd['backbone.pos_embed'].zero_()
    torch.save(ckpt, path)
    return str(path)


def _convert_and_init(src, dst, config):
    """Convert ``src`` against the tiny version of an mmseg config, set only
    ``model.pretrained`` and build and initialise that segmentor."""
    cfg = _tiny(config)
    report = converters.convert_to_mmpretrain(
        src, str(dst), config=cfg, target='mmseg')
    cfg.model.pretrained = str(dst)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
        model.init_weights()
    return report, model


def test_shipped_mae_config_starts_from_the_student(tmp_path):
    """Convert against mmseg's MAE UperNet config, set only model.pretrained,
    build the segmentor and run its init_weights: every backbone tensor but
    layer scale / relative-position tables is the student's (pos_embed resized
    8x8 -> 16x16)."""
    src = _checkpoint(tmp_path / 'student.pth')
    report, model = _convert_and_init(src, tmp_path / 'mae_mmseg.pth', MAE_CFG)
    assert report['backbone_type'] == 'MAE'
    assert report['pos_embed'] == dict(src_grid=[8, 8], dst_grid=[16, 16])
    assert report['dropped'] == ['ln1.bias', 'ln1.weight']  # final_norm=False
    assert report['notes'] == []
    student = _student(src)
    state = model.backbone.state_dict()
    from mmpretrain.models.utils import resize_pos_embed
    own = 0
    for k, v in state.items():
        if k.endswith(OWN):
            own += 1
            if k.endswith(('gamma_1', 'gamma_2')):
                assert torch.equal(v, torch.ones_like(v)), k  # init_values=1
            elif k.endswith('relative_position_bias_table'):
                assert not v.any(), k  # MAE: zero-initialised
            continue
        expected = student[k]
        if k == 'pos_embed':
            expected = resize_pos_embed(expected, (8, 8), (16, 16), 'bicubic',
                                        1)
        assert torch.equal(v, expected), k
    assert own == 4 * 4


@pytest.mark.parametrize(
    'backbone,qv_bias', [('MAE', None), ('BEiT', True), ('BEiT', False)],
    ids=['MAE', 'BEiT', 'BEiT-no-qv-bias'])
def test_converted_mmseg_backbone_computes_the_student(tmp_path, backbone,
                                                       qv_bias):
    """Numerical proof of the qkv-bias handling: with layer scale 1 and zero
    relative-position tables, mmseg's backbone with the converted weights gives
    the student's features.

    MAE: the whole qkv bias. BEiT: q/v bias split, key
    bias dropped (a per-query constant softmax ignores; the student's key bias
    is far from zero). BEiT without q/v bias: value bias folded into the
    projection, key bias dropped (the student's query bias is zero here, as
    that target has no place for it; a note says so otherwise). BEiT has no
    absolute position embedding: the student's is zero here.
    """
    from mmpretrain.models import VisionTransformer
    zero = dict(pos_embed=backbone == 'BEiT', q_bias=qv_bias is False)
    src = _checkpoint(tmp_path / 'student.pth', **zero)
    student = _student(src)
    k_bias = student['layers.0.attn.qkv.bias'][96:192]
    assert k_bias.abs().max() > 0.05

    # the shipped config's backbone (LayerNorm eps 1e-6, as the student's)
    cfg = _tiny(MAE_CFG if backbone == 'MAE' else BEIT_CFG, (64, 64))
    cfg = dict(cfg.model.backbone, init_values=1.0, drop_path_rate=0.0)
    if qv_bias is not None:
        cfg['qv_bias'] = qv_bias
    with DefaultScope.overwrite_default_scope('mmseg'):
        target = MODELS.build(cfg)
    target.init_weights()
    kept, _, dropped, notes = converters.fit_mmseg_beit(student, target, 'x')
    assert notes == []
    assert 'pos_embed' in (dropped if backbone == 'BEiT' else kept)
    target.load_state_dict(kept, strict=False)
    with torch.no_grad():
        for layer in target.layers:
            layer.attn.relative_position_bias_table.zero_()
    vit = VisionTransformer(
        arch=TINY_ARCH,
        img_size=64,
        patch_size=8,
        out_type='featmap',
        out_indices=[0, 1, 2, 3],
        final_norm=False)
    vit.load_state_dict({
        k: v
        for k, v in student.items() if not k.startswith('ln1.')
    })
    target.eval()
    vit.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for got, ref in zip(target(x), vit(x)):
            torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
        # and the key bias alone: softmax(q (k + b)^T) == softmax(q k^T)
        q, k = torch.randn(2, 3, 65, 32), torch.randn(2, 3, 65, 32)
        b = torch.randn(32) * 3
        torch.testing.assert_close((q @ (k + b).transpose(-2, -1)).softmax(-1),
                                   (q @ k.transpose(-2, -1)).softmax(-1))


def test_lost_query_bias_is_named(tmp_path):
    """BEiT without q/v bias cannot hold a non-zero query bias: the report says
    so, block by block."""
    student = _student(_checkpoint(tmp_path / 'student.pth'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        target = MODELS.build(
            dict(type='BEiT', img_size=64, qv_bias=False, **TINY_MMSEG))
    _, _, _, notes = converters.fit_mmseg_beit(student, target, 'x')
    assert notes == [
        'the target has no q bias: the query bias of blocks '
        '[0, 1, 2, 3] is not representable (value bias folded '
        'into attn.proj.bias, key bias dropped, both exactly)'
    ]


def test_shipped_beit_config_covers_every_tensor(tmp_path):
    """mmseg's BEiT (q_bias / v_bias): every tensor but layer scale and
    relative-position tables from the student; pos_embed, which BEiT has no
    place for, is listed."""
    src = _checkpoint(tmp_path / 'student.pth')
    report, model = _convert_and_init(src, tmp_path / 'beit.pth', BEIT_CFG)
    assert report['backbone_type'] == 'BEiT'
    assert 'pos_embed' in report['dropped']
    assert report['notes'] == []
    student = _student(src)
    state = model.backbone.state_dict()
    for k, v in state.items():
        m = k.split('.')
        if k.endswith(OWN):
            continue
        if k.endswith(('attn.q_bias', 'attn.v_bias')):
            part = slice(0, 96) if k.endswith('q_bias') else slice(192, 288)
            expected = student[f'layers.{m[1]}.attn.qkv.bias'][part]
        else:
            expected = student[k]
        assert torch.equal(v, expected), k


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('ERROR: '), err
    assert 'Traceback' not in err
    return lines[0]


def test_shipped_mae_config_builds_in_its_scope(tmp_path, capsys):
    """The unmodified ViT-B config by its mmseg:: name: MAE is built as mmseg's
    backbone (it used to be mmpretrain's MAE algorithm: a TypeError traceback);
    the tiny student does not fit it, which is one ERROR line."""
    src = make_student_checkpoint(tmp_path / 's.pth')
    assert converters.main(
        'mmseg', [src, str(tmp_path / 'o.pth'), '--config', MAE_CFG]) == 1
    line = _one_error_line(capsys)
    assert 'MAE' in line and 'shape mismatches' in line
    assert 'cls_token (1, 1, 96) vs (1, 1, 768)' in line


@pytest.mark.parametrize('backbone,expected', [
    ("dict(type='ResNetV1c', depth=18)",
     'the target backbone ResNetV1c (mmseg.models.backbones.resnet) is not '
     'one the converters handle'),
    ("dict(type='NoSuchBackbone')",
     "cannot build the target backbone 'NoSuchBackbone' (scope 'mmseg')"),
])
def test_unsupported_target_is_one_error_line(tmp_path, capsys, backbone,
                                              expected):
    src = make_student_checkpoint(tmp_path / 's.pth')
    config = tmp_path / 'seg.py'
    config.write_text(f"default_scope = 'mmseg'\nmodel = dict(backbone="
                      f'{backbone})\n')
    assert converters.main(
        'mmseg', [src, str(tmp_path / 'o.pth'), '--config',
                  str(config)]) == 1
    assert expected in _one_error_line(capsys)
    assert not (tmp_path / 'o.pth').exists()


def test_unreadable_config_is_one_error_line(tmp_path, capsys):
    src = make_student_checkpoint(tmp_path / 's.pth')
    for config, expected in ((str(tmp_path / 'nope.py'),
                              'cannot read the config'),
                             ('mmseg::mae/nope.py',
                              'no such config in mmseg')):
        assert converters.main(
            'mmseg', [src, str(tmp_path / 'o.pth'), '--config', config]) == 1
        line = _one_error_line(capsys)
        assert expected in line and 'nope.py' in line
