"""The preflight check and the constructors apply the same checks: the same
input gives the same problems, keys relative to the component that raises
(``HybridViT``, ``HybridDistill``, ``FrozenTeacher``,
``ProgressiveMaskingHook``) instead of full config keys.

And one rule for remote checkpoint locations: ``s3://`` is refused alike by
preflight, the teacher and the checkpoint reader; ``http(s)://`` is accepted by
all.
"""
import copy

import pytest
from mmengine.config import Config
from mmpretrain.registry import HOOKS, MODELS

from mmhybrid.engine.preflight import ConfigError, check_train_config
from mmhybrid.testing import tiny_hybrid_cfg
from mmhybrid.utils.checkpoint import (CheckpointError, is_url,
                                       load_checkpoint_file,
                                       unsupported_location, url_scheme)

MEMBERS = ('model.teacher_feat.', 'model.teacher_rel.', 'model.backbone.',
           'model.')


def preflight_lines(model_cfg, hooks=()):
    """Every problem preflight reports, one ``key=value: message`` each."""
    cfg = Config(
        dict(
            model=copy.deepcopy(model_cfg),
            custom_hooks=copy.deepcopy(list(hooks))))
    try:
        check_train_config(cfg)
    except ConfigError as e:
        return str(e).split('\n  ')[1:]
    return []


def relative(line, prefix):
    """A preflight line with the component's config prefix taken out."""
    assert line.startswith(prefix), line
    return line.replace(prefix, '')


def build_error(build, *args):
    with pytest.raises((ValueError, CheckpointError)) as info:
        build(*args)
    return str(info.value)


def assert_agree(model_cfg, owner, prefix, hooks=(), build=None):
    """Preflight's problems, made relative to ``prefix``, are exactly what the
    constructor of ``owner`` raises with, in the same order."""
    lines = preflight_lines(model_cfg, hooks)
    assert lines, 'preflight found nothing'
    if build is None:
        msg = build_error(MODELS.build, copy.deepcopy(model_cfg))
    else:
        msg = build_error(build)
    assert msg == f'{owner}: ' + '; '.join(
        relative(ln, prefix) for ln in lines)
    return lines


def test_a_good_config_has_no_problems_anywhere():
    cfg = tiny_hybrid_cfg(relation_pairs=[(0, 0), (2, 2)], mask_ratio=0.5)
    assert preflight_lines(cfg) == []
    MODELS.build(copy.deepcopy(cfg))


@pytest.mark.parametrize(
    'pairs',
    [
        [(0, 0), (7, 1), (0, 0), (1, 9)],  # student, duplicate, teacher
        [],
        [(0, 0), (1, )],
        [(0, 'x')],
    ])
def test_relation_pairs(pairs):
    lines = assert_agree(
        tiny_hybrid_cfg(relation_pairs=pairs), 'HybridDistill', 'model.')
    assert all(ln.startswith('model.relation_pairs') for ln in lines)


def test_relation_pairs_report_every_problem_once():
    cfg = tiny_hybrid_cfg(relation_pairs=[(0, 0), (7, 1), (0, 0), (1, 9)])
    assert preflight_lines(cfg) == [
        'model.relation_pairs[1]=(7, 1): student block 7 out of range '
        '[0, 3) (model.backbone has 3 blocks)',
        'model.relation_pairs[2]=(0, 0): duplicate layer pair',
        'model.relation_pairs[3]=(1, 9): teacher block 9 out of range '
        '[0, 3) (model.teacher_rel.backbone has 3 blocks)'
    ]


def test_width_and_neck():
    # a 5-head relation teacher cannot take the 48-wide student's q/k, and
    # the neck starts from the wrong width
    cfg = tiny_hybrid_cfg(
        rel_arch=dict(
            embed_dims=40, num_layers=3, num_heads=5, feedforward_channels=80))
    cfg['neck']['in_channels'] = 64
    lines = assert_agree(cfg, 'HybridDistill', 'model.')
    assert len(lines) == 2
    assert 'cannot be re-split into the 5 heads' in lines[0]
    assert lines[1] == ('model.neck.in_channels=64: the student width '
                        '(model.backbone.arch) is 48')


def test_teacher_patch_grid():
    cfg = tiny_hybrid_cfg()
    cfg['teacher_rel']['backbone'].update(img_size=32, patch_size=4)
    lines = assert_agree(cfg, 'HybridDistill', 'model.')
    assert lines[0].startswith('model.teacher_rel.backbone.img_size=32: '
                               'gives a (8, 8) patch grid, the student a '
                               '(4, 4): token masking needs the same grid')


@pytest.mark.parametrize('ratio', [1.5, -0.1, 0.99, 'half'])
def test_model_mask_ratio(ratio):
    # 0.99 of 16 patches keeps round(0.16) = 0 tokens
    lines = assert_agree(
        tiny_hybrid_cfg(mask_ratio=ratio), 'HybridDistill', 'model.')
    assert lines[0].startswith(f'model.mask_ratio={ratio!r}: ')


def _with(key, value):
    cfg = tiny_hybrid_cfg()
    *path, last = key.split('.')
    node = cfg
    for k in path:
        node = node[k]
    node[last] = value
    return cfg


@pytest.mark.parametrize('key,value,owner,prefix,line', [
    ('backbone.img_size', 36, 'HybridViT', 'model.backbone.',
     'model.backbone.img_size=36: not divisible by '
     'model.backbone.patch_size=8'),
    ('neck.out_channels', 32, 'HybridDistill', 'model.',
     'model.neck.out_channels=32: the feature teacher width '
     '(model.teacher_feat.backbone.arch) is 48'),
    ('mask_ratio', 1.5, 'HybridDistill', 'model.',
     'model.mask_ratio=1.5: mask ratio must be in [0, 1)'),
])
def test_one_problem(key, value, owner, prefix, line):
    assert assert_agree(_with(key, value), owner, prefix) == [line]


@pytest.mark.parametrize('key,value,owner,prefix', [
    ('loss_feat', dict(type='FeatureDistillLoss', loss_type='l3'),
     'FeatureDistillLoss', 'model.loss_feat.'),
    ('loss_rel', dict(type='RelationDistillLoss', loss_type='js'),
     'RelationDistillLoss', 'model.loss_rel.'),
    ('importance_source', 'cls', 'HybridDistill', 'model.'),
    ('token_selection', 'random', 'HybridDistill', 'model.'),
    ('teacher_feat.autocast_dtype', 'fp8', 'FrozenTeacher',
     'model.teacher_feat.'),
    ('teacher_rel.checkpoint_format', 'jax', 'FrozenTeacher',
     'model.teacher_rel.'),
])
def test_one_of_choices(key, value, owner, prefix):
    lines = assert_agree(_with(key, value), owner, prefix)
    assert len(lines) == 1 and ': expected one of (' in lines[0]


@pytest.mark.parametrize('name,value', [('final_ratio', 1.0),
                                        ('start_ratio', -0.5),
                                        ('schedule', 'exp'), ('end_iter', 5)])
def test_hook_options(name, value):
    # end_iter 5 with start_iter 10: the ramp would end before it starts
    hooks = [
        dict(type='ProgressiveMaskingHook', start_iter=10, **{name: value})
    ]
    lines = preflight_lines(tiny_hybrid_cfg(), hooks)
    msg = build_error(HOOKS.build, copy.deepcopy(hooks[0]))
    assert msg == 'ProgressiveMaskingHook: ' + '; '.join(
        relative(ln, 'custom_hooks[0].') for ln in lines)
    assert len(lines) == 1
    assert lines[0].startswith(f'custom_hooks[0].{name}={value!r}: ')


@pytest.mark.parametrize('path', [
    '/nonexistent/clip_b16.pth', 's3://bucket/clip_b16.pth',
    'petrel://bucket/clip_b16.pth', 'cluster1:s3://bucket/clip_b16.pth'
])
def test_teacher_file(path):
    cfg = tiny_hybrid_cfg(teacher_feat_ckpt=path)
    lines = assert_agree(cfg, 'FrozenTeacher', 'model.teacher_feat.')
    assert lines[0].startswith(f'model.teacher_feat.checkpoint={path!r}: ')


def test_teacher_file_that_is_a_directory(tmp_path):
    cfg = tiny_hybrid_cfg(teacher_rel_ckpt=str(tmp_path))
    lines = assert_agree(cfg, 'FrozenTeacher', 'model.teacher_rel.')
    assert lines[0].endswith('teacher checkpoint unusable: not a file')


def test_s3_is_refused_in_one_line_by_every_reader():
    path = 's3://bucket/clip_b16.pth'
    reason = unsupported_location(path)
    assert reason == ('s3:// is not supported here: checkpoints are read '
                      'from local paths and http(s):// URLs only; copy the '
                      'file to local disk first')
    [line] = preflight_lines(tiny_hybrid_cfg(teacher_rel_ckpt=path))
    assert line == f'model.teacher_rel.checkpoint={path!r}: {reason}'
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    assert str(info.value) == f'{path}: {reason}'


def test_http_teachers_pass_both_and_are_fetched_at_init():
    url = 'https://example.com/weights/clip_b16.pth'
    cfg = tiny_hybrid_cfg(teacher_feat_ckpt=url)
    assert preflight_lines(cfg) == []
    model = MODELS.build(copy.deepcopy(cfg))
    assert model.teacher_feat.checkpoint == url


def test_one_scheme_rule():
    assert url_scheme('/data/x.pth') is None
    assert url_scheme('relative/x.pth') is None
    assert url_scheme('HTTPS://host/x.pth') == 'https'
    assert url_scheme('cluster1:s3://b/x.pth') == 's3'
    assert is_url('http://host/x.pth') and is_url('https://host/x.pth')
    assert not is_url('s3://b/x.pth') and not is_url('/data/x.pth')
    assert unsupported_location('https://host/x.pth') is None
    assert unsupported_location('/data/x.pth') is None
