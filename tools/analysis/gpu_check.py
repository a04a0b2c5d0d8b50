"""The analysis tools on a GPU: same numbers as on the CPU, and how long they take.

Builds a ViT-B/16-shaped checkpoint in timm's layout (random, perturbed weights:
the statistics of real weights are not the point here) and a few generated
images, then runs ``tools/analysis/attention_stats.py`` on ``cuda`` and on
``cpu`` and compares the two CSVs, and ``visualize_masking.py`` on ``cuda``.

    python tools/analysis/gpu_check.py --out work_dirs/gpu_check_analysis
"""
import argparse
import csv
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.environ.get('OUT', 'work_dirs/gpu_check'))
    p.add_argument('--num-images', type=int, default=64)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--work', default='/tmp/mmhybrid_analysis_gpu_check',
                   help='where the generated images and checkpoint go')
    p.add_argument('--devices', default='cuda,cpu',
                   help='the two devices compared. Default: cuda,cpu')
    args = p.parse_args()
    dev_a, dev_b = args.devices.split(',')
    import torch
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from mmhybrid.analysis.attention_tools import (attention_stats_report,
                                                  masking_schedule_figure)
    from mmhybrid.datasets import make_imagenet_style
    os.makedirs(args.out, exist_ok=True)
    data = make_imagenet_style(osp.join(args.work, 'data'), num_train=0,
                               num_val=args.num_images, size=64, seed=0)
    torch.manual_seed(0)
    vit = TimmViT(img_size=args.img_size, patch_size=16, embed_dim=768,
                  depth=12, num_heads=12, num_classes=0)
    with torch.no_grad():
        for prm in vit.parameters():
            prm.add_(torch.randn_like(prm) * 0.05)
    ckpt = osp.join(args.work, 'vit_b16_timm.pth')
    torch.save({'model': vit.state_dict()}, ckpt)

    times = {}
    for i, device in enumerate((dev_a, dev_b)):
        t0 = time.time()
        attention_stats_report(
            ckpt, osp.join(data, 'val'), osp.join(args.out, f'stats{i}_{device}'),
            ckpt_format='timm', num_images=args.num_images, batch_size=32,
            device=device)
        times[f'attention_stats {device}'] = time.time() - t0
    a = _rows(osp.join(args.out, f'stats0_{dev_a}', 'attention_stats.csv'))
    b = _rows(osp.join(args.out, f'stats1_{dev_b}', 'attention_stats.csv'))
    assert len(a) == len(b) == 12 * 12
    worst = {k: max(abs(float(x[k]) - float(y[k])) for x, y in zip(a, b))
             for k in ('attn_distance_px', 'attn_entropy_nats', 'nmi')}
    print(f'max |{dev_a} - {dev_b}| over 144 (layer, head):', worst)
    t0 = time.time()
    masking_schedule_figure(ckpt, osp.join(data, 'val'),
                            osp.join(args.out, 'masking.png'),
                            ckpt_format='timm', device=dev_a)
    times[f'visualize_masking {dev_a}'] = time.time() - t0
    print('seconds (incl. model build and image reading):', {
        k: round(v, 1) for k, v in times.items()})


if __name__ == '__main__':
    main()
