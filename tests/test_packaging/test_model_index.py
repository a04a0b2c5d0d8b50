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
import shutil

import pytest
from mmengine.config import Config

from mmhybrid.utils.metafile import check_model_index, load_models, metafiles

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

MODELS = load_models(ROOT)


def _rel(path):
    return osp.relpath(path, ROOT).replace(osp.sep, '/')


def _alias_target(path):
    """The ``_base_`` a config file consists of, or None if it is more than
    that one assignment."""
    with open(osp.join(ROOT, path)) as f:
        body = ast.parse(f.read()).body
    if (len(body) == 1 and isinstance(body[0], ast.Assign)
            and [getattr(t, 'id', None)
                 for t in body[0].targets] == ['_base_']
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        return osp.normpath(osp.join(osp.dirname(path),
                                     body[0].value.value)).replace(
                                         osp.sep, '/')
    return None


def test_the_index_and_the_configs_agree():
    """The rule the lint's metafile hook runs (tools/check_metafile.py)."""
    assert metafiles(ROOT), 'no configs/**/metafile.yml'
    problems = check_model_index(ROOT)
    assert not problems, '\n'.join(problems)


@pytest.fixture
def index_copy(tmp_path):
    """A copy of model-index.yml and configs/ to break."""
    shutil.copy(osp.join(ROOT, 'model-index.yml'), tmp_path)
    shutil.copytree(
        osp.join(ROOT, 'configs'),
        tmp_path / 'configs',
        ignore=shutil.ignore_patterns('__pycache__'))
    assert check_model_index(str(tmp_path)) == []
    return tmp_path


def test_an_unlisted_config_is_named(index_copy):
    (index_copy / 'configs' / 'benchmarks' / 'mmseg' /
     'new_in1k.py').write_text("_base_ = './x.py'\n")
    # a CPU miniature is not a model of the index
    (index_copy / 'configs' / 'demo' / 'tiny_shapes.py').write_text('a = 1\n')
    assert check_model_index(str(index_copy)) == [
        'configs/benchmarks/mmseg/new_in1k.py: not in any '
        'configs/**/metafile.yml (add a model with Name: its file name, '
        'Config: this path, Results: null, Weights: null)'
    ]


def test_a_listed_config_that_is_gone_is_named(index_copy):
    config = MODELS[-1]['Config']
    (index_copy / config).unlink()
    assert check_model_index(str(index_copy)) == [
        f"configs/metafile.yml: model {MODELS[-1]['Name']!r}: Config "
        f'{config} does not exist'
    ]


def test_a_renamed_model_and_a_dangling_downstream_are_named(index_copy):
    metafile = index_copy / 'configs' / 'metafile.yml'
    upstream = next(m for m in MODELS if m.get('Downstream'))
    down = upstream['Downstream'][0]
    metafile.write_text(metafile.read_text().replace(f'Name: {down}\n',
                                                     f'Name: {down}-v2\n'))
    problems = check_model_index(str(index_copy))
    assert sorted(problems) == sorted([
        f"configs/metafile.yml: model '{down}-v2': Name is not the file "
        f"name of its Config ('{down}')",
        f"configs/metafile.yml: model {upstream['Name']!r}: Downstream "
        f"'{down}' is not a model of the index",
    ])


def test_a_metafile_missing_from_the_index_is_named(index_copy):
    (index_copy / 'model-index.yml').write_text('Import: []\n')
    assert check_model_index(str(index_copy)) == [
        'model-index.yml: configs/metafile.yml is not in Import (mim would '
        'not see its models)'
    ]


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_listed_config_exists_and_builds(model):
    assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
    cfg = Config.fromfile(osp.join(ROOT, model['Config']))
    assert 'mmhybrid' in cfg.get('custom_imports', {}).get('imports', [])
    assert 'model' in cfg and 'train_dataloader' in cfg


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_model_entry_follows_the_openmmlab_metafile(model):
    # the name mim shows is its file's (the index rule checks it)
    assert model['In Collection'] == 'HybridDistill'
    # nothing trained yet: no made-up numbers, no dead links
    assert 'Results' in model and model['Results'] is None
    assert 'Weights' in model and model['Weights'] is None


@pytest.mark.parametrize('model', MODELS, ids=[m['Name'] for m in MODELS])
def test_metadata_matches_the_config(model):
    """Batch size and schedule in the metafile are the config's, and the name's
    ``NxbB`` is the config's per-GPU batch."""
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
    assert {m['Alias']
            for m in ALIASED
            } >= {'configs/hybrid_vitb.py', 'configs/hybrid_vitl.py'}


@pytest.mark.parametrize('model', ALIASED, ids=[m['Name'] for m in ALIASED])
def test_alias_is_a_one_line_base_of_the_scheme_name(model):
    config, alias = model['Config'], model['Alias']
    assert config != alias
    assert (
        _alias_target(config) == alias or _alias_target(alias) == config), (
            f'one of {config} and {alias} must be only `_base_ = ` the other')
    a = Config.fromfile(osp.join(ROOT, config))
    b = Config.fromfile(osp.join(ROOT, alias))
    assert a.to_dict() == b.to_dict()


def test_config_file_names_are_unique_in_the_package():
    """``mim train mmhybrid NAME.py`` (a path that does not exist where it is
    run) looks the file name up anywhere in the installed package, configs and
    tools included, and refuses a name found twice."""
    seen = {}
    for top in ('configs', 'tools', 'mmhybrid'):
        for path in glob.glob(
                osp.join(ROOT, top, '**', '*.py'), recursive=True):
            if '/.mim/' in path.replace(osp.sep, '/'):
                continue
            seen.setdefault(osp.basename(path), []).append(_rel(path))
    clashes = {
        _rel(p): seen[osp.basename(p)]
        for p in glob.glob(
            osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
        if len(seen[osp.basename(p)]) > 1
    }
    assert not clashes, clashes


def test_mim_reads_the_index():
    """The index as mim reads it (modelindex, what ``mim search`` calls)."""
    from modelindex.load_model_index import load
    index = load(osp.join(ROOT, 'model-index.yml'))
    assert sorted(m.name for m in index.models) == sorted(m['Name']
                                                          for m in MODELS)
    (collection, ) = index.collections
    assert collection.paper['URL'] == 'https://arxiv.org/abs/2306.15876'
    assert collection.paper['Title'].startswith('Hybrid Distillation')
