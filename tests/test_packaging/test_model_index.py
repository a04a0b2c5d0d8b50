"""model-index.yml and configs/**/metafile.yml: what ``mim search`` shows and
``mim train/test`` resolve.

Every pretraining and downstream config is a model of the index (the CPU demo
configs under ``demo/`` and the ``_base_`` pieces are not), under its own file
name; a flagship's short name (``configs/hybrid_vitb.py``) is the model's
``Alias``, a one-line ``_base_`` of its scheme-named config. Adding, renaming
or removing a config without updating the metafile fails here.
"""
import ast
import glob
import os.path as osp
import re

import pytest
import yaml
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _rel(path):
    return osp.relpath(path, ROOT).replace(osp.sep, '/')


def _shipped_configs():
    """Every config under configs/ except _base_ pieces and the CPU demos."""
    out = []
    for path in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                          recursive=True):
        parts = _rel(path).split('/')
        if '_base_' in parts or 'demo' in parts:
            continue
        out.append(_rel(path))
    return sorted(out)


def _metafiles():
    return sorted(
        _rel(p) for p in glob.glob(
            osp.join(ROOT, 'configs', '**', 'metafile.yml'), recursive=True))


def _models():
    models = []
    for metafile in _metafiles():
        with open(osp.join(ROOT, metafile)) as f:
            models += yaml.safe_load(f).get('Models', [])
    return models


MODELS = _models()


def _alias_target(path):
    """The ``_base_`` a config file consists of, or None if it is more than
    that one assignment."""
    with open(osp.join(ROOT, path)) as f:
        body = ast.parse(f.read()).body
    if (len(body) == 1 and isinstance(body[0], ast.Assign)
            and [getattr(t, 'id', None) for t in body[0].targets] == ['_base_']
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        return osp.normpath(osp.join(osp.dirname(path),
                                     body[0].value.value)).replace(
                                         osp.sep, '/')
    return None


def test_model_index_imports_every_metafile():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    assert sorted(index['Import']) == _metafiles()
    assert _metafiles(), 'no configs/**/metafile.yml'


def test_every_non_demo_config_is_listed():
    listed = set()
    for m in MODELS:
        listed.add(m['Config'])
        if 'Alias' in m:
            listed.add(m['Alias'])
    missing = sorted(set(_shipped_configs()) - listed)
    assert not missing, (
        f'configs not in any configs/**/metafile.yml: {missing}; add a model '
        '(Name: the file name, Config, Results: null, Weights: null) for each')


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_listed_config_exists_and_builds(model):
    assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
    cfg = Config.fromfile(osp.join(ROOT, model['Config']))
    assert 'mmhybrid' in cfg.get('custom_imports', {}).get('imports', [])
    assert 'model' in cfg and 'train_dataloader' in cfg


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_model_entry_follows_the_openmmlab_metafile(model):
    # the name mim shows and the file it trains are the same
    assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
    assert model['Name'] == model['Name'].lower()  # mim search --config
    assert model['In Collection'] == 'HybridDistill'
    # nothing trained yet: no made-up numbers, no dead links
    assert 'Results' in model and model['Results'] is None
    assert 'Weights' in model and model['Weights'] is None
    for name in model.get('Downstream', []):
        assert name in {m['Name'] for m in MODELS}, name


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_metadata_matches_the_config(model):
    """Batch size and schedule in the metafile are the config's, and the
    name's ``NxbB`` is the config's per-GPU batch."""
    cfg = Config.fromfile(osp.join(ROOT, model['Config']))
    meta = model['Metadata']
    gpus, per_gpu = map(int,
                        re.search(r'(\d+)xb(\d+)', model['Name']).groups())
    assert cfg.train_dataloader.batch_size == per_gpu
    assert meta['Batch Size'] == gpus * per_gpu
    assert re.match(rf'{gpus}x (\S+ )?GPUs$', meta['Training Resources'])
    assert ('Epochs' in meta) != ('Iterations' in meta)
    if 'Epochs' in meta:
        dataset = cfg.train_dataloader.dataset
        times = dataset.times if dataset.type == 'RepeatDataset' else 1
        assert cfg.train_cfg.max_epochs * times == meta['Epochs']
    else:
        assert cfg.train_cfg.max_iters == meta['Iterations']


ALIASED = [m for m in MODELS if 'Alias' in m]


def test_flagships_keep_their_short_names():
    assert {m['Alias'] for m in ALIASED} >= {'configs/hybrid_vitb.py',
                                            'configs/hybrid_vitl.py'}


@pytest.mark.parametrize('model', ALIASED, ids=[m['Name'] for m in ALIASED])
def test_alias_is_a_one_line_base_of_the_scheme_name(model):
    config, alias = model['Config'], model['Alias']
    assert config != alias
    assert (_alias_target(config) == alias
            or _alias_target(alias) == config), (
        f'one of {config} and {alias} must be only `_base_ = ` the other')
    a = Config.fromfile(osp.join(ROOT, config))
    b = Config.fromfile(osp.join(ROOT, alias))
    assert a.to_dict() == b.to_dict()


def test_config_file_names_are_unique_in_the_package():
    """``mim train mmhybrid NAME.py`` (a path that does not exist where it is
    run) looks the file name up anywhere in the installed package, configs
    and tools included, and refuses a name found twice."""
    seen = {}
    for top in ('configs', 'tools', 'mmhybrid'):
        for path in glob.glob(osp.join(ROOT, top, '**', '*.py'),
                              recursive=True):
            if '/.mim/' in path.replace(osp.sep, '/'):
                continue
            seen.setdefault(osp.basename(path), []).append(_rel(path))
    clashes = {
        _rel(p): seen[osp.basename(p)]
        for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                           recursive=True)
        if len(seen[osp.basename(p)]) > 1
    }
    assert not clashes, clashes


def test_mim_reads_the_index():
    """The index as mim reads it (modelindex, what ``mim search`` calls)."""
    from modelindex.load_model_index import load
    index = load(osp.join(ROOT, 'model-index.yml'))
    assert sorted(m.name for m in index.models) == sorted(
        m['Name'] for m in MODELS)
    (collection, ) = index.collections
    assert collection.paper['URL'] == 'https://arxiv.org/abs/2306.15876'
    assert collection.paper['Title'].startswith('Hybrid Distillation')
