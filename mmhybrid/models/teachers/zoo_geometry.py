"""A ``ZooTeacher`` config's geometry without its weights, for the preflight
check: width, blocks, heads, patch grid, [CLS].

The teacher is built on PyTorch's ``meta`` device: mmpretrain resolves the
model name or config and builds its own backbone class, and no memory is
allocated for the weights (a ViT-g costs what a ViT-T does) and nothing is
downloaded.
"""
from typing import Any, List, Optional, Tuple

import torch

from ...utils.problems import Problem
from ...utils.sizes import as_pair
from ..utils.config_checks import TeacherGeometry, ViTGeometry


def zoo_teacher_geometry(
        cfg: Any, key: str) -> Tuple[Optional[TeacherGeometry], List[Problem]]:
    """Resolve a teacher config that is not a ``FrozenTeacher``.

    Args:
        cfg (Any): The teacher config (``dict(type='ZooTeacher', model=...)``).
        key (str): Its config key, e.g. ``'model.teachers.dinov2.teacher'``.

    Returns:
        tuple: The geometry (None when it cannot be resolved) and the problems
        found (an unknown model name, a backbone mmhybrid cannot read, ...),
        each naming ``key``.
    """
    from mmpretrain.registry import MODELS
    try:
        with torch.device('meta'):
            teacher = MODELS.build(cfg)
    except Exception as e:  # the builder's own one-line reason
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        # the teacher's own message names the model already
        said = f"model={cfg.get('model')!r}: "
        if said in reason:
            reason = reason.split(said, 1)[1]
        return None, [
            Problem(f'{key}.model', cfg.get('model'),
                    f'cannot build this teacher: {reason}')
        ]
    return built_teacher_geometry(teacher, cfg, key), []


def built_teacher_geometry(teacher, cfg: Any, key: str) -> TeacherGeometry:
    """A built ``ZooTeacher``'s geometry (its own properties; it may be
    resized), ``cfg``'s ``model`` and ``key`` naming it in messages."""
    vit = ViTGeometry(
        dims=teacher.embed_dims,
        layers=teacher.num_layers,
        heads=teacher.num_heads,
        grid=tuple(teacher.grid),
        arch=cfg.get('model'),
        img_size=teacher.img_size)
    return TeacherGeometry(vit, as_pair(teacher.patch_size),
                           bool(teacher.has_cls), True, f'{key}.img_size')
