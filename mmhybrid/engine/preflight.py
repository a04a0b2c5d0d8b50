"""Check a training config before anything is built.

:func:`check_train_config` reads only the config (and stats files): no model is
built, no data is loaded, no process group is needed. Every problem is reported
with its config key and the offending value, all of them in one
:class:`ConfigError`, before the first training step. ``tools/train.py`` runs
it first. The model checks are the very functions the constructors raise on
(``HybridDistill``, ``FrozenTeacher``, ``HybridViT``,
``ProgressiveMaskingHook``; :mod:`mmhybrid.models.utils.config_checks`), so a
config built some other way meets the same rules with the same messages, keys
relative to the component instead of the config.

Checked: teacher checkpoint files and a downstream backbone's ``Pretrained``
checkpoint (missing, not a file, unreadable, truncated or corrupt), image size
vs patch size of the student and both teachers, student width vs the relation
teacher's heads (q/k re-split) and the neck widths, relation-pair block indices
(range, duplicates), mask ratios in ``[0, 1)`` and a non-zero keep count at the
final ratio, loss types and names, loss weights (finite, >= 0, not all 0) and
Smooth-L1 betas, the options of the monitoring hooks
(``AttentionDiversityHook``'s collapse threshold and window,
``KNNMonitorHook``'s k, temperature and bank size), and the dataset paths
(``data_root``, ``data_prefix``, ``ann_file``) of every dataloader that will
be used.
"""
import os.path as osp
from typing import Any, List, Optional, Sequence

from ..models.teachers.frozen_teacher import AUTOCAST_DTYPES
from ..models.utils.config_checks import (TeacherGeometry, ViTGeometry,
                                          hybrid_distill_problems, patch_grid,
                                          patch_grid_problems,
                                          teachers_problems, vit_default)
from ..models.utils.token_masking import SELECTIONS, mask_ratio_problems
from ..utils.checkpoint import probe_checkpoint, url_scheme
from ..utils.problems import Problem, choice_problems
from ..utils.sizes import as_pair
from ..utils.teacher_files import teacher_file_problems
from ..vit_checkpoints import FORMATS


class ConfigError(ValueError):
    """A config value that cannot work; the message names key and value."""


def type_name(cfg: Any) -> str:
    """The bare registered name of a config's ``type`` (a string with or
    without its scope, or a class): ``'mmpretrain.Foo'`` and ``Foo`` ->
    ``'Foo'``."""
    t = cfg.get('type', '') if hasattr(cfg, 'get') else ''
    t = t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return t.split('.')[-1]


def _is(cfg: Any, name: str) -> bool:
    return type_name(cfg) == name


def _masking_hook_problems(hook_cfg, num_patches: Optional[int],
                           prefix: str) -> List[Problem]:
    """The hook's own check of a ProgressiveMaskingHook config, the hook's
    defaults filled in (unknown keys are left to the hook's TypeError)."""
    import inspect

    # imported here: the hooks import this module's neighbours at load time
    from .hooks.progressive_masking_hook import (ProgressiveMaskingHook,
                                                 masking_schedule_problems)
    params = inspect.signature(ProgressiveMaskingHook).parameters
    options = {
        name: hook_cfg.get(name, p.default)
        for name, p in params.items()
    }
    return masking_schedule_problems(
        **options, num_patches=num_patches, prefix=prefix)


def _monitor_hook_problems(hook_cfg, prefix: str) -> List[Problem]:
    """The monitoring hooks' own check of their config, defaults filled in.

    ``AttentionDiversityHook``: collapse threshold and window, interval, ...;
    ``KNNMonitorHook``: k, temperature, bank size, ...
    """
    import inspect

    from .hooks.attention_diversity_hook import (AttentionDiversityHook,
                                                 attention_monitor_problems)
    from .hooks.knn_monitor_hook import KNNMonitorHook, knn_monitor_problems
    if _is(hook_cfg, 'AttentionDiversityHook'):
        hook, check = AttentionDiversityHook, attention_monitor_problems
    else:
        hook, check = KNNMonitorHook, knn_monitor_problems
    params = inspect.signature(hook).parameters
    wanted = inspect.signature(check).parameters
    options = {
        name: hook_cfg.get(name, p.default)
        for name, p in params.items() if name in wanted
    }
    return check(**options, prefix=prefix)


class _Checker:
    """Runs every check on the config and collects the problems: the model's
    checks are the functions its constructors raise on
    (:mod:`mmhybrid.models.utils.config_checks`,
    :func:`~mmhybrid.models.utils.config_checks.hybrid_distill_problems`,
    :func:`~mmhybrid.utils.teacher_files.teacher_file_problems`), with full
    config keys."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.errors: List[str] = []

    def err(self, key: str, value: Any, problem: str) -> None:
        self.report([Problem(key, value, problem)])

    def report(self, problems: Sequence[Problem]) -> None:
        self.errors.extend(str(p) for p in problems)

    # ------------------------------------------------------------------ ViTs
    def check_vit(self, key: str, cfg) -> Optional[ViTGeometry]:
        """Resolve a HybridViT config (dims, layers, heads, patch grid) and
        check its image size against its patch size."""
        if cfg is None or not _is(cfg, 'HybridViT'):
            return None
        from mmpretrain.models import VisionTransformer
        arch = cfg.get('arch', vit_default('arch'))
        if isinstance(arch, str):
            spec = VisionTransformer.arch_zoo.get(arch.lower())
            if spec is None:
                self.err(
                    f'{key}.arch', arch, 'unknown ViT arch; expected one '
                    f'of {sorted(VisionTransformer.arch_zoo)} or a dict')
                return None
        else:
            spec = dict(arch)
        missing = {'embed_dims', 'num_layers', 'num_heads'} - set(spec)
        if missing:
            self.err(f'{key}.arch', arch, f'missing {sorted(missing)}')
            return None
        img_size = cfg.get('img_size', vit_default('img_size'))
        patch_size = cfg.get('patch_size', vit_default('patch_size'))
        self.report(patch_grid_problems(img_size, patch_size, f'{key}.'))
        return ViTGeometry(
            dims=int(spec['embed_dims']),
            layers=int(spec['num_layers']),
            heads=int(spec['num_heads']),
            grid=patch_grid(img_size, patch_size),
            arch=arch,
            img_size=img_size)

    def check_pretrained_file(self) -> None:
        """Check a downstream backbone's ``Pretrained`` checkpoint file.

        Missing or corrupt fails here, before datasets and model are built. A
        ``scheme://`` location is left to mmengine's ``CheckpointLoader``,
        which reads it (``s3://`` through its file backends).
        """
        backbone = (self.cfg.get('model') or {}).get('backbone') or {}
        init = backbone.get('init_cfg')
        many = isinstance(init, (list, tuple))
        for i, c in enumerate(init if many else [init]):
            if not hasattr(c, 'get') or c.get('type') != 'Pretrained':
                continue
            index = f'[{i}]' if many else ''
            key = f'model.backbone.init_cfg{index}.checkpoint'
            path = c.get('checkpoint')
            if not isinstance(path, str) or not path:
                self.err(key, path, 'expected a file path or URL')
            elif url_scheme(path) is None:
                reason = probe_checkpoint(path)
                if reason is not None:
                    self.err(key, path,
                             f'pretrained checkpoint unusable: {reason}')

    # ----------------------------------------------------------------- model
    def check_model(self) -> Optional[ViTGeometry]:
        model = self.cfg.get('model')
        if model is None or not _is(model, 'HybridDistill'):
            return None
        s = self.check_vit('model.backbone', model.get('backbone'))
        if model.get('teachers') is not None:
            self.check_teachers(model, s)
            return s
        tc_cfg = model.get('teacher_feat') or {}
        tm_cfg = model.get('teacher_rel') or {}
        tc = self.check_vit('model.teacher_feat.backbone',
                            tc_cfg.get('backbone'))
        tm = self.check_vit('model.teacher_rel.backbone',
                            tm_cfg.get('backbone'))
        for name, t_cfg in (('teacher_feat', tc_cfg), ('teacher_rel', tm_cfg)):
            key = f'model.{name}'
            self.report(
                teacher_file_problems(
                    t_cfg.get('checkpoint'), f'{key}.checkpoint', read=True))
            for arg, choices in (('checkpoint_format', FORMATS),
                                 ('autocast_dtype', AUTOCAST_DTYPES)):
                if arg in t_cfg:
                    self.report(
                        choice_problems(f'{key}.{arg}', t_cfg[arg], choices))
        neck = model.get('neck') or {}
        given = {
            arg: model[arg]
            for arg in ('relation_pairs', 'importance_source',
                        'token_selection', 'mask_ratio', 'loss_feat',
                        'loss_rel') if arg in model
        }
        self.report(
            hybrid_distill_problems(
                s,
                tc,
                tm,
                neck.get('in_channels'),
                neck.get('out_channels'),
                prefix='model.',
                **given))
        self.check_losses(model)
        return s

    def check_teacher(self, key: str, cfg) -> Optional[TeacherGeometry]:
        """One teacher config of any kind: its file, its choices, and its
        geometry where it can be resolved without weights."""
        if not hasattr(cfg, 'get'):
            return None  # reported by teachers_problems
        self.report(
            teacher_file_problems(
                cfg.get('checkpoint'), f'{key}.checkpoint', read=True))
        for arg, choices in (('checkpoint_format', FORMATS),
                             ('autocast_dtype', AUTOCAST_DTYPES)):
            if arg in cfg:
                self.report(choice_problems(f'{key}.{arg}', cfg[arg], choices))
        if _is(cfg, 'FrozenTeacher'):
            vit = self.check_vit(f'{key}.backbone', cfg.get('backbone'))
            if vit is None:
                return None
            backbone = cfg.get('backbone')
            patch = as_pair(
                backbone.get('patch_size', vit_default('patch_size')))
            return TeacherGeometry(vit, patch, True, False,
                                   f'{key}.backbone.img_size')
        from ..models.teachers.zoo_geometry import zoo_teacher_geometry
        geo, problems = zoo_teacher_geometry(cfg, key)
        self.report(problems)
        return geo

    def check_teachers(self, model, s: Optional[ViTGeometry]) -> None:
        """``model.teachers``: every teacher, its targets and losses."""
        entries = model.get('teachers')
        geometries = {}
        if hasattr(entries, 'items'):
            for name, entry in entries.items():
                if hasattr(entry, 'get'):
                    geo = self.check_teacher(f'model.teachers.{name}.teacher',
                                             entry.get('teacher'))
                    if geo is not None:
                        geometries[name] = geo
        self.report(
            teachers_problems(s, entries, geometries,
                              model.get('importance_source', 'feat'),
                              'model.'))
        self.report(
            choice_problems('model.token_selection',
                            model.get('token_selection', 'sample'),
                            SELECTIONS))
        self.report(
            mask_ratio_problems(
                model.get('mask_ratio', 0.0), 'model.mask_ratio',
                self.num_patches(s)))
        if hasattr(entries, 'items'):
            for name, entry in entries.items():
                for kind in ('feature', 'relation'):
                    target = entry.get(kind) if hasattr(entry, 'get') else None
                    if hasattr(target, 'get'):
                        self.check_loss(f'model.teachers.{name}.{kind}.loss',
                                        target.get('loss'))

    @staticmethod
    def num_patches(student: Optional[ViTGeometry]) -> Optional[int]:
        """The student's patch tokens, if its grid is known."""
        if student and student.grid:
            return student.grid[0] * student.grid[1]
        return None

    def check_losses(self, model) -> None:
        for name in ('loss_feat', 'loss_rel'):
            self.check_loss(f'model.{name}', model.get(name))

    def check_loss(self, key: str, cfg) -> None:
        """A loss config: a registered type and one of its loss types."""
        from mmpretrain.registry import MODELS
        if cfg is None:
            return
        t = type_name(cfg)
        cls = MODELS.get(t) if t else None
        if cls is None:
            self.err(f'{key}.type', t, 'not a registered loss')
            return
        allowed = getattr(cls, 'LOSS_TYPES', None)
        lt = cfg.get('loss_type')
        if allowed is not None and lt is not None:
            self.report(choice_problems(f'{key}.loss_type', lt, allowed))

    # ---------------------------------------------------------------- hooks
    def check_hooks(self, student: Optional[ViTGeometry]) -> None:
        for i, h in enumerate(self.cfg.get('custom_hooks') or []):
            if _is(h, 'AttentionDiversityHook') or _is(h, 'KNNMonitorHook'):
                self.report(_monitor_hook_problems(h, f'custom_hooks[{i}].'))
            if not _is(h, 'ProgressiveMaskingHook'):
                continue
            self.report(
                _masking_hook_problems(h, self.num_patches(student),
                                       f'custom_hooks[{i}].'))

    # ----------------------------------------------------------------- data
    def check_dataset(self, key: str, ds) -> None:
        if ds is None or not hasattr(ds, 'get'):
            return
        if ds.get('dataset') is not None:  # RepeatDataset and friends
            self.check_dataset(f'{key}.dataset', ds['dataset'])
        for i, sub in enumerate(ds.get('datasets') or []):
            self.check_dataset(f'{key}.datasets[{i}]', sub)
        root = ds.get('data_root')
        if isinstance(root, str) and root and url_scheme(root) is None:
            if not osp.isdir(root):
                self.err(f'{key}.data_root', root, 'dataset folder not found')
                return
        base = root if isinstance(root, str) else ''
        prefix = ds.get('data_prefix')
        items = prefix.items() if hasattr(prefix, 'items') else [('', prefix)]
        for sub, p in items:
            if not isinstance(p, str) or not p or url_scheme(p) is not None:
                continue
            path = p if osp.isabs(p) else osp.join(base, p)
            if not osp.exists(path):
                k = f'{key}.data_prefix' + (f'.{sub}' if sub else '')
                self.err(k, p, f'not found ({path})')
        ann = ds.get('ann_file')
        if isinstance(ann, str) and ann and url_scheme(ann) is None:
            path = ann if osp.isabs(ann) else osp.join(base, ann)
            if not osp.isfile(path):
                self.err(f'{key}.ann_file', ann,
                         f'annotation file not found ({path})')

    def check_data(self) -> None:
        for loader, loop in (('train_dataloader', 'train_cfg'),
                             ('val_dataloader', 'val_cfg'), ('test_dataloader',
                                                             'test_cfg')):
            dl = self.cfg.get(loader)
            if dl is None or (loader != 'train_dataloader'
                              and self.cfg.get(loop) is None):
                continue
            self.check_dataset(f'{loader}.dataset', dl.get('dataset'))


def check_train_config(cfg) -> None:
    """Raise :class:`ConfigError` listing every problem found in ``cfg``.

    Args:
        cfg (mmengine.Config): The merged training config.
    """
    c = _Checker(cfg)
    student = c.check_model()
    c.check_pretrained_file()
    c.check_hooks(student)
    c.check_data()
    if c.errors:
        raise ConfigError('invalid config, nothing was run:\n  ' +
                          '\n  '.join(c.errors))
