"""Fixtures of the downstream tests: generated data for the three libraries, a
synthetic student checkpoint (fast tests) and a real one from a tiny
``HybridDistill`` run through ``tools/train.py`` (slow tests)."""
import os.path as osp
import subprocess

import pytest
import torch

from mmhybrid.testing import DEMO_ARCH

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_ARCH = dict(DEMO_ARCH)
DEMO = {
    'ft':
    'configs/benchmarks/demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb8-4i_shapes.py',  # noqa: E501
    'linear':
    'configs/benchmarks/demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb16-linear-4i_shapes.py',  # noqa: E501
    'ade20k':
    'configs/benchmarks/demo/upernet_vit-tiny-p8_hybrid-distill-300i-pre_1xb4-4i_shapes-64x64.py',  # noqa: E501
    'coco':
    'configs/benchmarks/demo/mask-rcnn_vit-tiny-p8_hybrid-distill-300i-pre_sfp_1xb2-4i_shapes.py',  # noqa: E501
}
DEMO_TARGET = {
    'ft': 'mmpretrain',
    'linear': 'mmpretrain',
    'ade20k': 'mmseg',
    'coco': 'mmdet'
}


def make_student_checkpoint(path,
                            seed=0,
                            arch=TINY_ARCH,
                            img_size=64,
                            patch_size=8,
                            perturb=True):
    """A checkpoint laid out as ``HybridDistill`` saves one: ``backbone.*`` (a
    ``HybridViT``) + ``neck.*`` + meta; every tensor made non-trivial."""
    from mmhybrid.models.backbones import HybridViT
    torch.manual_seed(seed)
    vit = HybridViT(
        arch=arch, img_size=img_size, patch_size=patch_size, out_type='raw')
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in vit.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    sd = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    width = arch['embed_dims']
    sd['neck.proj.weight'] = torch.randn(width, width)
    sd['neck.proj.bias'] = torch.zeros(width)
    torch.save(dict(state_dict=sd, meta=dict(iter=1)), path)
    return str(path)


@pytest.fixture(scope='session')
def synthetic_student(tmp_path_factory):
    """Tiny student checkpoint (96 wide, 4 blocks, 64 px, 8 px patches)."""
    return make_student_checkpoint(
        tmp_path_factory.mktemp('student') / 'student.pth')


@pytest.fixture(scope='session')
def downstream_data(tmp_path_factory, shapes_imagenet):
    """Generated data in the three layouts (64 px)."""
    from mmhybrid.datasets import make_ade20k_style, make_coco_style
    root = tmp_path_factory.mktemp('downstream_data')
    return dict(
        imagenet=shapes_imagenet,
        ade20k=make_ade20k_style(
            str(root / 'ade20k'), num_train=8, num_val=3, size=64, seed=0),
        coco=make_coco_style(
            str(root / 'coco'), num_train=8, num_val=3, size=64, seed=0))


@pytest.fixture(scope='session')
def pretrained_student(tmp_path_factory, demo_train_cmd):
    """A real student: the tiny demo ``HybridDistill`` config trained for a few
    iterations through tools/train.py from the tiny demo teachers."""
    work = tmp_path_factory.mktemp('hybrid_pretrain')
    iters = 3
    cmd = demo_train_cmd(work, iters)
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = work / f'iter_{iters}.pth'
    assert ckpt.is_file()
    return str(ckpt)
