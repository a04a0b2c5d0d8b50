"""The miniature pipeline `make demo` and `make study` share
(mmhybrid.miniature): data layouts, config options, k-NN, and the
demo end to end on a user's folder."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mmhybrid.datasets import render_object
from mmhybrid.miniature.configs import CONFIGS, load_config, model_options
from mmhybrid.miniature.data import data_options, describe_folder
from mmhybrid.miniature.measures import knn_top1, mean_std


def write_annotated_folder(root, num_classes=3, per_split=(24, 9), size=40):
    """Images straight in train/ and val/ (no class folders), labels only in
    meta/{train,val}.txt: not the built-in layout."""
    for split, n in zip(('train', 'val'), per_split):
        os.makedirs(osp.join(root, split))
        lines = []
        for i in range(n):
            label = i % num_classes
            sample = render_object(
                np.random.default_rng([7, n, i]), size, label=label)
            name = f'img_{i:03d}.png'
            Image.fromarray(sample['image']).save(osp.join(root, split, name))
            lines.append(f'{name} {label}\n')
        os.makedirs(osp.join(root, 'meta'), exist_ok=True)
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    return str(root)


def test_knn_votes_for_the_nearest_labels():
    train = torch.tensor([[1., 0.], [0.9, 0.1], [0., 1.], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    val = torch.tensor([[2., 0.1], [0.2, 3.]])  # cosine: scale-free
    assert knn_top1(train, labels, val, torch.tensor([0, 1]), k=2) == 100.0
    assert knn_top1(train, labels, val, torch.tensor([1, 0]), k=2) == 0.0


def test_knn_weights_closer_neighbours_more():
    # two far votes for class 1 lose against one very close vote for class 0
    train = torch.tensor([[1., 0.], [0., 1.], [0.1, 1.]])
    labels = torch.tensor([0, 1, 1])
    val = torch.tensor([[1., 0.05]])
    assert knn_top1(train, labels, val, torch.tensor([0]), k=3) == 100.0


def test_mean_std_over_repeats():
    assert mean_std([1.0, 3.0, None]) == (2.0, pytest.approx(2**0.5), 2)
    assert mean_std([5.0]) == (5.0, 0.0, 1)
    assert mean_std([None])[2] == 0


def test_annotation_files_give_labels_and_class_count(tmp_path):
    root = write_annotated_folder(tmp_path / 'ann', num_classes=3)
    data = describe_folder(root)
    assert data.num_classes == 3 and not data.builtin
    assert data.ann == {'train': 'meta/train.txt', 'val': 'meta/val.txt'}
    opts = data_options(data, loaders=('train', 'val'))
    assert 'train_dataloader.dataset.ann_file=meta/train.txt' in opts
    assert 'val_dataloader.dataset.ann_file=meta/val.txt' in opts
    assert describe_folder(root, num_classes=5).num_classes == 5
    with pytest.raises(ValueError, match='below the 3 classes'):
        describe_folder(root, num_classes=2)


def test_class_folders_give_the_class_count(tmp_path):
    for split in ('train', 'val'):
        for c in ('cat', 'dog'):
            os.makedirs(tmp_path / split / c)
    data = describe_folder(str(tmp_path))
    assert data.num_classes == 2 and data.ann is None
    os.makedirs(tmp_path / 'val' / 'eel')
    with pytest.raises(ValueError, match='same class folders'):
        describe_folder(str(tmp_path))


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such folder') as e:
        describe_folder(str(tmp_path))
    assert '\n' not in str(e.value)
    root = write_annotated_folder(tmp_path / 'ann')
    with open(osp.join(root, 'meta', 'val.txt'), 'a') as f:
        f.write('broken.png cat\n')
    with pytest.raises(ValueError, match=r'val.txt:10: expected'):
        describe_folder(root)


@pytest.mark.parametrize('kind', sorted(CONFIGS))
def test_model_options_resize_every_demo_config(kind):
    """Image size, patch size and class count reach every place a demo config
    keeps them: the built model takes 40 px images with 5 px patches."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mmhybrid  # noqa: F401
    opts = model_options(kind, 40, 5, 3)
    if kind == 'hybrid':  # teachers without files: random weights
        opts += [
            'model.teacher_feat.checkpoint=None',
            'model.teacher_rel.checkpoint=None'
        ]
    cfg = load_config(CONFIGS[kind], opts)
    if kind in ('sup', 'probe', 'finetune'):
        cfg.model.backbone.init_cfg = None
        assert cfg.model.head.num_classes == 3
    for loader in ('train', 'val', 'test'):
        if f'{loader}_dataloader' in cfg:
            pipe = cfg[f'{loader}_dataloader'].dataset.pipeline
            assert (pipe[1].type, pipe[1].scale) == ('ResizeEdge', 40)
            assert (pipe[2].type, pipe[2].crop_size) == ('CenterCrop', 40)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    x = torch.rand(2, 3, 40, 40)
    if kind == 'hybrid':  # student and both teachers on 8 x 8 patches
        model.init_weights()
        assert model.backbone.forward_distill(x).tokens.shape == (2, 65, 96)
        assert model.loss(x)['loss_rel'] >= 0
    elif kind == 'mae':  # encoder, decoder and pixel target agree
        assert model.backbone(x)[0].shape[1] == 1 + 64 // 4
        assert model.loss(x, [])['loss'] > 0
    elif kind == 'moco':  # both views crop to the size; two views, one loss
        views = cfg.train_dataloader.dataset.pipeline[3].transforms
        assert [v[0].scale for v in views] == [40, 40]
        model.init_weights()
        assert model.backbone(x)[0].shape == (2, 96)
        assert model.loss([x, torch.rand(2, 3, 40, 40)], [])['loss'] > 0
    else:
        assert model(x, mode='tensor').shape == (2, 3)


def test_model_options_refuse_a_size_the_patches_do_not_tile():
    with pytest.raises(ValueError, match='not a multiple of --patch-size 6'):
        model_options('sup', 64, 6, 5)


@pytest.mark.slow
def test_demo_runs_on_a_user_folder_with_annotation_files(repo_root, tmp_path):
    """`run_demo.py --data-root` end to end on a folder of another layout,
    class count and image size than the built-in data (numbers meaningless:

    a few iterations).
    """
    root = write_annotated_folder(tmp_path / 'mydata', num_classes=3)
    work = tmp_path / 'demo'
    proc = subprocess.run([
        sys.executable, 'tools/demo/run_demo.py', '--data-root', root,
        '--img-size', '32', '--patch-size', '4', '--iters', '4',
        '--probe-iters', '2', '--attn-images', '6', '--work-dir',
        str(work)
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert '(3 classes, annotation files)' in proc.stdout
    assert 'ETA' in proc.stdout
    report = open(work / 'report.md').read()
    rows = [ln for ln in report.splitlines() if ln.startswith('| ')][1:]
    assert [r.split(' | ')[0] for r in rows] == [
        '| hybrid student', '| teacher Tc (supervised ViT)',
        '| teacher Tm (MAE)', '| random init (no pretraining)'
    ]
    for r in rows:
        probe, knn = (float(v) for v in r.strip(' |').split(' | ')[1:])
        assert 0 <= probe <= 100 and 0 <= knn <= 100
    assert 'Chance: 33.3 %' in report
    assert osp.getsize(work / 'attention_layers.png') > 1000
    # every stage's command is kept for a rerun
    assert open(work / 'logs' / 'hybrid_distill.log.cmd').read().startswith(
        'python tools/train.py configs/demo/hybrid-distill')
