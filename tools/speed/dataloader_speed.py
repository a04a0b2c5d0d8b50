"""Throughput of a config's training data pipeline, to set against the step.

A distillation step that runs at S images/s needs a data loader that delivers S
images/s, or the GPU waits. This builds ``train_dataloader`` of any config (its
dataset type, pipeline, sampler and collate, exactly as training would) over a
folder of JPEGs and times how many images per second it yields for each number
of worker processes.

    python tools/speed/dataloader_speed.py configs/hybrid_vitb.py \
        --workers 0,1,2 --step-images-per-s 1844

Without ``--data`` it writes, once, a folder in ImageNet's layout of JPEGs with
ImageNet's typical size and file weight (500x375, quality 90, textured content:
about 100 KB each), so decoding costs what it costs on the real data. With
``--data DIR`` it reads your own ImageNet-style folder
(``DIR/train/<class>/...``).

Each worker count is measured in the same process, one after the other, over
``--batches`` batches once the workers' prefetch queue is drained. Files are
read round and round from the page cache: storage speed (a network file
system on many clusters) is not part of the figure.
The last line is machine-readable:

    LOADER images_per_s_per_worker=X workers_for_step=Y
"""
import argparse
import math
import os
import os.path as osp
import shutil
import statistics
import sys
import time

import numpy as np

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args():
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='data pipeline throughput')
    p.add_argument('config')
    p.add_argument(
        '--data',
        help='ImageNet-style folder (DIR/train/<class>/*); '
        'default: generated JPEGs under --cache-dir')
    p.add_argument('--cache-dir', default='work_dirs/loader_bench_data')
    p.add_argument(
        '--num-images',
        type=int,
        default=256,
        help='images to generate when --data is not given')
    p.add_argument(
        '--image-size', default='500x375', help='WxH of generated JPEGs')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument(
        '--batches',
        type=int,
        default=20,
        help='timed batches per worker count (after warm-up)')
    p.add_argument(
        '--workers', default='0,1,2', help='comma-separated worker counts')
    p.add_argument(
        '--step-images-per-s',
        type=float,
        help='throughput of the training step to feed, e.g. from '
        'pretrain_speed.py; prints the workers it needs')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args()


def make_jpeg_folder(root: str,
                     num: int,
                     size: tuple,
                     classes: int = 8,
                     seed: int = 0) -> str:
    """Write ``root/train/cNN/img_XXXXX.JPEG`` files, once.

    The content is smooth colour fields plus mid-frequency texture and noise,
    which compresses like a photograph (about 100 KB at 500x375, quality 90);
    flat or pure-noise images would make decoding look cheaper or dearer than
    it is. A ``.done`` marker is written last, so a run that was interrupted is
    redone rather than measured on a partial folder.
    """
    from PIL import Image
    done = osp.join(root, '.done')
    stamp = f'{num} {size[0]}x{size[1]} {classes} {seed}'
    if osp.isfile(done) and open(done).read() == stamp:
        return root
    if osp.isdir(root) and os.listdir(root):
        # other settings or an interrupted run: start afresh, but only in a
        # folder this function made (never empty someone's own folder)
        if not set(os.listdir(root)) <= {'train', '.done'}:
            sys.exit(f'--cache-dir {root!r} holds files this tool did not '
                     f'write; expected an empty or a previous cache folder')
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(num):
        cls_dir = osp.join(root, 'train', f'c{i % classes:02d}')
        os.makedirs(cls_dir, exist_ok=True)
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            for _ in range(4):
                fx, fy = rng.uniform(0.002, 0.08, 2)
                ph = rng.uniform(0, 2 * np.pi)
                img[..., c] += 30 * np.sin(fx * xx + fy * yy + ph)
            img[..., c] += 110 + rng.normal(0, 20, (h, w))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            osp.join(cls_dir, f'img_{i:05d}.JPEG'), quality=90)
    with open(done, 'w') as f:
        f.write(stamp)
    return root


def build_loader(cfg, data_root: str, batch_size: int, workers: int,
                 generated: bool):
    from mmengine.runner import Runner
    loader_cfg = cfg.train_dataloader.copy()
    # An endless sampler: a small folder is read round and round (from the
    # page cache, so storage speed is not part of the figure) without
    # restarting the workers.
    loader_cfg.update(
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=True))
    dataset = loader_cfg.dataset.copy()
    dataset['data_root'] = data_root
    if generated:
        # Scanned, not listed (no meta/train.txt), and with our few classes
        # in place of the dataset type's own (ImageNet asserts 1000 folders).
        classes = sorted(os.listdir(osp.join(data_root, 'train')))
        dataset.update(ann_file='', metainfo=dict(classes=classes))
        if 'data_prefix' not in dataset and 'split' not in dataset:
            dataset['data_prefix'] = 'train'
    loader_cfg.dataset = dataset
    # HybridRunner's rule (a scoped collate_fn, as the flagship's mmpretrain::
    # base writes it, resolved to its function), without patching mmengine
    from mmhybrid.engine.runners.helpers import resolve_scoped_collate
    return Runner.build_dataloader(resolve_scoped_collate(loader_cfg), seed=0)


def measure(loader, batches: int, workers: int) -> float:
    """Images per second over ``batches`` batches in steady state.

    Workers start together and fill a queue of ``prefetch_factor`` (2) batches
    each, so the first ``1 + 2 * workers`` batches arrive faster than they are
    made; they are drained before the clock starts.
    """
    it = iter(loader)
    for _ in range(1 + 2 * workers):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        n += len(next(it)['inputs'])
    return n / (time.perf_counter() - t0)


def main():
    args = parse_args()
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmhybrid  # noqa: F401
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))

    if args.data:
        data = args.data
        if not osp.isdir(osp.join(data, 'train')):
            sys.exit(
                f'--data {data!r}: expected an ImageNet-style folder with '
                f'a train/ sub-folder of class folders')
    else:
        w, h = (int(v) for v in args.image_size.lower().split('x'))
        t0 = time.time()
        data = make_jpeg_folder(args.cache_dir, args.num_images, (w, h))
        print(
            f'[loader] data: {data} (ready in {time.time() - t0:.1f}s)',
            flush=True)
    files = [
        osp.join(r, f) for r, _, fs in os.walk(osp.join(data, 'train'))
        for f in fs
    ]
    mean_kb = statistics.mean(os.path.getsize(f) for f in files[:200]) / 1024
    pipeline = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    print(
        f'[loader] {args.config}: {cfg.train_dataloader.dataset.type}, '
        f'pipeline {" -> ".join(pipeline)}; {len(files)} files, mean '
        f'{mean_kb:.0f} KB; batch {args.batch_size}; '
        f'{os.cpu_count()} CPUs',
        flush=True)

    rows = []
    for workers in [int(v) for v in args.workers.split(',')]:
        loader = build_loader(
            cfg, data, args.batch_size, workers, generated=not args.data)
        ips = measure(loader, args.batches, workers)
        rows.append((workers, ips))
        print(f'[loader] workers={workers}: {ips:.1f} images/s', flush=True)

    print('\n| workers | images/s | images/s per worker |\n|---|---|---|')
    for workers, ips in rows:
        per = ips / workers if workers else float('nan')
        print(f'| {workers} | {ips:.1f} | {per:.1f} |')
    # One worker process is the honest per-core unit (decode + augment + the
    # hand-over to the main process); the main process alone when not measured.
    by_workers = dict(rows)
    per_worker = by_workers.get(1, by_workers.get(0))
    if per_worker is None:
        per_worker = max(ips / w for w, ips in rows)
    need = (
        math.ceil(args.step_images_per_s /
                  per_worker) if args.step_images_per_s else float('nan'))
    if args.step_images_per_s:
        print(f'\nfeeding {args.step_images_per_s:.0f} images/s at '
              f'{per_worker:.1f} images/s per worker needs about {need} '
              f'workers (free cores) per GPU')
    print(f'LOADER images_per_s_per_worker={per_worker:.1f} '
          f'workers_for_step={need}')


if __name__ == '__main__':
    main()
