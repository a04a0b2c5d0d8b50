"""Each downstream pipeline, for real, on the CPU: a tiny HybridDistill run
(tools/train.py) -> converter -> a few training iterations of the library's own
model -> its own evaluator (mmpretrain Accuracy, mmseg IoUMetric, mmdet
CocoMetric through pycocotools).

Every run asserts that the backbone was loaded from the converted file with
zero missing / unexpected keys.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmhybrid import converters
from mmhybrid.utils import load_checkpoint_file
from mmhybrid.utils.scalars import read_scalars
from .conftest import DEMO, DEMO_TARGET, ROOT

pytestmark = pytest.mark.slow

ITERS = 2


def _run(cmd, env=None):
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _short(extra=()):
    """Fewer iterations than the demo configs, evaluation at the end."""
    return [
        f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
        f'default_hooks.checkpoint.interval={ITERS}', *extra
    ]


def _data_options(task, data):
    if task in ('ft', 'linear'):
        root = data['imagenet']
    elif task == 'ade20k':
        root = data['ade20k']
    else:
        root = data['coco']
    opts = [
        f'{split}_dataloader.dataset.data_root={root}'
        for split in ('train', 'val', 'test')
    ]
    if task == 'coco':
        ann = osp.join(root, 'annotations', 'instances_val2017.json')
        opts += [
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
        ]
    return opts


def _convert(task, src, dst):
    report = converters.convert_to_mmpretrain(
        src,
        str(dst),
        config=osp.join(ROOT, DEMO[task]),
        target=DEMO_TARGET[task])
    assert report['missing'] == [] and report['unexpected'] == []
    return report


def _log(work_dir):
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    assert logs, f'no log under {work_dir}'
    return open(logs[-1]).read()


def _assert_backbone_loaded(work_dir, converted):
    """The run loaded the converted file into the backbone, and mmengine's
    loader found nothing missing or unexpected."""
    log = _log(work_dir)
    assert f'Loads checkpoint by local backend from path: {converted}' in log
    assert 'do not match exactly' not in log
    assert 'missing keys in source state_dict' not in log
    assert 'unexpected key in source state_dict' not in log


def _final_metrics(work_dir):
    records = read_scalars(work_dir, required=True)
    return {k: v for r in records for k, v in r.items()}


def test_imagenet_finetune_one_command(pretrained_student, downstream_data,
                                       tmp_path):
    """tools/benchmarks/dist_downstream.sh: convert, then torchrun (1 process,
    gloo), then top-1 through mmpretrain's Accuracy."""
    work = tmp_path / 'ft'
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(_free_port()),
        WORK_DIR=str(work),
        OMP_NUM_THREADS='1')
    proc = _run([
        'bash', 'tools/benchmarks/dist_downstream.sh', 'demo-ft',
        pretrained_student, '1', '--cfg-options',
        *_data_options('ft', downstream_data), *_short()
    ],
                env=env)
    assert 'missing keys: 0, unexpected keys: 0' in proc.stdout
    converted = work / 'pretrain_mmpretrain.pth'
    _assert_backbone_loaded(work, converted)
    assert 'Distributed training: True' in _log(work)
    metrics = _final_metrics(work)
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    # the layer-decay constructor ran inside the real runner
    assert 'ViTLayerDecayOptimWrapperConstructor: layer_decay_rate=0.65' in \
        _log(work)


def test_imagenet_linear_probe(pretrained_student, downstream_data, tmp_path):
    """Frozen backbone: after training it still equals the converted weights,
    which it could only do if they were loaded, all of them."""
    work = tmp_path / 'linear'
    converted = tmp_path / 'linear.pth'
    _convert('linear', pretrained_student, converted)
    _run([
        sys.executable, 'tools/train.py', DEMO['linear'], '--work-dir',
        str(work), '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={converted}',
        *_data_options('linear', downstream_data), *_short()
    ])
    _assert_backbone_loaded(work, converted)
    assert 0.0 <= _final_metrics(work)['accuracy/top1'] <= 100.0
    trained = load_checkpoint_file(work / f'iter_{ITERS}.pth')['state_dict']
    ref = load_checkpoint_file(converted)['state_dict']
    backbone = {
        k[len('backbone.'):]: v
        for k, v in trained.items() if k.startswith('backbone.')
    }
    assert set(backbone) == set(ref)
    for k, v in ref.items():
        assert torch.equal(backbone[k], v), k


def test_imagenet_linear_probe_from_the_raw_checkpoint(pretrained_student,
                                                       downstream_data,
                                                       tmp_path):
    """No conversion: the pretraining checkpoint as the runner saved it
    (``backbone.*`` + ``neck.*``) goes straight into the config.

    The frozen backbone after training is the student's, every tensor
    (mmengine's own Pretrained init loaded none of them from this file).
    """
    work = tmp_path / 'linear_raw'
    _run([
        sys.executable, 'tools/train.py', DEMO['linear'], '--work-dir',
        str(work), '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={pretrained_student}',
        *_data_options('linear', downstream_data), *_short()
    ])
    _assert_backbone_loaded(work, pretrained_student)
    trained = load_checkpoint_file(work / f'iter_{ITERS}.pth')['state_dict']
    student = load_checkpoint_file(pretrained_student)['state_dict']
    backbone = {k: v for k, v in trained.items() if k.startswith('backbone.')}
    assert f'StrictPretrainedViT: loaded all {len(backbone)} backbone ' \
        'tensors' in _log(work)
    assert set(backbone) <= set(student)
    for k, v in backbone.items():
        assert torch.equal(v, student[k]), k


def test_ade20k_upernet(pretrained_student, downstream_data, tmp_path):
    """mmseg UperNet: train, mIoU at the end of training, then tools/test.py
    (sliding-window inference) on the trained checkpoint."""
    work = tmp_path / 'ade20k'
    converted = tmp_path / 'ade20k.pth'
    _convert('ade20k', pretrained_student, converted)
    opts = [
        f'model.backbone.init_cfg.checkpoint={converted}',
        *_data_options('ade20k', downstream_data)
    ]
    _run([
        sys.executable, 'tools/train.py', DEMO['ade20k'], '--work-dir',
        str(work), '--cfg-options', *opts, *_short()
    ])
    _assert_backbone_loaded(work, converted)
    assert 'mIoU' in _final_metrics(work)
    out = tmp_path / 'ade20k_test.json'
    _run([
        sys.executable, 'tools/test.py', DEMO['ade20k'],
        str(work / f'iter_{ITERS}.pth'), '--work-dir',
        str(tmp_path / 'ade20k_test'), '--out',
        str(out), '--cfg-options', *opts
    ])
    metrics = json.load(open(out))
    assert {'mIoU', 'aAcc', 'mAcc'} <= set(metrics)
    assert 0.0 <= metrics['mIoU'] <= 100.0


def test_coco_mask_rcnn(pretrained_student, downstream_data, tmp_path):
    """mmdet Mask R-CNN + simple feature pyramid with the position embedding
    resized 8x8 -> 12x12 by the converter: bbox and segm AP via CocoMetric."""
    work = tmp_path / 'coco'
    converted = tmp_path / 'coco.pth'
    report = _convert('coco', pretrained_student, converted)
    assert report['pos_embed'] == dict(src_grid=[8, 8], dst_grid=[12, 12])
    _run([
        sys.executable, 'tools/train.py', DEMO['coco'], '--work-dir',
        str(work), '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={converted}',
        *_data_options('coco', downstream_data), *_short()
    ])
    _assert_backbone_loaded(work, converted)
    metrics = _final_metrics(work)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                'coco/segm_mAP_50'):
        assert key in metrics and -1.0 <= metrics[key] <= 1.0, key


def test_slurm_one_command_converts_then_calls_srun(synthetic_student,
                                                    tmp_path):
    """tools/benchmarks/slurm_downstream.sh with a stand-in ``srun`` on PATH
    (it records its arguments): the conversion ran on the submitting node and
    srun got tools/train.py with the config, the slurm launcher and the
    converted checkpoint.

    (tests/test_reliability runs a real Slurm.)
    """
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    record = tmp_path / 'srun_args.txt'
    srun = bindir / 'srun'
    srun.write_text(f'#!/usr/bin/env bash\necho "$@" > {record}\n')
    srun.chmod(0o755)
    work = tmp_path / 'work'
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        GPUS='16',
        GPUS_PER_NODE='8',
        WORK_DIR=str(work),
        PATH=f'{bindir}:{os.environ["PATH"]}')
    proc = _run([
        'bash', 'tools/benchmarks/slurm_downstream.sh', 'debug', 'demo-ade20k',
        synthetic_student, '--cfg-options', 'train_cfg.max_iters=1'
    ],
                env=env)
    assert 'missing keys: 0, unexpected keys: 0' in proc.stdout
    converted = work / 'pretrain_mmseg.pth'
    assert converted.is_file()
    args = record.read_text().split()
    assert args[:2] == ['-p', 'debug']
    assert '--ntasks=16' in args and '--gres=gpu:8' in args
    i = args.index(osp.join(ROOT, 'tools', 'train.py'))
    assert args[i + 1] == osp.join(ROOT, DEMO['ade20k'])
    assert '--launcher=slurm' in args
    assert f'model.backbone.init_cfg.checkpoint={converted}' in args
    assert args[-1] == 'train_cfg.max_iters=1'
