"""The checks of a HybridDistill model, each once, as pure functions.

Each returns the :class:`~mmhybrid.utils.problems.Problem` list of its input
(empty when it is fine). The model's constructors raise on them
(``HybridViT``, ``HybridDistill``); :mod:`mmhybrid.engine.preflight` calls the
same functions on the config, before anything is built, with ``prefix``
making the keys full config keys (``'model.'``), and reports every problem at
once. The mask-ratio check lives next to the keep count it guards
(:func:`~.token_masking.mask_ratio_problems`); the teacher file check next to
the download (:func:`~mmhybrid.utils.teacher_files.teacher_file_problems`).
"""
import inspect
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from ...utils.problems import Problem
from ...utils.sizes import as_pair


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
                           prefix: str = '') -> List[Problem]:
    """Relation pairs: a non-empty list of distinct ``(student block,
    teacher block)``, each block in range. None means
    :func:`default_relation_pairs`.

    Args:
        pairs (Sequence | None): As configured.
        student_layers (int): Blocks of the student (``backbone``).
        teacher_layers (int): Blocks of the relation teacher.
        prefix (str): Prepended to the keys, e.g. ``'model.'``.
    """
    key = f'{prefix}relation_pairs'
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
                    f'({prefix}teacher_rel.backbone has {teacher_layers} '
                    'blocks)'))
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
