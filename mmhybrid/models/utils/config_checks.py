"""The checks of a HybridDistill model, each once, as pure functions.

Each returns the :class:`~mmhybrid.utils.problems.Problem` list of its input
(empty when it is fine). The model's constructors raise on them
(``HybridViT``; ``HybridDistill`` through the one call
:func:`hybrid_distill_problems`); :mod:`mmhybrid.engine.preflight` calls the
same functions on the config, before anything is built, with ``prefix``
making the keys full config keys (``'model.'``), and reports every problem at
once. The mask-ratio check lives next to the keep count it guards
(:func:`~.token_masking.mask_ratio_problems`); the teacher file check next to
the download (:func:`~mmhybrid.utils.teacher_files.teacher_file_problems`).
"""
import inspect
import math
from numbers import Real
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ...utils.problems import Problem, choice_problems
from ...utils.sizes import as_pair
from .token_masking import SELECTIONS, mask_ratio_problems

#: whose last-block [CLS] attention ranks the tokens: Tc's or Tm's
IMPORTANCE_SOURCES = ('feat', 'rel')
#: HybridDistill's losses, by their config key
LOSS_KEYS = ('loss_feat', 'loss_rel')


def vit_default(name: str) -> Any:
    """The default of a ``VisionTransformer`` argument (``img_size`` 224,
    ``patch_size`` 16, ``arch`` ``'base'``): what a config without the key
    gets."""
    from mmpretrain.models import VisionTransformer
    return inspect.signature(VisionTransformer).parameters[name].default


class ViTGeometry(NamedTuple):
    """What the distillation checks need of one ViT.

    Attributes:
        dims (int): Width.
        layers (int): Blocks.
        heads (int): Attention heads.
        grid (tuple[int, int] | None): Patch grid, None when the image size
            is not a multiple of the patch size.
        arch (Any): The configured ``arch``, as given (for messages).
        img_size (Any): The configured ``img_size``, as given.
    """
    dims: int
    layers: int
    heads: int
    grid: Optional[Tuple[int, int]]
    arch: Any
    img_size: Any


def patch_grid(img_size: Any, patch_size: Any) -> Optional[Tuple[int, int]]:
    """``img_size / patch_size`` per side, None if a side does not divide."""
    img, patch = as_pair(img_size), as_pair(patch_size)
    if img[0] % patch[0] or img[1] % patch[1]:
        return None
    return (img[0] // patch[0], img[1] // patch[1])


def patch_grid_problems(img_size: Any,
                        patch_size: Any,
                        prefix: str = '') -> List[Problem]:
    """The image size must be a whole number of patches (kept-token encoding
    and the patch embedding as one matrix product need it).

    Args:
        img_size (int | tuple): As configured.
        patch_size (int | tuple): As configured.
        prefix (str): Prepended to the keys, e.g. ``'model.backbone.'``.
    """
    if patch_grid(img_size, patch_size) is not None:
        return []
    return [
        Problem(f'{prefix}img_size', img_size,
                f'not divisible by {prefix}patch_size={patch_size!r}')
    ]


def default_relation_pairs(student_layers: int,
                           teacher_layers: int) -> List[Tuple[int, int]]:
    """Every student block but the last, paired with the teacher block at the
    same relative depth (the identity when depths match: ViT-B 0..10 <->
    0..10)."""
    if student_layers < 2:
        return []
    scale = (teacher_layers - 1) / (student_layers - 1)
    return [(i, int(round(i * scale))) for i in range(student_layers - 1)]


def _block_pair(p: Any) -> Optional[Tuple[int, int]]:
    if not isinstance(p, (list, tuple)) or len(p) != 2:
        return None
    try:
        return (int(p[0]), int(p[1]))
    except (TypeError, ValueError):
        return None


def relation_pair_problems(pairs: Optional[Sequence[Sequence[int]]],
                           student_layers: int,
                           teacher_layers: int,
                           prefix: str = '',
                           key: Optional[str] = None,
                           teacher_key: Optional[str] = None) -> List[Problem]:
    """Relation pairs: a non-empty list of distinct ``(student block,
    teacher block)``, each block in range. None means
    :func:`default_relation_pairs`.

    Args:
        pairs (Sequence | None): As configured.
        student_layers (int): Blocks of the student (``backbone``).
        teacher_layers (int): Blocks of the relation teacher.
        prefix (str): Prepended to the keys, e.g. ``'model.'``.
        key (str, optional): The pairs' key. Defaults to
            ``'{prefix}relation_pairs'``.
        teacher_key (str, optional): The relation teacher, for messages.
            Defaults to ``'{prefix}teacher_rel.backbone'``.
    """
    key = key or f'{prefix}relation_pairs'
    teacher_key = teacher_key or f'{prefix}teacher_rel.backbone'
    given = pairs
    if pairs is None:
        pairs = default_relation_pairs(student_layers, teacher_layers)
    if not isinstance(pairs, (list, tuple)) or not pairs:
        return [
            Problem(
                key, given, 'expected a non-empty list of '
                '(student_block, teacher_block)')
        ]
    problems, seen = [], set()
    for i, p in enumerate(pairs):
        pair = _block_pair(p)
        if pair is None:
            problems.append(
                Problem(f'{key}[{i}]', p,
                        'expected (student_block, teacher_block)'))
            continue
        sb, tb = pair
        if not 0 <= sb < student_layers:
            problems.append(
                Problem(
                    f'{key}[{i}]', tuple(p),
                    f'student block {sb} out of range [0, {student_layers}) '
                    f'({prefix}backbone has {student_layers} blocks)'))
        if not 0 <= tb < teacher_layers:
            problems.append(
                Problem(
                    f'{key}[{i}]', tuple(p),
                    f'teacher block {tb} out of range [0, {teacher_layers}) '
                    f'({teacher_key} has {teacher_layers} blocks)'))
        if pair in seen:
            problems.append(
                Problem(f'{key}[{i}]', tuple(p), 'duplicate layer pair'))
        seen.add(pair)
    return problems


def distill_geometry_problems(student: ViTGeometry,
                              teacher_feat: Optional[ViTGeometry],
                              teacher_rel: Optional[ViTGeometry],
                              neck_in: Optional[int] = None,
                              neck_out: Optional[int] = None,
                              prefix: str = '') -> List[Problem]:
    """Widths and patch grids of the student, its neck and its teachers.

    * the student's q/k are re-split into the relation teacher's heads, so
      its width must divide into them;
    * the neck maps the student width to the feature teacher's;
    * token masking keeps the same patches in all three ViTs: one grid.

    Args:
        student (ViTGeometry): ``backbone``.
        teacher_feat (ViTGeometry | None): ``teacher_feat.backbone`` (None:
            not checked).
        teacher_rel (ViTGeometry | None): ``teacher_rel.backbone``.
        neck_in (int, optional): ``neck.in_channels``.
        neck_out (int, optional): ``neck.out_channels``.
        prefix (str): Prepended to the keys, e.g. ``'model.'``.
    """
    problems = []
    s = student
    if teacher_rel is not None and s.dims % teacher_rel.heads:
        problems.append(
            Problem(
                f'{prefix}backbone.arch', s.arch,
                f'student width {s.dims} cannot be re-split into the '
                f'{teacher_rel.heads} heads of '
                f'{prefix}teacher_rel.backbone.arch='
                f'{teacher_rel.arch!r} (width must be divisible by the head '
                'count)'))
    if neck_in is not None and neck_in != s.dims:
        problems.append(
            Problem(f'{prefix}neck.in_channels', neck_in,
                    f'the student width ({prefix}backbone.arch) is {s.dims}'))
    if teacher_feat is not None and neck_out is not None \
            and neck_out != teacher_feat.dims:
        problems.append(
            Problem(
                f'{prefix}neck.out_channels', neck_out,
                'the feature teacher width '
                f'({prefix}teacher_feat.backbone.arch) '
                f'is {teacher_feat.dims}'))
    for name, t in (('teacher_feat', teacher_feat), ('teacher_rel',
                                                     teacher_rel)):
        if t is None or s.grid is None or t.grid is None or t.grid == s.grid:
            continue
        problems.append(
            Problem(
                f'{prefix}{name}.backbone.img_size', t.img_size,
                f'gives a {t.grid} patch grid, the student a {s.grid}: token '
                'masking needs the same grid (set the teacher img_size so '
                'that img_size / patch_size matches the student, e.g. 196 '
                'for a /14 teacher)'))
    return problems


def _finite_number(value: Any) -> bool:
    return (isinstance(value, Real) and not isinstance(value, bool)
            and math.isfinite(value))


def loss_problems(losses: Mapping[str, Any],
                  prefix: str = '') -> List[Problem]:
    """Loss settings no run can mean.

    * ``loss_weight`` must be a finite number >= 0: a negative weight trains,
      silently maximising its loss; NaN or inf ruins the first step;
    * not every weight may be 0 (nothing would be trained);
    * a Smooth-L1 ``beta`` must be a finite number >= 0 (torch refuses a
      negative one at the first step).

    Only keys present in a loss config are checked: an absent one is the
    loss's default.

    Args:
        losses (Mapping[str, Any]): Config key (``'loss_feat'``) -> the loss
            config dict (None: the default loss).
        prefix (str): Prepended to the keys, e.g. ``'model.'``.
    """
    problems, weights = [], {}
    for name, cfg in losses.items():
        cfg = cfg if hasattr(cfg, 'get') else {}
        if 'loss_weight' in cfg:
            weight = cfg['loss_weight']
            key = f'{prefix}{name}.loss_weight'
            if not _finite_number(weight):
                problems.append(
                    Problem(key, weight, 'expected a finite number >= 0'))
            elif weight < 0:
                problems.append(
                    Problem(
                        key, weight, 'a negative weight maximises the loss; '
                        'expected a finite number >= 0'))
            else:
                weights[name] = weight
        if 'beta' in cfg and not (_finite_number(cfg['beta'])
                                  and cfg['beta'] >= 0):
            problems.append(
                Problem(f'{prefix}{name}.beta', cfg['beta'],
                        'expected a finite number >= 0 (Smooth-L1 threshold)'))
    if losses and len(weights) == len(losses) and not any(weights.values()):
        names = list(losses)
        problems.append(
            Problem(
                f'{prefix}{names[-1]}.loss_weight', weights[names[-1]],
                'every loss weight is 0 (' +
                ', '.join(f'{prefix}{n}.loss_weight' for n in names) +
                '): nothing would be trained; expected at least one > 0'))
    return problems


def hybrid_distill_problems(student: Optional[ViTGeometry],
                            teacher_feat: Optional[ViTGeometry],
                            teacher_rel: Optional[ViTGeometry],
                            neck_in: Optional[int] = None,
                            neck_out: Optional[int] = None,
                            relation_pairs: Optional[Sequence] = None,
                            importance_source: Any = 'feat',
                            token_selection: Any = 'sample',
                            mask_ratio: Any = 0.0,
                            loss_feat: Optional[Mapping] = None,
                            loss_rel: Optional[Mapping] = None,
                            prefix: str = '') -> List[Problem]:
    """Every check of a ``HybridDistill`` config, in one call: what its
    constructor raises on and what the preflight check reports.

    In order: the choices (``importance_source``, ``token_selection``), the
    widths and patch grids (:func:`distill_geometry_problems`), the relation
    pairs (:func:`relation_pair_problems`), the initial mask ratio
    (:func:`~.token_masking.mask_ratio_problems`) and the losses
    (:func:`loss_problems`). Geometry and pairs are checked where the ViTs
    are known (preflight leaves out a ViT it cannot resolve).

    Args:
        student (ViTGeometry | None): ``backbone``.
        teacher_feat (ViTGeometry | None): ``teacher_feat.backbone``.
        teacher_rel (ViTGeometry | None): ``teacher_rel.backbone``.
        neck_in (int, optional): ``neck.in_channels``.
        neck_out (int, optional): ``neck.out_channels``.
        relation_pairs (Sequence, optional): As configured (None: the
            default pairs).
        importance_source (Any): As configured.
        token_selection (Any): As configured.
        mask_ratio (Any): The initial mask ratio, as configured.
        loss_feat (Mapping, optional): The feature loss config.
        loss_rel (Mapping, optional): The relation loss config.
        prefix (str): Prepended to the keys, e.g. ``'model.'``.

    Returns:
        list[Problem]: Empty when the config can run.
    """
    problems = choice_problems(f'{prefix}importance_source', importance_source,
                               IMPORTANCE_SOURCES)
    problems += choice_problems(f'{prefix}token_selection', token_selection,
                                SELECTIONS)
    if student is not None:
        problems += distill_geometry_problems(student, teacher_feat,
                                              teacher_rel, neck_in, neck_out,
                                              prefix)
        if teacher_rel is not None:
            problems += relation_pair_problems(relation_pairs, student.layers,
                                               teacher_rel.layers, prefix)
    num_patches = (
        student.grid[0] *
        student.grid[1] if student is not None and student.grid else None)
    problems += mask_ratio_problems(mask_ratio, f'{prefix}mask_ratio',
                                    num_patches)
    problems += loss_problems(
        dict(zip(LOSS_KEYS, (loss_feat, loss_rel))), prefix)
    return problems


# ------------------------------------------------------------- N teachers
#: the keys of one entry of ``HybridDistill(teachers=...)``
TEACHER_ENTRY_KEYS = ('teacher', 'feature', 'relation', 'grid')
#: what a teacher whose patch grid is not the student's does
GRID_MODES = ('resize', 'interpolate')
#: which of a feature teacher's tokens are its target
FEATURE_TOKENS = ('all', 'cls', 'patches')
FEATURE_KEYS = ('neck', 'loss', 'tokens', 'norm')
#: a feature target's normalisation besides the loss's own whitening
FEATURE_NORMS = (None, 'whiten', 'standardize', 'phi-s')
RELATION_KEYS = ('loss', 'relation_pairs')


class TeacherGeometry(NamedTuple):
    """What the checks need of one built (or resolved) teacher.

    Attributes:
        vit (ViTGeometry): Width, blocks, heads, patch grid at the teacher's
            own input size, ``arch``/``img_size`` (or model name) for
            messages.
        patch (tuple[int, int]): Patch size.
        has_cls (bool): Whether it has a [CLS] token (token ranking needs
            one).
        resizable (bool): Whether it can take another input size (a
            ``ZooTeacher``; a ``FrozenTeacher``'s size is its ``img_size``).
        key (str): Where its size is configured, for messages.
    """
    vit: ViTGeometry
    patch: Tuple[int, int]
    has_cls: bool
    resizable: bool
    key: str


def importance_teacher(importance_source: Any,
                       entries: Mapping[str, Any]) -> Optional[str]:
    """The teacher whose [CLS] attention ranks the tokens.

    ``'feat'``: the first teacher with a feature target; ``'rel'``: the
    first with a relation target; otherwise a teacher's name. None when
    nothing matches.
    """
    if importance_source in ('feat', 'rel'):
        want = 'feature' if importance_source == 'feat' else 'relation'
        for name, entry in entries.items():
            if hasattr(entry, 'get') and entry.get(want) is not None:
                return name
        return None
    return importance_source if importance_source in entries else None


def teachers_problems(student: Optional[ViTGeometry],
                      entries: Any,
                      geometries: Mapping[str, TeacherGeometry],
                      importance_source: Any = 'feat',
                      prefix: str = '') -> List[Problem]:
    """The checks of ``HybridDistill(teachers=...)``: each entry's keys, its
    targets' necks and pairs, grids, the ranking teacher, the losses.

    Args:
        student (ViTGeometry | None): ``backbone`` (None: geometry not
            checked).
        entries (Any): ``teachers`` as configured: name -> ``dict(teacher=...,
            feature=dict(neck=..., loss=..., tokens='all'),
            relation=dict(loss=..., relation_pairs=None), grid='resize')``.
        geometries (Mapping[str, TeacherGeometry]): The teachers known so far
            (a teacher missing here is not checked for geometry).
        importance_source (Any): ``'feat'``, ``'rel'`` or a teacher's name.
        prefix (str): Prepended to the keys, e.g. ``'model.'``.

    Returns:
        list[Problem]: Empty when the config can run.
    """
    key = f'{prefix}teachers'
    if not hasattr(entries, 'items') or not entries:
        return [
            Problem(
                key, entries, 'expected a non-empty dict: teacher name -> '
                'dict(teacher=..., feature=... and/or relation=...)')
        ]
    problems, losses = [], {}
    for name, entry in entries.items():
        k = f'{key}.{name}'
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(
                Problem(
                    k, name, 'a teacher name must be a Python identifier '
                    '(it names losses and necks)'))
            continue
        if not hasattr(entry, 'get'):
            problems.append(Problem(k, entry, 'expected a dict'))
            continue
        problems += _unknown_keys(k, entry, TEACHER_ENTRY_KEYS)
        if entry.get('teacher') is None:
            problems.append(
                Problem(
                    f'{k}.teacher', None, 'expected a teacher config '
                    '(FrozenTeacher or ZooTeacher)'))
        feat, rel = entry.get('feature'), entry.get('relation')
        if feat is None and rel is None:
            problems.append(
                Problem(
                    k, dict(entry), 'teaches nothing: give feature=dict('
                    '...) and/or relation=dict(...)'))
        grid_mode = entry.get('grid', 'resize')
        problems += choice_problems(f'{k}.grid', grid_mode, GRID_MODES)
        geo = geometries.get(name)
        if feat is not None:
            problems += _feature_problems(f'{k}.feature', feat, student, geo)
            if hasattr(feat, 'get'):
                losses[f'{k}.feature.loss'] = feat.get('loss')
        if rel is not None:
            problems += _relation_problems(f'{k}.relation', rel, student, geo,
                                           f'{k}.teacher')
            if hasattr(rel, 'get'):
                losses[f'{k}.relation.loss'] = rel.get('loss')
        if student is not None and geo is not None:
            problems += _grid_problems(k, grid_mode, rel is not None, student,
                                       geo)
        if geo is not None and not geo.has_cls:
            problems += _no_cls_problems(k, feat, rel)
    ranker = importance_teacher(importance_source, entries)
    if ranker is None:
        problems.append(
            Problem(
                f'{prefix}importance_source', importance_source,
                "expected 'feat', 'rel' or a teacher's name: one of "
                f'{tuple(entries)}'))
    elif ranker in geometries and not geometries[ranker].has_cls:
        problems.append(
            Problem(
                f'{prefix}importance_source', importance_source,
                f'teacher {ranker!r} has no [CLS] token to rank the tokens '
                'with; name a teacher that has one'))
    problems += loss_problems({
        n: (c if c is not None else {})
        for n, c in losses.items()
    })
    return problems


def _no_cls_problems(key: str, feat: Any, rel: Any) -> List[Problem]:
    """A teacher without [CLS] (SAM-, SigLIP-style) can teach patch features
    only: relations and the other feature tokens are defined with [CLS]."""
    problems = []
    if hasattr(feat, 'get') and feat.get('tokens', 'all') != 'patches':
        problems.append(
            Problem(f'{key}.feature.tokens', feat.get('tokens', 'all'),
                    "the teacher has no [CLS] token; expected 'patches'"))
    if rel is not None:
        problems.append(
            Problem(
                f'{key}.relation', rel,
                'the teacher has no [CLS] token, which relations '
                'include; teach features of its patches only'))
    return problems


def _unknown_keys(key: str, cfg: Mapping, known: Sequence[str]):
    return [
        Problem(f'{key}.{k}', cfg[k], f'unknown key; expected {tuple(known)}')
        for k in cfg if k not in known
    ]


def _feature_problems(key: str, feat: Any, student: Optional[ViTGeometry],
                      geo: Optional[TeacherGeometry]) -> List[Problem]:
    if not hasattr(feat, 'get'):
        return [Problem(key, feat, 'expected dict(neck=..., loss=...)')]
    problems = _unknown_keys(key, feat, FEATURE_KEYS)
    problems += choice_problems(f'{key}.tokens', feat.get('tokens', 'all'),
                                FEATURE_TOKENS)
    norm = feat.get('norm')
    mode = norm.get('mode', 'phi-s') if hasattr(norm, 'get') else norm
    problems += choice_problems(f'{key}.norm', mode, FEATURE_NORMS)
    loss = feat.get('loss')
    if mode in ('standardize', 'phi-s') and hasattr(loss, 'get') \
            and loss.get('whiten_target'):
        problems.append(
            Problem(
                f'{key}.loss.whiten_target', True,
                f'the target is normalised by {key}.norm={mode!r} already; '
                'expected False (or leave it out)'))
    neck = feat.get('neck')
    if not hasattr(neck, 'get'):
        problems.append(
            Problem(
                f'{key}.neck', neck, 'expected a neck config (student '
                'width -> teacher width), e.g. DistillProjectionNeck'))
        return problems
    n_in, n_out = neck.get('in_channels'), neck.get('out_channels')
    if student is not None and n_in is not None and n_in != student.dims:
        problems.append(
            Problem(f'{key}.neck.in_channels', n_in,
                    f'the student width is {student.dims}'))
    if geo is not None and n_out is not None and n_out != geo.vit.dims:
        problems.append(
            Problem(f'{key}.neck.out_channels', n_out,
                    f'the teacher width is {geo.vit.dims}'))
    return problems


def _relation_problems(key: str, rel: Any, student: Optional[ViTGeometry],
                       geo: Optional[TeacherGeometry],
                       teacher_key: str) -> List[Problem]:
    if not hasattr(rel, 'get'):
        return [Problem(key, rel, 'expected dict(loss=..., relation_pairs=)')]
    problems = _unknown_keys(key, rel, RELATION_KEYS)
    if student is None or geo is None:
        return problems
    if student.dims % geo.vit.heads:
        problems.append(
            Problem(
                f'{key}.relation_pairs', rel.get('relation_pairs'),
                f'student width {student.dims} cannot be re-split into the '
                f'{geo.vit.heads} heads of {teacher_key} (width must be '
                'divisible by the head count)'))
    problems += relation_pair_problems(
        rel.get('relation_pairs'),
        student.layers,
        geo.vit.layers,
        key=f'{key}.relation_pairs',
        teacher_key=teacher_key)
    return problems


def _grid_problems(key: str, mode: Any, has_relation: bool,
                   student: ViTGeometry,
                   geo: TeacherGeometry) -> List[Problem]:
    s_grid = student.grid
    if s_grid is None or geo.vit.grid is None or geo.vit.grid == s_grid:
        return []
    if mode == 'interpolate':
        if has_relation:
            return [
                Problem(
                    f'{key}.grid', mode,
                    f'the teacher sees a {geo.vit.grid} patch grid, the '
                    f'student a {s_grid}: relations need the same grid; use '
                    "grid='resize'")
            ]
        return []
    if mode == 'resize' and not geo.resizable:
        return [
            Problem(
                geo.key, geo.vit.img_size,
                f'gives a {geo.vit.grid} patch grid, the student a {s_grid}: '
                'token masking needs the same grid (set the teacher img_size '
                'so that img_size / patch_size matches the student, e.g. 196 '
                "for a /14 teacher, or grid='interpolate' for features)")
        ]
    return []
