"""DINO's k-NN (mmhybrid.engine.knn): votes against a hand computation on a toy
bank, the pieces around it, and two torchrun ranks (gloo) against one process
through tools/analysis/knn_eval.py."""
import json
import math
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from mmhybrid.engine.knn import (knn_top1, knn_votes, pool_features,
                                 subset_indices)


def _unit(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


# a toy bank on the unit circle: the angle says who is near whom
BANK_DEG = [0, 10, 20, 90, 100, 180]
BANK_LABELS = [0, 0, 1, 1, 2, 2]


def test_votes_equal_hand_computation():
    bank = torch.tensor([_unit(d) for d in BANK_DEG]) * torch.tensor(
        [[1.0], [2.0], [0.5], [3.0], [1.0], [1.0]])  # norms do not matter
    labels = torch.tensor(BANK_LABELS)
    query = torch.tensor([_unit(5), _unit(95)])
    k, t = 3, 0.5
    votes = knn_votes(bank, labels, query, k=k, temperature=t)

    def w(angle_deg):  # exp(cos / T) of one neighbour
        return math.exp(math.cos(math.radians(angle_deg)) / t)

    # query at 5 deg: neighbours at 0 and 10 (class 0, 5 deg away each) and
    # 20 (class 1, 15 deg away); 90 is 85 deg away, outside k = 3
    expected0 = [2 * w(5), w(15), 0.0]
    # query at 95 deg: 90 (class 1) and 100 (class 2), 5 deg each, then 20
    # (class 1) at 75 deg before 180 at 85 deg and 10 at 85 deg
    expected1 = [0.0, w(5) + w(75), w(5)]
    torch.testing.assert_close(
        votes, torch.tensor([expected0, expected1]), rtol=1e-6, atol=1e-6)

    # top-1: query 0 -> class 0 (right), query 1 -> class 1 (labelled 2)
    assert knn_top1(
        bank, labels, query, torch.tensor([0, 2]), k=k, temperature=t) == 50.0
    top1, pred = knn_top1(
        bank,
        labels,
        query,
        torch.tensor([0, 1]),
        k=k,
        temperature=t,
        return_predictions=True)
    assert top1 == 100.0 and pred.tolist() == [0, 1]
    # k above the bank: every bank feature votes
    all_votes = knn_votes(bank, labels, query[:1], k=50, temperature=t)
    assert all_votes.sum().item() == pytest.approx(
        sum(w(abs(5 - d)) for d in BANK_DEG), rel=1e-6)
    # chunked queries give the same votes
    torch.testing.assert_close(
        knn_votes(bank, labels, query, k=k, temperature=t, chunk_size=1),
        votes)


def test_pool_and_subsets():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    assert torch.equal(pool_features((tokens, ), 'cls'), tokens[:, 0])
    assert torch.equal(pool_features(tokens, 'mean'), tokens[:, 1:].mean(1))
    assert torch.equal(pool_features(tokens[:, 0], 'cls'), tokens[:, 0])
    with pytest.raises(ValueError, match="feature='cls'"):
        pool_features(tokens[:, 0], 'mean')
    with pytest.raises(ValueError, match='feature must be'):
        pool_features(tokens, 'max')
    assert list(subset_indices(10, None)) == list(range(10))
    assert list(subset_indices(10, 1.0)) == list(range(10))
    assert list(subset_indices(10, 0.5)) == [0, 2, 4, 6, 8]
    assert list(subset_indices(10, 3)) == [0, 3, 6]
    assert list(subset_indices(10, 99)) == list(range(10))


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(repo_root):
    path = [repo_root] + [
        p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p
    ]
    return dict(
        os.environ,
        OMP_NUM_THREADS='1',
        PYTHONUNBUFFERED='1',
        PYTHONPATH=os.pathsep.join(path))


@pytest.mark.slow
def test_two_ranks_give_the_top1_of_one(repo_root, tmp_path, demo_teachers,
                                        shapes_imagenet):
    """``torchrun --nproc_per_node 2 ...

    --launcher pytorch`` (gloo): each
    rank encodes its shard, the features are gathered; the predictions and
    the top-1 equal one process's. Odd set sizes (63 bank, 19 val images)
    make the last shard padded.
    """
    _, tm = demo_teachers
    args = [
        'tools/analysis/knn_eval.py', tm, '--arch', '96,4,3', '--data-root',
        shapes_imagenet, '--bank-size', '63', '--val-size', '19',
        '--num-workers', '0', '--batch-size', '8'
    ]
    results = {}
    for name, prefix, extra in (
        ('one', [sys.executable], []),
        ('two', [
            sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
            '2', '--master_port',
            str(_free_port())
        ], ['--launcher', 'pytorch']),
    ):
        out = tmp_path / f'{name}.json'
        proc = subprocess.run(
            prefix + args + extra + ['--out', str(out)],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=600,
            env=_env(repo_root))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert 'k-NN top-1' in proc.stdout
        results[name] = json.loads(out.read_text())
    one, two = results['one'], results['two']
    assert (one['world_size'], two['world_size']) == (1, 2)
    assert (two['num_bank'], two['num_val']) == (63, 19)
    assert two['predictions'] == one['predictions']
    assert two['top1'] == one['top1']
    # a real classifier, not a constant: the teacher's features separate
    # some classes
    assert len(set(one['predictions'])) > 1
    assert osp.isfile(str(tmp_path / 'two.json'))


def test_monitor_datasets_follow_the_run_and_missing_data_disables(
        tmp_path, shapes_imagenet):
    """KNNMonitorHook's bank is the run's train dataset with the hook's
    pipeline, its queries that config with ``val_overrides``; data that cannot
    be read turns the hook off (one WARNING) instead of ending the run."""
    import types

    from mmengine.config import Config
    from mmengine.logging import MessageHub

    from mmhybrid.engine.hooks import KNNMonitorHook
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    train = dict(
        type='CustomDataset',
        data_root=shapes_imagenet,
        data_prefix='train',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackInputs')
        ])
    runner = types.SimpleNamespace(
        cfg=Config(dict(train_dataloader=dict(dataset=train))),
        message_hub=MessageHub.get_instance('test_knn_monitor'))
    hook = KNNMonitorHook(
        pipeline=pipeline,
        val_overrides=dict(data_prefix='val'),
        bank_size=10,
        num_workers=0)
    bank_cfg, val_cfg = hook._dataset_cfgs(runner)
    assert bank_cfg['pipeline'] == pipeline and val_cfg['pipeline'] == pipeline
    assert (bank_cfg['data_prefix'], val_cfg['data_prefix']) == ('train',
                                                                 'val')
    hook.before_train(runner)
    bank, bank_idx, val, val_idx = hook._sets
    assert len(bank) == len(bank_idx) == 10  # the subset's entries only
    assert len(val_idx) == len(val) == 20

    runner.cfg.train_dataloader.dataset.data_root = str(tmp_path / 'none')
    gone = KNNMonitorHook(
        pipeline=pipeline, val_overrides=dict(data_prefix='val'))
    gone.before_train(runner)
    assert gone._disabled and gone.evaluate(runner, 10) is None


def test_feature_extraction_leaves_the_training_rng_alone():
    """A monitor that runs between training steps must not shift the training
    randomness: loader workers draw their seed from a generator of their own,
    not from torch's global RNG."""
    import torch

    from mmhybrid.engine.knn import extract_features

    class Tiny(torch.utils.data.Dataset):

        def __len__(self):
            return 6

        def __getitem__(self, i):
            from mmpretrain.structures import DataSample
            return dict(
                inputs=torch.full((3, ), float(i)),
                data_samples=DataSample().set_gt_label(i % 2))

    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    extract_features(
        lambda b: b['inputs'].float(), Tiny(), batch_size=2, num_workers=1)
    assert torch.equal(torch.rand(3), want)


THREE = 'configs/demo/hybrid-distill_vit-tiny-p8_3-teachers_1xb32-4e_shapes.py'


def test_knn_eval_of_a_zoo_teacher_of_a_teachers_config(
        tmp_path, demo_teachers, shapes_imagenet):
    """``--component dino`` of the three-teacher demo config: the ZooTeacher's.

    [CLS] from its own forward, loaded and normalised as the training model
    loads and normalises it.
    """
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    from mmhybrid.analysis.knn import knn_eval_report
    from mmhybrid.analysis.vit_loading import ZooTeacherVit, vit_from_config
    from mmhybrid.testing import save_zoo_demo_teacher
    dino = save_zoo_demo_teacher(str(tmp_path / 'dino.pth'), 3)
    opts = {
        'model.teachers.sup.teacher.checkpoint': demo_teachers[0],
        'model.teachers.dino.teacher.checkpoint': dino,
        'model.teachers.mae.teacher.checkpoint': demo_teachers[1],
        # its own normalisation, other than the student's: re-normalised
        'model.teachers.dino.teacher.mean': [122.8, 116.0, 104.0],
        'model.teachers.dino.teacher.std': [68.5, 66.6, 70.3],
    }
    got = knn_eval_report(
        THREE,
        shapes_imagenet,
        component='dino',
        bank_size=32,
        val_size=10,
        batch_size=16,
        num_workers=0,
        cfg_options=opts)
    assert got['weights'] == f'{dino} (ZooTeacher(VisionTransformer))'
    assert (got['num_bank'], got['num_val']) == (32, 10)
    assert len(got['predictions']) == 10 and 0 <= got['top1'] <= 100
    # the features are the training model's dino teacher's [CLS]
    cfg = Config.fromfile(THREE)
    cfg.merge_from_dict(opts)
    vit = vit_from_config(cfg, 'dino')
    assert isinstance(vit, ZooTeacherVit) and vit.img_size == (56, 56)
    model = MODELS.build(cfg.model)
    model.teachers['dino'].init_weights()
    images = torch.randint(0, 256, (2, 3, 56, 56), dtype=torch.uint8)
    dp = model.data_preprocessor
    x = (images.float() - dp.mean) / dp.std
    with torch.no_grad():
        want = model.teachers['dino'](x).tokens[:, 0]
        assert torch.allclose(vit.features(images), want, atol=1e-5)
        assert torch.allclose(
            vit.features(images, 'mean'),
            model.teachers['dino'](x).tokens[:, 1:].mean(1),
            atol=1e-5)
