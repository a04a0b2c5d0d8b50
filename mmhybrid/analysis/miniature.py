"""The whole job in miniature, on the CPU: the stages `make demo` and `make
study` share.

Data (the built-in generated shapes, or any ImageNet-style folder), two tiny
teachers trained with mmpretrain's own algorithms, hybrid-distilled students,
then evaluation: linear probe and short fine-tune (training stages), k-NN on
frozen [CLS] features and attention statistics (in this process). Every
training stage is a ``tools/train.py`` run of a ``configs/demo/`` config whose
command line is printed, so any stage can be rerun alone.

This module holds the parts: data, config options, the stage runner and the
measurements; :mod:`.pipeline` strings them into stages, which
:mod:`.demo` and :mod:`.study` configure and report.
"""
import contextlib
import multiprocessing as mp
import os
import os.path as osp
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

# k-NN top-1: DINO's protocol, the one implementation (mmhybrid.engine.knn)
from mmhybrid.engine.knn import knn_top1  # noqa: F401
from mmhybrid.engine.knn import extract_features, pool_features
from mmhybrid.utils.scalars import last_scalar, read_scalars  # noqa: F401


# ------------------------------------------------------------------- data
class DataSpec(NamedTuple):
    """An ImageNet-style dataset as the demo configs read it.

    ``ann`` is ``{'train': 'meta/train.txt', 'val': ...}`` when the labels come
    from mmpretrain annotation files, else None (class-per-folder).
    """
    root: str
    num_classes: int
    ann: Optional[Dict[str, str]]
    builtin: bool


def _folder_classes(split_dir: str) -> List[str]:
    return sorted(
        d for d in os.listdir(split_dir)
        if osp.isdir(osp.join(split_dir, d)) and not d.startswith('.'))


def _ann_num_classes(path: str) -> int:
    labels = set()
    with open(path) as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[-1].lstrip('-').isdigit():
                raise ValueError(
                    f'{path}:{i}: expected "<image path> <integer '
                    f'label>", got {line.strip()!r}')
            labels.add(int(parts[-1]))
    if not labels or min(labels) < 0:
        raise ValueError(f'{path}: expected labels 0..N-1, got '
                         f'{sorted(labels)[:5] or "none"}')
    return max(labels) + 1


def describe_folder(root: str, num_classes: Optional[int] = None) -> DataSpec:
    """Read the layout of a user's ImageNet-style folder.

    Accepted: ``root/meta/{train,val}.txt`` (mmpretrain's annotation files,
    image paths relative to ``root/train`` and ``root/val``), or one sub-folder
    per class in ``root/train`` and ``root/val``.

    Args:
        root (str): The dataset folder.
        num_classes (int, optional): Override the number inferred from the
            class folders or the largest annotated label.

    Returns:
        DataSpec: The layout.
    """
    root = osp.abspath(root)
    for split in ('train', 'val'):
        if not osp.isdir(osp.join(root, split)):
            raise FileNotFoundError(
                f'{osp.join(root, split)}: no such folder; --data-root '
                'expects '
                f'train/ and val/ (class sub-folders, or meta/train.txt and '
                f'meta/val.txt with "<path> <label>" lines)')
    anns = {s: osp.join(root, 'meta', f'{s}.txt') for s in ('train', 'val')}
    if all(osp.isfile(p) for p in anns.values()):
        found = max(_ann_num_classes(p) for p in anns.values())
        ann = {s: osp.relpath(p, root) for s, p in anns.items()}
    else:
        train = _folder_classes(osp.join(root, 'train'))
        val = _folder_classes(osp.join(root, 'val'))
        if not train or train != val:
            raise ValueError(
                f'{root}: train/ and val/ must hold the same class folders '
                f'(train: {train[:5]}, val: {val[:5]}), or give '
                'meta/train.txt and meta/val.txt')
        found, ann = len(train), None
    if num_classes is not None and num_classes < found:
        raise ValueError(f'--num-classes {num_classes} is below the {found} '
                         f'classes found in {root}')
    return DataSpec(root, num_classes or found, ann, builtin=False)


def builtin_data(root: str,
                 num_train: int,
                 num_val: int,
                 img_size: int,
                 seed: int = 0) -> DataSpec:
    """The built-in object task (written once; cached by its stamp)."""
    from mmhybrid.datasets import SHAPE_CLASSES, make_imagenet_style
    path = make_imagenet_style(
        root,
        num_train=num_train,
        num_val=num_val,
        size=img_size,
        seed=seed,
        task='objects')
    return DataSpec(path, len(SHAPE_CLASSES), None, builtin=True)


def resolve_data(tool: str, data_root: Optional[str],
                 num_classes: Optional[int], img_size: int, patch_size: int,
                 builtin_root: str, num_train: int,
                 num_val: int) -> Tuple[DataSpec, str]:
    """The data of a demo or study run and a line describing it.

    Bad input (sizes the patches do not tile, an unusable folder, a class count
    for the built-in data) ends the tool with one line naming it, before
    anything is written or trained.
    """
    try:
        model_options('sup', img_size, patch_size, 1)
        if data_root:
            data = describe_folder(data_root, num_classes)
        elif num_classes not in (None, 5):
            raise ValueError('--num-classes is for --data-root; the built-in '
                             'data has 5 classes')
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f'{tool}: {e}') from None
    if data_root:
        return data, f'{data.root} ({data.num_classes} classes, ' + (
            'annotation files)' if data.ann else 'class folders)')
    data = builtin_data(builtin_root, num_train, num_val, img_size)
    return data, (f'{data.root} (built-in objects: {num_train} train / '
                  f'{num_val} val images, {data.num_classes} classes)')


def data_options(
    data: DataSpec,
    workers: int = 0,
    loaders: Sequence[str] = ('train', 'val', 'test')
) -> List[str]:
    """``--cfg-options`` pointing a demo config's loaders at ``data``."""
    opts = []
    for loader in loaders:
        split = 'train' if loader == 'train' else 'val'
        key = f'{loader}_dataloader'
        opts += [
            f'{key}.dataset.data_root={data.root}',
            f'{key}.num_workers={workers}',
            f'{key}.persistent_workers={workers > 0}'
        ]
        if data.ann:
            opts.append(f'{key}.dataset.ann_file={data.ann[split]}')
    return opts


# Where each demo config keeps image size, patch size and class count.
_MODEL_KEYS = {
    'sup': (['model.backbone'],
            ['model.head.num_classes', 'model.data_preprocessor.num_classes']),
    'probe':
    (['model.backbone'],
     ['model.head.num_classes', 'model.data_preprocessor.num_classes']),
    'finetune':
    (['model.backbone'],
     ['model.head.num_classes', 'model.data_preprocessor.num_classes']),
    'mae': (['model.backbone', 'model.neck', 'model.head'], []),
    'hybrid': ([
        'model.backbone', 'model.teacher_feat.backbone',
        'model.teacher_rel.backbone'
    ], []),
}


def model_options(kind: str, img_size: int, patch_size: int,
                  num_classes: int) -> List[str]:
    """``--cfg-options`` giving a demo config of ``kind`` (``'sup'``,
    ``'probe'``, ``'finetune'``, ``'mae'``, ``'hybrid'``) another image size,
    patch size or class count; the pipelines resize to ``img_size``."""
    if img_size % patch_size:
        raise ValueError(f'--img-size {img_size} is not a multiple of '
                         f'--patch-size {patch_size}')
    sized, classes = _MODEL_KEYS[kind]
    opts = []
    for key in sized:
        if key == 'model.head':
            opts.append(f'{key}.patch_size={patch_size}')
            continue
        if key != 'model.neck':
            opts.append(f'{key}.img_size={img_size}')
        opts.append(f'{key}.patch_size={patch_size}')
    if kind == 'mae':
        opts.append(f'model.neck.num_patches={(img_size // patch_size) ** 2}')
    opts += [f'{k}={num_classes}' for k in classes]
    for loader in ('train', 'val', 'test'):
        if kind in ('mae', 'hybrid') and loader != 'train':
            continue
        opts += [
            f'{loader}_dataloader.dataset.pipeline.1.scale={img_size}',
            f'{loader}_dataloader.dataset.pipeline.2.crop_size={img_size}'
        ]
    return opts


def schedule_options(iters: int, warmup: bool = True) -> List[str]:
    """``--cfg-options`` fitting a demo config's schedule to ``iters``: a
    linear warm-up over the first tenth then cosine (``warmup``), or the
    probe's single cosine."""
    if not warmup:
        return [f'param_scheduler.0.end={iters}']
    w = max(1, iters // 10)
    return [
        f'param_scheduler.0.end={w}', f'param_scheduler.1.begin={w}',
        f'param_scheduler.1.end={iters}'
    ]


def check_train_tool(train_tool) -> None:
    """Refuse a training module (:mod:`mmhybrid.apis.train`, what
    ``tools/train.py`` runs) whose ``merge_args`` lets a later dataloader
    overwrite ``train_dataloader``.

    mmengine 0.10's ``ConfigDict.update`` merges nested dicts in place; the
    ``merge_args`` copied from mmpretrain once funnelled every dataloader
    through one shared default dict, so val's ``data_prefix``, pipeline and
    sampler were written into train's: every classifier config with a
    ``val_dataloader`` trained on the val split.
    """
    from mmengine.config import Config
    cfg = Config(
        dict(
            train_dataloader=dict(
                dataset=dict(data_prefix='train'),
                sampler=dict(type='InfiniteSampler')),
            val_dataloader=dict(
                dataset=dict(data_prefix='val'),
                sampler=dict(type='DefaultSampler'))))
    cfg = train_tool.merge_args(cfg, train_tool.parse_args(['probe.py']))
    if (cfg.train_dataloader.dataset.data_prefix != 'train'
            or cfg.train_dataloader.sampler.type != 'InfiniteSampler'):
        raise RuntimeError(
            'tools/train.py lets val_dataloader overwrite train_dataloader '
            '(one shared default dict merged with mmengine\'s recursive '
            'ConfigDict.update): classifiers would train on the val split. '
            'Give each dataloader its own copy of the defaults.')


# ------------------------------------------------------------------ stages
class Stage(NamedTuple):
    """One ``tools/train.py`` run: ``cost`` weighs it for the ETA (iterations
    times a rough per-iteration cost)."""
    name: str
    config: str
    work_dir: str
    options: List[str]
    cost: float = 1.0


def _child(train_main: Callable, argv: List[str], log: str, threads: int):
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        torch.set_num_threads(threads)
        train_main(argv)
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else (
            e.code if isinstance(e.code, int) else 1)
    except BaseException:  # noqa: B902  (reported in the stage's log)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Stages:
    """Runs training stages ``jobs`` at a time, times them and prints progress.

    Each stage is a ``tools/train.py`` process by default; with ``train_main``
    (a training function taking that tool's ``argv``) it runs in a forked
    child of this process instead, which has imported the stack once. A batch
    of ``n`` stages runs ``min(jobs, n)`` at a time with ``max(1, cpus //
    that)`` threads each, so a lone stage gets every core.

    Args:
        work_dir (str): Logs go to ``work_dir/logs/<stage>.log``.
        root (str): Repository root (for ``tools/train.py`` and for printing
            commands relative to it).
        train_main (Callable, optional): Run stages as forked calls of this.
            Defaults to None (``tools/train.py`` processes).
        jobs (int): Stages at once. Defaults to 1.
        resume (bool): Keep stages an earlier run finished with the same
            command. Defaults to False.
        total_cost (float): Sum of the costs of every stage to come, for the
            ETA. Defaults to 0 (no ETA).
        tag (str): Prefix of the progress lines. Defaults to ``'[demo]'``.
        cpus (int): Threads shared by the stages running at once. Defaults
            to 2 (the CPU the miniature is sized for).
    """

    DONE = '.stage_done'

    def __init__(self,
                 work_dir: str,
                 root: str,
                 train_main: Optional[Callable] = None,
                 jobs: int = 1,
                 resume: bool = False,
                 total_cost: float = 0.0,
                 tag: str = '[demo]',
                 cpus: int = 2):
        self.work_dir, self.root = work_dir, root
        self.train_main = train_main
        self.jobs, self.cpus = max(1, jobs), cpus
        self.threads = max(1, cpus // self.jobs)
        self.resume = resume
        self.total_cost, self.done_cost = total_cost, 0.0
        self.tag = tag
        self.t0 = time.time()
        self.times: Dict[str, float] = {}
        self.failed: List[str] = []
        self.skipped: List[str] = []
        os.makedirs(osp.join(work_dir, 'logs'), exist_ok=True)

    def command(self, stage: Stage) -> str:
        """The shell command that reruns ``stage`` alone."""
        argv = [
            stage.config, '--work-dir', stage.work_dir, '--cfg-options',
            *stage.options
        ]
        return 'python tools/train.py ' + ' '.join(
            osp.relpath(a, self.root
                        ) if osp.isabs(a) and a.startswith(self.root) else a
            for a in argv)

    def rel(self, path: str) -> str:
        """``path`` relative to the working directory when inside it."""
        rel = osp.relpath(path)
        return path if rel.startswith('..') else rel

    def log(self, msg: str) -> None:
        print(f'{self.tag} {msg}', flush=True)

    def add_done(self, cost: float) -> None:
        """Count work done outside the training stages (for the ETA)."""
        self.done_cost += cost

    def progress(self) -> str:
        elapsed = time.time() - self.t0
        text = f'elapsed {elapsed / 60:.1f} min'
        if self.total_cost and self.done_cost:
            left = elapsed * (self.total_cost -
                              self.done_cost) / self.done_cost
            text += f', ETA {max(left, 0) / 60:.1f} min'
        return text

    def _start(self, stage: Stage):
        argv = [
            stage.config, '--work-dir', stage.work_dir, '--cfg-options',
            *stage.options
        ]
        log = osp.join(self.work_dir, 'logs', f'{stage.name}.log')
        with open(log + '.cmd', 'w') as f:
            f.write(self.command(stage) + '\n')
        if self.train_main is None:
            env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
            f = open(log, 'w')
            proc = subprocess.Popen([
                sys.executable,
                osp.join(self.root, 'tools', 'train.py'), *argv
            ],
                                    stdout=f,
                                    stderr=subprocess.STDOUT,
                                    env=env)
            proc._log_file = f
            return proc, log
        sys.stdout.flush()
        sys.stderr.flush()
        proc = mp.get_context('fork').Process(
            target=_child, args=(self.train_main, argv, log, self.threads))
        proc.start()
        return proc, log

    def run(self, batch: Sequence[Stage]) -> None:
        """Run every stage of ``batch``; return when all have ended."""
        pending = list(batch)
        jobs = max(1, min(self.jobs, len(pending)))
        self.threads = max(1, self.cpus // jobs)
        running = {}
        while pending or running:
            while pending and len(running) < jobs:
                stage = pending.pop(0)
                cmd = self.command(stage)
                done_file = osp.join(stage.work_dir, self.DONE)
                if self.resume and osp.isfile(done_file) and open(
                        done_file).read() == cmd + '\n':
                    self.log(f'{stage.name}: kept from an earlier run with '
                             'the same command')
                    self.skipped.append(stage.name)
                    self.total_cost -= stage.cost  # no time spent on it
                    continue
                if osp.isfile(done_file):
                    os.remove(done_file)
                proc, log = self._start(stage)
                cfg = osp.relpath(stage.config, self.root)
                self.log(f'{stage.name}: started, {cfg} (to rerun it alone: '
                         f'{self.rel(log)}.cmd)')
                running[stage.name] = (stage, proc, log, time.time())
            time.sleep(0.2)
            for name in list(running):
                stage, proc, log, t0 = running[name]
                if self.train_main is None:
                    code = proc.poll()
                else:
                    code = None if proc.is_alive() else proc.exitcode
                if code is None:
                    continue
                if self.train_main is None:
                    proc._log_file.close()
                del running[name]
                self.times[name] = time.time() - t0
                self.done_cost += stage.cost
                if code != 0:
                    self.failed.append(name)
                    with open(log) as f:
                        tail = f.read()[-2500:]
                    self.log(f'{name} FAILED (exit {code}); log {log}\n{tail}')
                    continue
                with open(osp.join(stage.work_dir, self.DONE), 'w') as f:
                    f.write(self.command(stage) + '\n')
                self.log(f'{name}: done in {self.times[name]:.0f}s '
                         f'({self.progress()})')


# ---------------------------------------------------------------- results
def mean_iter_time(work_dir: str, skip: int = 1) -> Optional[float]:
    """Mean seconds per training iteration (logger windows; the first ``skip``
    dropped: start-up)."""
    t = [
        r['time'] for r in read_scalars(work_dir)
        if 'loss' in r and 'time' in r
    ]
    t = t[skip:] if len(t) > skip else t
    return sum(t) / len(t) if t else None


# ------------------------------------------------------------- evaluation
@contextlib.contextmanager
def quiet_logger(level: str = 'WARNING'):
    """mmengine's current logger at ``level`` for a while: building a model
    logs one line per initialised tensor, hundreds per evaluation."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def load_config(config: str, options: Sequence[str]):
    """A config with ``KEY=VALUE`` options merged as ``--cfg-options``
    would."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({
        k: DictAction._parse_iterable(v)
        for k, v in (kv.split('=', 1) for kv in options)
    })
    return cfg


@torch.no_grad()
def cls_features(config: str,
                 options: Sequence[str],
                 checkpoint: Optional[str],
                 data: DataSpec,
                 split: str,
                 seed: int = 0,
                 batch_size: int = 128) -> Tuple[torch.Tensor, torch.Tensor]:
    """Frozen [CLS] features (after the final norm) of every image of a split.

    The model is the linear-probe config's backbone loaded as the probe loads
    it (``init_cfg`` with ``prefix='backbone.'``), or its seeded random
    initialisation when ``checkpoint`` is None; images go through the config's
    test pipeline and data preprocessor.

    Returns:
        tuple: ``(N, C)`` features and ``(N,)`` labels.
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS, MODELS
    cfg = load_config(config, options)
    if checkpoint:
        cfg.model.backbone.init_cfg.checkpoint = checkpoint
    else:
        cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        model = MODELS.build(cfg.model)
        model.init_weights()
        ds_cfg = cfg.val_dataloader.dataset.copy()
        ds_cfg.data_prefix = split
        if data.ann:
            ds_cfg.ann_file = data.ann[split]
        dataset = DATASETS.build(ds_cfg)
    model.eval()

    def encode(batch):
        batch = model.data_preprocessor(batch, False)
        return pool_features(model.backbone(batch['inputs']), 'cls')

    return extract_features(encode, dataset, batch_size)


def knn_eval(config: str,
             options: Sequence[str],
             checkpoint: Optional[str],
             data: DataSpec,
             k: int = 20,
             seed: int = 0) -> float:
    """k-NN top-1 (%) of a checkpoint's frozen [CLS] features on ``data``
    (:func:`mmhybrid.engine.knn.knn_top1`: DINO's weighted votes)."""
    tr = cls_features(config, options, checkpoint, data, 'train', seed)
    va = cls_features(config, options, checkpoint, data, 'val', seed)
    return knn_top1(*tr, *va, k=k)


def in_child(fn: Callable, *args) -> None:
    """Run ``fn(*args)`` in a forked child and wait for it.

    Torch work in the stage runner's own process would start its OpenMP thread
    pool, and a child forked after that hangs in its first parallel region
    (seen: the demo's distillation stage, two threads, idle for minutes). So
    the runner stays free of torch compute until its stages are done.
    """

    def target():
        fn(*args)

    proc = mp.get_context('fork').Process(target=target)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f'{getattr(fn, "__name__", fn)} failed in a child '
                           f'process (exit {proc.exitcode})')


def save_random_init(config: str, options: Sequence[str], seed: int,
                     path: str) -> str:
    """Write the seeded random initialisation of a demo classifier config's
    backbone as a checkpoint (``backbone.*`` keys).

    The "random init" reference is then one concrete network per seed, read by
    the probe, the fine-tune, k-NN and the attention statistics alike, and
    initialised as the students are (the demo configs' Xavier-uniform linear
    layers).
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = load_config(config, options)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        model = MODELS.build(cfg.model)
        model.init_weights()
    state = {
        k: v
        for k, v in model.state_dict().items() if k.startswith('backbone.')
    }
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save(dict(state_dict=state), path)
    return path


def attention_stats_of(config: str,
                       options: Sequence[str],
                       checkpoint: Optional[str],
                       val_folder: str,
                       num_images: int,
                       seed: int = 0) -> Dict[str, np.ndarray]:
    """Per layer and head attention distance, entropy and NMI of a checkpoint
    (the seeded random initialisation when None) on ``num_images`` val images.

    The images are the same for every checkpoint and seed (a fixed subset), so
    repeats over seeds differ by their networks only.
    """
    from mmengine.registry import DefaultScope

    from .attention_report import compute_attention_stats
    from .vit_loading import load_images, vit_from_config
    cfg = load_config(config, options)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        vit = vit_from_config(
            cfg, 'student', checkpoint, random_init=checkpoint is None)
    images, _ = load_images(val_folder, vit.img_size, num_images, seed=0)
    return compute_attention_stats(vit, images)


def head_spread(stats: Dict[str, np.ndarray]) -> float:
    """Attention diversity in one number: the spread (std) of mean attention
    distance across the heads of a layer, averaged over layers (pixels)."""
    return float(stats['distance'].std(axis=1).mean())


def mean_std(values: Sequence[Optional[float]]) -> Tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the non-None values."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float('nan'), float('nan'), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, \
        int(v.size)


@torch.no_grad()
def distill_distances(config: str, options: Sequence[str], checkpoint: str,
                      teachers: Tuple[str, str], data: DataSpec,
                      num_images: int) -> Tuple[float, float]:
    """Feature distance to Tc and relation KL to Tm of a student checkpoint on
    a fixed subset of val images: the hybrid config's two losses at weight 1,
    with no masking (all tokens).

    How close a student got to each teacher.
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from mmhybrid.utils.checkpoint import (extract_state_dict,
                                           load_checkpoint_file)
    from .vit_loading import load_images
    cfg = load_config(config, options)
    cfg.model.teacher_feat.checkpoint = teachers[0]
    cfg.model.teacher_rel.checkpoint = teachers[1]
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        model = MODELS.build(cfg.model)
        model.init_weights()
    sd = extract_state_dict(load_checkpoint_file(checkpoint), checkpoint)
    sd = {k: v for k, v in sd.items() if not k.startswith('data_preprocessor')}
    model.load_state_dict(sd, strict=False)
    model.eval()
    model.mask_ratio = 0.0
    images, _ = load_images(
        osp.join(data.root, 'val'),
        cfg.model.backbone.img_size,
        num_images,
        seed=0)
    mean = torch.tensor(cfg.model.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.data_preprocessor.std).view(1, 3, 1, 1)
    feat = rel = 0.0
    for start in range(0, images.shape[0], 32):
        x = (images[start:start + 32].float() - mean) / std
        out = model.loss(x)
        feat += float(out['loss_feat']) * x.shape[0]
        rel += float(out['loss_rel']) * x.shape[0]
    return feat / images.shape[0], rel / images.shape[0]
