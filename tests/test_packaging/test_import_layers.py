"""The package's import graph has no cycle and no arrow pointing up.

The graph is read from the source with :mod:`ast` (nothing is imported):
every ``import`` and ``from ... import`` at module level *and* inside
functions, relative or absolute, plus ``importlib.import_module('mmhybrid.x')``
with a literal name. An edge goes to the deepest module of ``mmhybrid`` that
the statement names (``from ..downstream import match_keys`` is an edge to
``mmhybrid.downstream``, the package's ``__init__``; ``from .. import version``
to ``mmhybrid.version``).

:data:`LAYERS` is the one statement of the layer order. A module belongs to
the entry with the longest matching prefix; it may import its own layer and
the layers below, never one above:

* ``mmhybrid.version`` is the floor: the version and the dependency check that
  runs first on ``import mmhybrid``; it imports nothing of the package.
* ``mmhybrid.utils``: checkpoint files, the allow-list, problems, constants.
* ``mmhybrid.vit_checkpoints``: ViT checkpoint I/O (layouts, architecture off
  the weights, strict loads and key reports) for teachers, downstream,
  converters and analysis; it imports ``utils`` only.
* ``mmhybrid.models`` and ``mmhybrid.datasets``: the components a config
  builds (mmpretrain's rule: ``models`` never imports ``engine`` or ``apis``);
  siblings, as in mmpretrain.
* ``mmhybrid.engine``: runners, hooks, optimizers, the stack fixes.
* ``mmhybrid.downstream`` and ``mmhybrid.converters``: what follows a
  pretraining run (fine-tuning loads, checkpoint conversion).
* ``mmhybrid.apis``: the entry points' rules (``tools/train.py`` ...).
* ``mmhybrid.analysis``: the attention analysis of any ViT (metrics, report,
  checkpoint loading, k-NN, training plots).
* ``mmhybrid.miniature``: the CPU miniature (``make demo``, ``make study``)
  built on all of the above: its data, stages, measures and pipeline.
* ``mmhybrid`` itself (its ``__init__``): imports the parts to register them;
  nothing in the package imports it (``from mmhybrid import __version__``
  would be an upward edge: use ``mmhybrid.version``).

``mmhybrid.testing`` (helpers for the test suite) sits outside the layers: it
may import anything, and nothing else in the package may import it.
"""
import ast
import os
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = 'mmhybrid'
ROOT = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), PACKAGE)

#: the layer order, lowest first; names in one entry share a layer
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ('mmhybrid.version', ),
    ('mmhybrid.utils', ),
    ('mmhybrid.vit_checkpoints', ),
    ('mmhybrid.models', 'mmhybrid.datasets'),
    ('mmhybrid.engine', ),
    ('mmhybrid.downstream', 'mmhybrid.converters'),
    ('mmhybrid.apis', ),
    ('mmhybrid.analysis', ),
    ('mmhybrid.miniature', ),
    ('mmhybrid', ),
)
#: imported by nothing in the package but itself
TEST_HELPERS = 'mmhybrid.testing'

# an edge: (importer, imported, 'path:line')
Edge = Tuple[str, str, str]


def find_modules(root: str, package: str) -> Dict[str, Tuple[str, bool]]:
    """Module name -> (file, is a package ``__init__``) under ``root``."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith('.') and d != '__pycache__')
        for name in files:
            if not name.endswith('.py'):
                continue
            rel = osp.relpath(osp.join(folder, name), osp.dirname(root))
            parts = rel[:-3].split(os.sep)
            is_pkg = parts[-1] == '__init__'
            if is_pkg:
                parts = parts[:-1]
            found['.'.join(parts)] = (osp.join(folder, name), is_pkg)
    assert package in found, f'{root} has no {package}/__init__.py'
    return found


def _named(node: ast.AST, module: str, is_pkg: bool) -> List[str]:
    """The dotted names one import node (or import_module call) names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split('.') if is_pkg else module.split('.')[:-1]
            base = base[:len(base) - node.level + 1]
            stem = '.'.join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ''
        # 'from a import b': b may be a submodule or a name defined in a
        return [f'{stem}.{alias.name}' for alias in node.names] + [stem]
    if (isinstance(node, ast.Call) and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and getattr(node.func, 'attr', getattr(node.func, 'id',
                                                   None)) == 'import_module'):
        return [node.args[0].value]
    return []


def _deepest_module(name: str, modules: Dict[str, Tuple[str, bool]]) -> str:
    while name and name not in modules:
        name = name.rpartition('.')[0]
    return name


def import_graph(root: str, package: str = PACKAGE) -> Dict[str, List[Edge]]:
    """Every module's imports of other modules of ``package``.

    Returns:
        dict: Importer -> list of ``(importer, imported, 'file:line')``.
    """
    modules = find_modules(root, package)
    graph = {name: [] for name in modules}
    for name, (path, is_pkg) in modules.items():
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            named = _named(node, name, is_pkg)
            if isinstance(node, ast.ImportFrom):
                # the submodule when 'b' is one, else the module 'a' itself
                subs = [n for n in named[:-1] if n in modules]
                named = subs if len(
                    subs) == len(named) - 1 else subs + [named[-1]]
            targets = {_deepest_module(n, modules) for n in named}
            where = f'{osp.relpath(path, osp.dirname(root))}:{node.lineno}' \
                if named else ''
            for target in sorted(targets):
                if target and target != name and (
                        target == package or target.startswith(package + '.')):
                    graph[name].append((name, target, where))
    return graph


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix naming ``module``."""
    best, best_len = -1, -1
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + '.')) and \
                    len(prefix) > best_len and (prefix != PACKAGE
                                                or module == PACKAGE):
                best, best_len = index, len(prefix)
    return best


def _layer_name(module: str) -> str:
    return '/'.join(LAYERS[layer_of(module)])


def layer_problems(graph: Dict[str, List[Edge]]) -> List[str]:
    """One line per unplaced module, upward edge or import of the helpers."""
    problems = []
    for module in sorted(graph):
        if module.startswith(TEST_HELPERS):
            continue
        if layer_of(module) < 0:
            problems.append(f'{module} is in no layer: add its package to '
                            'LAYERS in tests/test_packaging/'
                            'test_import_layers.py')
            continue
        for src, dst, where in graph[module]:
            if dst == TEST_HELPERS or dst.startswith(TEST_HELPERS + '.'):
                problems.append(f'{where}: {src} imports the test helpers '
                                f'{dst}')
            elif layer_of(dst) > layer_of(src):
                problems.append(
                    f'{where}: {src} ({_layer_name(src)}) imports {dst} '
                    f'({_layer_name(dst)}), a higher layer')
    return problems


def cycles(graph: Dict[str, List[Edge]]) -> List[List[str]]:
    """The strongly connected components with more than one module (each holds
    at least one import cycle), each sorted (Tarjan's algorithm)."""
    succ: Dict[str, Set[str]] = defaultdict(set)
    for edges in graph.values():
        for src, dst, _ in edges:
            succ[src].add(dst)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found = []

    def visit(node: str) -> None:
        # iterative: the graph may be deeper than Python's recursion limit
        work = [(node, iter(sorted(succ[node])))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ[child]))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _cycle_edges(graph: Dict[str, List[Edge]], component: List[str]) -> str:
    members = set(component)
    return '; '.join(f'{s} -> {d} ({w})' for m in component
                     for s, d, w in graph[m] if d in members)


# ------------------------------------------------ the checker checks itself
def _write(root, files: Dict[str, str]) -> str:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root / PACKAGE)


def test_checker_sees_function_level_relative_and_absolute_imports(tmp_path):
    root = _write(
        tmp_path, {
            'mmhybrid/__init__.py':
            'from . import engine\n',
            'mmhybrid/utils/__init__.py':
            '',
            'mmhybrid/utils/files.py': ('def load():\n'
                                        '    from ..engine.io import read\n'),
            'mmhybrid/engine/__init__.py':
            '',
            'mmhybrid/engine/io.py': ('from mmhybrid.utils import files\n'
                                      'import mmhybrid.testing\n'),
            'mmhybrid/models/__init__.py': ('import importlib\n'
                                            'importlib.import_module('
                                            "'mmhybrid.apis')\n"),
            'mmhybrid/apis/__init__.py':
            '',
            'mmhybrid/testing/__init__.py':
            'from ..models import *\n',
            'mmhybrid/extras/__init__.py':
            '',
        })
    graph = import_graph(root)
    assert ('mmhybrid.utils.files', 'mmhybrid.engine.io',
            'mmhybrid/utils/files.py:2') in graph['mmhybrid.utils.files']
    assert cycles(graph) == [['mmhybrid.engine.io', 'mmhybrid.utils.files']]
    problems = layer_problems(graph)
    assert problems == [
        'mmhybrid/engine/io.py:2: mmhybrid.engine.io imports the test helpers '
        'mmhybrid.testing',
        'mmhybrid.extras is in no layer: add its package to LAYERS in '
        'tests/test_packaging/test_import_layers.py',
        'mmhybrid/models/__init__.py:2: mmhybrid.models (mmhybrid.models/'
        'mmhybrid.datasets) imports mmhybrid.apis (mmhybrid.apis), a higher '
        'layer',
        'mmhybrid/utils/files.py:2: mmhybrid.utils.files (mmhybrid.utils) '
        'imports mmhybrid.engine.io (mmhybrid.engine), a higher layer',
    ]


def test_from_package_import_submodule_is_an_edge_to_the_submodule(tmp_path):
    root = _write(
        tmp_path, {
            'mmhybrid/__init__.py': '',
            'mmhybrid/utils/__init__.py': 'from .. import version\n',
            'mmhybrid/version.py': 'from mmhybrid import utils\n',
            'mmhybrid/engine/__init__.py': 'from mmhybrid import __version__',
        })
    graph = import_graph(root)
    assert [d for _, d, _ in graph['mmhybrid.utils']] == ['mmhybrid.version']
    assert [d for _, d, _ in graph['mmhybrid.engine']] == ['mmhybrid']
    assert cycles(graph) == [['mmhybrid.utils', 'mmhybrid.version']]
    assert len(layer_problems(graph)) == 2  # version -> utils, engine -> root


# --------------------------------------------------------- the real package
@pytest.fixture(scope='module')
def graph():
    found = import_graph(ROOT)
    assert len(found) > 50, f'only {len(found)} modules found under {ROOT}'
    return found


def test_package_has_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, 'import cycles: ' + ' | '.join(
        _cycle_edges(graph, c) for c in found)


def test_package_imports_point_down_the_layers(graph):
    problems = layer_problems(graph)
    assert not problems, '\n'.join(problems)
