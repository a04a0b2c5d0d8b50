"""Check a training config before anything is built.

:func:`check_train_config` reads only the config (and stats files): no model is
built, no data is loaded, no process group is needed. Every problem is reported
with its config key and the offending value, all of them in one
:class:`ConfigError`, before the first training step. ``tools/train.py`` runs it
first; the model's own build-time checks (``HybridDistill``, ``FrozenTeacher``,
``HybridViT``, ``ProgressiveMaskingHook``) stay as a second line for configs
built some other way.

Checked: teacher checkpoint files and a downstream backbone's ``Pretrained``
checkpoint (missing, not a file, unreadable, truncated or corrupt), image size
vs patch size of the student and both teachers, student width vs the relation
teacher's heads (q/k re-split) and the neck widths, relation-pair block indices
(range, duplicates), mask ratios in ``[0, 1)`` and a non-zero keep count at the
final ratio, loss types and names, and the dataset paths (``data_root``,
``data_prefix``, ``ann_file``) of every dataloader that will be used.
"""
import os.path as osp
from typing import Any, List, Optional, Tuple

from .safe_io import probe_checkpoint


class ConfigError(ValueError):
    """A config value that cannot work; the message names key and value."""


def type_name(cfg: Any) -> str:
    """The bare registered name of a config's ``type`` (a string with or
    without its scope, or a class): ``'mmpretrain.Foo'`` and ``Foo`` -> ``'Foo'``."""
    t = cfg.get('type', '') if hasattr(cfg, 'get') else ''
    t = t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return t.split('.')[-1]


def _is(cfg: Any, name: str) -> bool:
    return type_name(cfg) == name


def _default_final_ratio() -> float:
    import inspect

    from .hooks.progressive_masking_hook import ProgressiveMaskingHook
    return inspect.signature(
        ProgressiveMaskingHook).parameters['final_ratio'].default


def _pair(v: Any) -> Tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _is_remote(path: str) -> bool:
    return '://' in path


class _Checker:

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.errors: List[str] = []

    def err(self, key: str, value: Any, problem: str) -> None:
        self.errors.append(f'{key}={value!r}: {problem}')

    # ------------------------------------------------------------------ ViTs
    def vit(self, key: str, cfg) -> Optional[dict]:
        """Resolve a HybridViT config: dims, layers, heads and patch grid."""
        if cfg is None or not _is(cfg, 'HybridViT'):
            return None
        from mmpretrain.models import VisionTransformer
        arch = cfg.get('arch', 'base')
        if isinstance(arch, str):
            spec = VisionTransformer.arch_zoo.get(arch.lower())
            if spec is None:
                self.err(f'{key}.arch', arch, 'unknown ViT arch; expected one '
                         f'of {sorted(VisionTransformer.arch_zoo)} or a dict')
                return None
        else:
            spec = dict(arch)
        missing = {'embed_dims', 'num_layers', 'num_heads'} - set(spec)
        if missing:
            self.err(f'{key}.arch', arch, f'missing {sorted(missing)}')
            return None
        img = _pair(cfg.get('img_size', 224))
        patch = _pair(cfg.get('patch_size', 16))
        grid = None
        if img[0] % patch[0] or img[1] % patch[1]:
            self.err(f'{key}.img_size', cfg.get('img_size', 224),
                     f'not divisible by {key}.patch_size='
                     f'{cfg.get("patch_size", 16)!r}')
        else:
            grid = (img[0] // patch[0], img[1] // patch[1])
        return dict(dims=int(spec['embed_dims']),
                    layers=int(spec['num_layers']),
                    heads=int(spec['num_heads']), grid=grid)

    def teacher_file(self, key: str, path: Any) -> None:
        if path is None:
            return
        if not isinstance(path, str) or not path:
            self.err(key, path, 'expected a file path or URL')
            return
        if _is_remote(path):
            return  # downloaded (and checked) when training starts
        reason = probe_checkpoint(path)
        if reason is not None:
            self.err(key, path, f'teacher checkpoint unusable: {reason}')

    def pretrained_file(self) -> None:
        """A downstream backbone's ``init_cfg`` ``Pretrained`` checkpoint:
        missing or corrupt fails here, before datasets and model are built."""
        backbone = (self.cfg.get('model') or {}).get('backbone') or {}
        init = backbone.get('init_cfg')
        many = isinstance(init, (list, tuple))
        for i, c in enumerate(init if many else [init]):
            if not hasattr(c, 'get') or c.get('type') != 'Pretrained':
                continue
            key = f'model.backbone.init_cfg{f"[{i}]" if many else ""}.checkpoint'
            path = c.get('checkpoint')
            if not isinstance(path, str) or not path:
                self.err(key, path, 'expected a file path or URL')
            elif not _is_remote(path):
                reason = probe_checkpoint(path)
                if reason is not None:
                    self.err(key, path,
                             f'pretrained checkpoint unusable: {reason}')

    # ----------------------------------------------------------------- model
    def model(self) -> Optional[dict]:
        model = self.cfg.get('model')
        if model is None or not _is(model, 'HybridDistill'):
            return None
        s = self.vit('model.backbone', model.get('backbone'))
        tc_cfg = model.get('teacher_feat') or {}
        tm_cfg = model.get('teacher_rel') or {}
        tc = self.vit('model.teacher_feat.backbone', tc_cfg.get('backbone'))
        tm = self.vit('model.teacher_rel.backbone', tm_cfg.get('backbone'))
        self.teacher_file('model.teacher_feat.checkpoint',
                          tc_cfg.get('checkpoint'))
        self.teacher_file('model.teacher_rel.checkpoint',
                          tm_cfg.get('checkpoint'))

        if s and tm and s['dims'] % tm['heads']:
            self.err('model.backbone.arch', model.backbone.get('arch'),
                     f'student width {s["dims"]} cannot be re-split into the '
                     f'{tm["heads"]} heads of model.teacher_rel.backbone.arch='
                     f'{tm_cfg.backbone.get("arch")!r} (width must be '
                     f'divisible by the head count)')
        neck = model.get('neck') or {}
        if s and neck.get('in_channels') is not None \
                and neck['in_channels'] != s['dims']:
            self.err('model.neck.in_channels', neck['in_channels'],
                     f'the student width (model.backbone.arch) is {s["dims"]}')
        if tc and neck.get('out_channels') is not None \
                and neck['out_channels'] != tc['dims']:
            self.err('model.neck.out_channels', neck['out_channels'],
                     f'the feature teacher width '
                     f'(model.teacher_feat.backbone.arch) is {tc["dims"]}')
        for name, t in (('teacher_feat', tc), ('teacher_rel', tm)):
            if s and t and s['grid'] and t['grid'] and s['grid'] != t['grid']:
                self.err(f'model.{name}.backbone.img_size',
                         model[name].backbone.get('img_size', 224),
                         f'gives a {t["grid"]} patch grid, the student a '
                         f'{s["grid"]}: token masking needs one grid')

        pairs = model.get('relation_pairs')
        if pairs is not None and s and tm:
            self.pairs(pairs, s['layers'], tm['layers'])

        ratio = model.get('mask_ratio', 0.0)
        self.ratio('model.mask_ratio', ratio, s)
        self.losses(model)
        return s

    def pairs(self, pairs, s_layers: int, t_layers: int) -> None:
        key = 'model.relation_pairs'
        seen = set()
        if not isinstance(pairs, (list, tuple)) or not pairs:
            self.err(key, pairs, 'expected a non-empty list of '
                     '(student_block, teacher_block)')
            return
        for i, p in enumerate(pairs):
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                self.err(f'{key}[{i}]', p,
                         'expected (student_block, teacher_block)')
                continue
            sb, tb = int(p[0]), int(p[1])
            if not 0 <= sb < s_layers:
                self.err(f'{key}[{i}]', tuple(p),
                         f'student block {sb} out of range [0, {s_layers}) '
                         f'(model.backbone has {s_layers} blocks)')
            if not 0 <= tb < t_layers:
                self.err(f'{key}[{i}]', tuple(p),
                         f'teacher block {tb} out of range [0, {t_layers}) '
                         f'(model.teacher_rel.backbone has {t_layers} blocks)')
            if (sb, tb) in seen:
                self.err(f'{key}[{i}]', tuple(p), 'duplicate layer pair')
            seen.add((sb, tb))

    def ratio(self, key: str, ratio: Any, student: Optional[dict]) -> None:
        try:
            r = float(ratio)
        except (TypeError, ValueError):
            self.err(key, ratio, 'expected a number in [0, 1)')
            return
        if not 0.0 <= r < 1.0:
            self.err(key, ratio, 'mask ratio must be in [0, 1)')
            return
        if student and student['grid']:
            n = student['grid'][0] * student['grid'][1]
            if int(round(n * (1.0 - r))) < 1:
                self.err(key, ratio,
                         f'keeps zero of the student\'s {n} patch tokens '
                         f'(keep count round({n} * (1 - {r})) = 0)')

    def losses(self, model) -> None:
        from mmpretrain.registry import MODELS
        for name in ('loss_feat', 'loss_rel'):
            cfg = model.get(name)
            if cfg is None:
                continue
            key = f'model.{name}'
            t = type_name(cfg)
            cls = MODELS.get(t) if t else None
            if cls is None:
                self.err(f'{key}.type', t, 'not a registered loss')
                continue
            allowed = getattr(cls, 'LOSS_TYPES', None)
            lt = cfg.get('loss_type')
            if allowed is not None and lt is not None and lt not in allowed:
                self.err(f'{key}.loss_type', lt,
                         f'unknown {t} loss; expected one of {allowed}')

    # ---------------------------------------------------------------- hooks
    def hooks(self, student: Optional[dict]) -> None:
        for i, h in enumerate(self.cfg.get('custom_hooks') or []):
            if not _is(h, 'ProgressiveMaskingHook'):
                continue
            for name in ('final_ratio', 'start_ratio'):
                if name in h:
                    self.ratio(f'custom_hooks[{i}].{name}', h[name], student)
            if 'final_ratio' not in h:  # the hook's own default
                self.ratio(f'custom_hooks[{i}].final_ratio',
                           _default_final_ratio(), student)

    # ----------------------------------------------------------------- data
    def dataset(self, key: str, ds) -> None:
        if ds is None or not hasattr(ds, 'get'):
            return
        if ds.get('dataset') is not None:  # RepeatDataset and friends
            self.dataset(f'{key}.dataset', ds['dataset'])
        for i, sub in enumerate(ds.get('datasets') or []):
            self.dataset(f'{key}.datasets[{i}]', sub)
        root = ds.get('data_root')
        if isinstance(root, str) and root and not _is_remote(root):
            if not osp.isdir(root):
                self.err(f'{key}.data_root', root, 'dataset folder not found')
                return
        base = root if isinstance(root, str) else ''
        prefix = ds.get('data_prefix')
        items = prefix.items() if hasattr(prefix, 'items') else [('', prefix)]
        for sub, p in items:
            if not isinstance(p, str) or not p or _is_remote(p):
                continue
            path = p if osp.isabs(p) else osp.join(base, p)
            if not osp.exists(path):
                k = f'{key}.data_prefix' + (f'.{sub}' if sub else '')
                self.err(k, p, f'not found ({path})')
        ann = ds.get('ann_file')
        if isinstance(ann, str) and ann and not _is_remote(ann):
            path = ann if osp.isabs(ann) else osp.join(base, ann)
            if not osp.isfile(path):
                self.err(f'{key}.ann_file', ann,
                         f'annotation file not found ({path})')

    def data(self) -> None:
        for loader, loop in (('train_dataloader', 'train_cfg'),
                             ('val_dataloader', 'val_cfg'),
                             ('test_dataloader', 'test_cfg')):
            dl = self.cfg.get(loader)
            if dl is None or (loader != 'train_dataloader'
                              and self.cfg.get(loop) is None):
                continue
            self.dataset(f'{loader}.dataset', dl.get('dataset'))


def check_train_config(cfg) -> None:
    """Raise :class:`ConfigError` listing every problem found in ``cfg``.

    Args:
        cfg (mmengine.Config): The merged training config.
    """
    c = _Checker(cfg)
    student = c.model()
    c.pretrained_file()
    c.hooks(student)
    c.data()
    if c.errors:
        raise ConfigError('invalid config, nothing was run:\n  ' +
                          '\n  '.join(c.errors))
