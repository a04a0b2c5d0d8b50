"""The model index (``model-index.yml`` and ``configs/**/metafile.yml``)
against the config files: what ``mim search`` lists and ``mim train`` resolves.

Every pretraining and downstream config is a model of the index under its own
file name (a flagship's short name, e.g. ``configs/hybrid_vitb.py``, is its
``Alias``); the CPU miniatures under a ``demo/`` folder and the ``_base_``
pieces are not models. The rule lives here once: the packaging tests and
``tools/check_metafile.py`` (the lint's ``metafile`` hook) both call
:func:`check_model_index`.
"""
import glob
import os.path as osp
from typing import Dict, List

import yaml

# folders of configs that are not models of the index
NOT_MODELS = ('_base_', 'demo')


def _rel(path: str, root: str) -> str:
    return osp.relpath(path, root).replace(osp.sep, '/')


def shipped_configs(root: str) -> List[str]:
    """Every config under ``configs/`` that must be a model of the index.

    Args:
        root (str): The repository root (holds ``configs/``).

    Returns:
        list[str]: Paths relative to ``root`` (``/``-separated), sorted; the
        ``_base_`` pieces and the ``demo/`` miniatures left out.
    """
    out = []
    for path in glob.glob(
            osp.join(root, 'configs', '**', '*.py'), recursive=True):
        rel = _rel(path, root)
        if not set(rel.split('/')) & set(NOT_MODELS):
            out.append(rel)
    return sorted(out)


def metafiles(root: str) -> List[str]:
    """Every ``configs/**/metafile.yml``, relative to ``root``, sorted."""
    return sorted(
        _rel(p, root) for p in glob.glob(
            osp.join(root, 'configs', '**', 'metafile.yml'), recursive=True))


def load_models(root: str) -> List[Dict]:
    """The ``Models`` entries of every metafile, in file order.

    Args:
        root (str): The repository root.

    Returns:
        list[dict]: Each entry as written, with ``_metafile`` (its file,
        relative to ``root``) added.
    """
    models = []
    for metafile in metafiles(root):
        with open(osp.join(root, metafile)) as f:
            content = yaml.safe_load(f) or {}
        for model in content.get('Models') or []:
            models.append(dict(model, _metafile=metafile))
    return models


def check_model_index(root: str) -> List[str]:
    """Whether the model index and the config files agree.

    Checked: ``model-index.yml`` imports exactly the
    ``configs/**/metafile.yml`` files; every model's ``Config`` (and
    ``Alias``) exists; every shipped config (see :func:`shipped_configs`) is
    some model's ``Config`` or ``Alias``; a model's ``Name`` is its config's
    file name, lower case, and unique; every ``Downstream`` entry names a
    model.

    Args:
        root (str): The repository root (holds ``model-index.yml`` and
            ``configs/``).

    Returns:
        list[str]: One line per problem, naming the file, the key and the
        value and what was expected; empty when all agree.
    """
    problems = []
    index_file = osp.join(root, 'model-index.yml')
    found = metafiles(root)
    if not osp.isfile(index_file):
        problems.append(f'model-index.yml: not found in {root}; expected '
                        f'`Import:` listing {found}')
    else:
        with open(index_file) as f:
            imports = (yaml.safe_load(f) or {}).get('Import') or []
        for name in sorted(set(imports) - set(found)):
            problems.append(f'model-index.yml: Import {name!r} does not '
                            'exist (expected a configs/**/metafile.yml)')
        for name in sorted(set(found) - set(imports)):
            problems.append(f'model-index.yml: {name} is not in Import '
                            '(mim would not see its models)')

    models = load_models(root)
    names = [m.get('Name') for m in models]
    listed = set()
    for model in models:
        where = f"{model['_metafile']}: model {model.get('Name')!r}"
        for key in ('Config', 'Alias'):
            if key not in model:
                if key == 'Config':
                    problems.append(f'{where}: no Config (expected the '
                                    'path of its config file)')
                continue
            listed.add(model[key])
            if not osp.isfile(osp.join(root, model[key])):
                problems.append(f'{where}: {key} {model[key]} does not '
                                'exist')
        if 'Config' in model:
            stem = osp.splitext(osp.basename(model['Config']))[0]
            if model.get('Name') != stem:
                problems.append(f'{where}: Name is not the file name of its '
                                f'Config ({stem!r})')
        if model.get('Name') != str(model.get('Name')).lower():
            problems.append(f'{where}: Name is not lower case (mim search '
                            'looks names up in lower case)')
        if names.count(model.get('Name')) > 1:
            problems.append(f'{where}: Name is listed '
                            f'{names.count(model.get("Name"))} times')
        for down in model.get('Downstream') or []:
            if down not in names:
                problems.append(f'{where}: Downstream {down!r} is not a '
                                'model of the index')
    for config in shipped_configs(root):
        if config not in listed:
            problems.append(
                f'{config}: not in any configs/**/metafile.yml (add a model '
                'with Name: its file name, Config: this path, Results: null, '
                'Weights: null)')
    # each duplicated name once is enough
    return list(dict.fromkeys(problems))
