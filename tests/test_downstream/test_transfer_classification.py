"""Transfer classification (CIFAR-100, Stanford Cars, iNaturalist 2019): the
shipped configs carry iBOT's transfer protocol, the datasets read their
official on-disk formats (generated here at a few images per class) as
mmpretrain does, a corrupt annotation file is one ``ERROR:`` line naming it,
and each config trains and reports top-1 through ``tools/train.py``."""
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config

from mmhybrid.utils.scalars import read_scalars
from .conftest import ROOT
from .transfer_data import (INAT_CATEGORIES, make_cifar100, make_inat2019,
                            make_stanford_cars)

FT = 'configs/benchmarks/mmpretrain/vit-base-p16_hybrid-distill-300e-pre_'
DEMO = 'configs/benchmarks/demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb8-4i_'
#: name -> (shipped config, demo config, dataset type, classes, lr, epochs,
#: random-erasing probability)
TASKS = {
    'cifar100': (f'{FT}8xb96-coslr-1000e_cifar100.py', f'{DEMO}cifar100.py',
                 'CheckedCIFAR100', 100, 7.5e-6, 1000, 0.25),
    'cars':
    (f'{FT}8xb96-coslr-1000e_stanfordcars.py', f'{DEMO}stanfordcars.py',
     'CheckedStanfordCars', 196, 7.5e-5, 1000, 0.25),
    'inat19': (f'{FT}8xb96-coslr-360e_inat2019.py', f'{DEMO}inat2019.py',
               'INaturalist2019', 1010, 7.5e-6, 360, 0.1),
}


@pytest.fixture(scope='module')
def transfer_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('transfer')
    return dict(
        cifar100=make_cifar100(str(root / 'cifar100')),
        cars=make_stanford_cars(str(root / 'cars')),
        inat19=make_inat2019(str(root / 'inat19')))


def _cfg(path):
    return Config.fromfile(osp.join(ROOT, path))


@pytest.mark.parametrize('task', list(TASKS))
def test_shipped_config_carries_ibot_transfer_protocol(task):
    path, _, dataset, classes, base_lr, epochs, erase = TASKS[task]
    cfg = _cfg(path)
    bb = cfg.model.backbone
    assert bb.type == 'StrictPretrainedViT'  # every tensor or an ERROR
    assert bb.arch == 'base' and bb.img_size == 224 and bb.patch_size == 16
    assert bb.out_type == 'cls_token' and bb.final_norm is True
    assert bb.drop_path_rate == 0.1
    assert bb.init_cfg == dict(
        type='Pretrained', checkpoint='pretrain/hybrid_vitb_mmpretrain.pth')
    assert cfg.model.head.num_classes == classes
    assert cfg.data_preprocessor.num_classes == classes
    loader = cfg.train_dataloader
    assert loader.batch_size * 8 == 768
    assert loader.sampler.type == 'RepeatAugSampler'
    assert loader.dataset.type == dataset
    assert cfg.val_dataloader.dataset.type == dataset
    assert cfg.val_dataloader.dataset.split != 'train'
    # DeiT's linear scaling of iBOT's lr, no layer decay, AdamW 0.05
    ow = cfg.optim_wrapper
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.weight_decay == 0.05
    assert ow.optimizer.lr == pytest.approx(base_lr * 768 / 512)
    assert ow.constructor == 'DefaultOptimWrapperConstructor'
    assert ow.paramwise_cfg == dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0)
    assert cfg.auto_scale_lr.base_batch_size == 768
    warmup, cosine = cfg.param_scheduler
    assert warmup.start_factor * ow.optimizer.lr == pytest.approx(1e-6)
    assert warmup.end == cosine.begin == 5
    assert cosine.end == epochs and cosine.eta_min == 1e-5
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.train_cfg.val_interval == 1
    pipe = {t['type']: t for t in loader.dataset.pipeline}
    assert pipe['RandomResizedCrop']['scale'] == 224
    assert pipe['RandAugment']['magnitude_level'] == 9
    assert pipe['RandomErasing']['erase_prob'] == erase
    augments = {a['type']: a['alpha'] for a in cfg.model.train_cfg.augments}
    assert augments == {'Mixup': 0.8, 'CutMix': 1.0}
    assert cfg.model.head.loss.label_smooth_val == 0.1
    # the protocol's number: the best epoch's top-1
    assert cfg.val_evaluator.type == 'Accuracy'
    assert cfg.default_hooks.checkpoint.save_best == 'accuracy/top1'
    # the CPU miniature is this config with a tiny ViT
    demo = _cfg(TASKS[task][1])
    assert demo.train_dataloader.dataset.type == dataset
    assert demo.train_dataloader.sampler.type == 'RepeatAugSampler'
    assert demo.model.head.num_classes == classes


def test_checked_datasets_read_what_mmpretrain_reads(transfer_data,
                                                     monkeypatch):
    """Same samples as mmpretrain's own classes (CIFAR100 with its md5 check
    switched off: generated files cannot have the official sums)."""
    from mmpretrain.datasets import CIFAR100, StanfordCars

    from mmhybrid.datasets import (CheckedCIFAR100, CheckedStanfordCars,
                                   INaturalist2019)
    monkeypatch.setattr(CIFAR100, '_check_integrity', lambda self: True)
    for split in ('train', 'test'):
        ours = CheckedCIFAR100(transfer_data['cifar100'], split=split)
        theirs = CIFAR100(
            transfer_data['cifar100'], split=split, download=False)
        assert len(ours) == len(theirs) == (200 if split == 'train' else 100)
        for i in (0, len(ours) - 1):
            a, b = ours.get_data_info(i), theirs.get_data_info(i)
            assert a['gt_label'] == b['gt_label']
            assert np.array_equal(a['img'], b['img'])
        assert ours.CLASSES == theirs.CLASSES
        cars = CheckedStanfordCars(transfer_data['cars'], split=split)
        ref = StanfordCars(transfer_data['cars'], split=split)
        assert cars.load_data_list() == ref.load_data_list()
        assert len(cars.CLASSES) == 196
    inat = INaturalist2019(transfer_data['inat19'], split='val')
    assert len(inat) == 2 * len(INAT_CATEGORIES)
    assert inat.CLASSES == tuple(name for _, _, name in INAT_CATEGORIES)
    for i in range(len(inat)):
        info = inat.get_data_info(i)
        assert osp.isfile(info['img_path'])
        # the generated files sit in train_val2019/<group>/<category id>/
        assert int(info['img_path'].split(os.sep)[-2]) == info['gt_label']


def _corrupt(task, root):
    """A broken copy of the data's annotation file; returns its path."""
    if task == 'cifar100':
        path = osp.join(root, 'cifar-100-python', 'train')
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[:len(data) // 2])  # truncated download
    elif task == 'cars':
        path = osp.join(root, 'devkit', 'cars_train_annos.mat')
        open(path, 'wb').write(b'MATLAB 5.0 MAT-file' + b'\0' * 40)
    else:
        path = osp.join(root, 'train2019.json')
        text = open(path).read()
        open(path, 'w').write(text[:len(text) // 2])
    return path


def test_weight_decay_is_timms_rule_without_layer_decay():
    """DeiT's optimizer on iBOT's ViT: one lr for every tensor, weight decay on
    every tensor of two or more dimensions (pos_embed and cls_token included),
    none on the 1-D ones (norms, biases)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    cfg = _cfg(TASKS['cars'][0])
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model,
                                  dict(cfg.optim_wrapper, type='OptimWrapper'))
    lr = cfg.optim_wrapper.optimizer.lr
    decay = {}
    for group in wrapper.optimizer.param_groups:
        assert group['lr'] == pytest.approx(lr)
        for p in group['params']:
            decay[id(p)] = group['weight_decay']
    for name, p in model.named_parameters():
        want = 0.05 if p.ndim > 1 else 0.0
        assert decay[id(p)] == want, name
    assert decay[id(model.backbone.pos_embed)] == 0.05


@pytest.mark.parametrize('task', list(TASKS))
def test_corrupt_annotation_is_one_error_line(task, transfer_data, tmp_path,
                                              capsys):
    """The shipped config's dataset on a corrupt file: what tools/train.py
    prints (``run_tool``) is one ERROR line naming the file."""
    from mmpretrain.registry import DATASETS

    from mmhybrid.apis.tool_rules import run_tool
    root = str(tmp_path / task)
    shutil.copytree(transfer_data[task], root)
    bad = _corrupt(task, root)
    cfg = _cfg(TASKS[task][0]).train_dataloader.dataset
    cfg.data_root = root
    cfg.pipeline = []
    with pytest.raises(SystemExit) as exc:
        run_tool(lambda: DATASETS.build(cfg))
    assert exc.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('ERROR: '), lines
    assert bad in lines[0]


def test_cifar_pickle_with_code_is_refused_and_never_runs(tmp_path):
    """A batch file is a pickle: one that would call a function is refused
    (named in the ERROR) and the function never runs."""
    from mmhybrid.datasets import DatasetFileError
    from mmhybrid.datasets.transfer import read_cifar_batch
    marker = tmp_path / 'ran'

    class Payload:

        def __reduce__(self):
            return (open, (str(marker), 'w'))

    path = tmp_path / 'train'
    path.write_bytes(pickle.dumps({'data': Payload()}, protocol=2))
    with pytest.raises(DatasetFileError, match='refuses global'):
        read_cifar_batch(str(path))
    assert not marker.exists()


def _run(cmd, **env):
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1', **env))
    return proc


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _root_options(root):
    return [
        f'{split}_dataloader.dataset.data_root={root}'
        for split in ('train', 'val', 'test')
    ]


ITERS = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2']


@pytest.mark.slow
@pytest.mark.parametrize('task', list(TASKS))
def test_transfer_config_trains_and_reports_top1(task, transfer_data,
                                                 synthetic_student, tmp_path):
    """The demo config (the shipped one with a tiny ViT), only the data root
    and the iteration count overridden: trains from the raw student checkpoint
    (all its tensors) and reports top-1.

    CIFAR-100 goes through the one-command launcher: conversion, then
    tools/dist_train.sh (torchrun, one gloo process).
    """
    work = tmp_path / 'work'
    env = {}
    if task == 'cifar100':
        cmd = [
            'bash', 'tools/benchmarks/dist_downstream.sh', 'demo-cifar100',
            synthetic_student, '1', '--cfg-options',
            *_root_options(transfer_data[task]), *ITERS
        ]
        env = dict(
            PYTHON=sys.executable, PORT=str(_free_port()), WORK_DIR=str(work))
    else:
        cmd = [
            sys.executable, 'tools/train.py', TASKS[task][1], '--work-dir',
            str(work), '--cfg-options',
            f'model.backbone.init_cfg.checkpoint={synthetic_student}',
            *_root_options(transfer_data[task]), *ITERS
        ]
    proc = _run(cmd, **env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    if task == 'cifar100':
        assert 'missing keys: 0, unexpected keys: 0' in log
        assert 'Distributed training: True' in log
    assert 'StrictPretrainedViT: loaded all 54 backbone tensors' in log
    assert 'accuracy/top1:' in log
    metrics = {
        k: v
        for r in read_scalars(str(work), required=True)
        for k, v in r.items()
    }
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    assert (work / 'best_accuracy_top1_iter_2.pth').is_file()


@pytest.mark.slow
def test_corrupt_cifar_batch_stops_train_py_with_one_error_line(
        transfer_data, synthetic_student, tmp_path):
    root = str(tmp_path / 'cifar100')
    shutil.copytree(transfer_data['cifar100'], root)
    bad = _corrupt('cifar100', root)
    proc = _run([
        sys.executable, 'tools/train.py', TASKS['cifar100'][1], '--work-dir',
        str(tmp_path / 'work'), '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={synthetic_student}',
        *_root_options(root), *ITERS
    ])
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if 'ERROR' in ln]
    assert len(errors) == 1 and errors[0].startswith('ERROR: '), errors
    assert bad in errors[0] and 'Traceback' not in proc.stderr


@pytest.mark.parametrize('task', list(TASKS))
@pytest.mark.parametrize('loader', ['train_dataloader', 'val_dataloader'])
def test_shipped_loaders_yield_a_224px_batch(task, loader, transfer_data):
    """The shipped config's loaders as tools/train.py's runner builds them, on
    the generated data in the official layout."""
    from mmengine.registry import init_default_scope

    from mmhybrid.engine.runners import HybridRunner
    cfg = _cfg(TASKS[task][0])
    init_default_scope(cfg.default_scope)
    loader_cfg = cfg[loader]
    loader_cfg.update(batch_size=4, num_workers=0, persistent_workers=False)
    loader_cfg.dataset.data_root = transfer_data[task]
    batch = next(iter(HybridRunner.build_dataloader(loader_cfg, seed=0)))
    assert len(batch['inputs']) == 4
    assert tuple(batch['inputs'][0].shape) == (3, 224, 224)
