"""The command line of ``tools/model_converters/hybrid2*.py``: one
:func:`main` per target; every failure is one ``ERROR:`` line and exit
status 1."""
import argparse
import os
import re
import sys
from typing import List

from ..utils import CheckpointError
from ..utils.sizes import as_pair
from ..vit_checkpoints import FORMATS
from .common import DEFAULT_IMG_SIZE, ConversionError
from .to_mmpretrain import convert_to_mmpretrain
from .to_timm import convert_to_timm


def parse_args(target: str, argv=None) -> argparse.Namespace:
    what = {
        'mmpretrain': 'mmpretrain VisionTransformer (ImageNet fine-tuning, '
        'linear probing)',
        'mmseg': 'the mmpretrain VisionTransformer inside the mmseg UperNet '
        "configs, or mmseg's own MAE / BEiT backbones",
        'mmdet':
        'the mmpretrain VisionTransformer inside the mmdet Mask R-CNN '
        '(simple feature pyramid) configs',
        'timm': "timm's VisionTransformer, as .safetensors",
    }[target]
    p = argparse.ArgumentParser(
        description=f'Convert an mmhybrid pretraining checkpoint to {what}. '
        'Keys are checked strictly against the target model; position '
        'embeddings are resized to the target input size.')
    p.add_argument('src', help='pretraining checkpoint (.pth / .safetensors)')
    p.add_argument(
        'dst',
        help='output file' +
        (' (.safetensors)' if target == 'timm' else ' (.pth)'))
    p.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        default=None,
        help=f'target input size, one value or H W (default: the config\'s '
        f'backbone img_size, else {DEFAULT_IMG_SIZE[target]})')
    if target != 'timm':
        p.add_argument(
            '--config',
            default=None,
            help='downstream config whose model.backbone is the target '
            '(recommended: checks against exactly the model that will load it)'
        )
        p.add_argument(
            '--allow',
            default=None,
            metavar='REGEX',
            help='keys that may differ: matching source keys the target lacks '
            'are dropped, matching target keys the source lacks are left to '
            "the target's init (e.g. 'ln[12]\\.' for a global-pool head with "
            'final_norm=False)')
    p.add_argument(
        '--num-heads',
        type=int,
        default=None,
        help='attention heads (not in the weights; default: the '
        "config's, else mmpretrain's arch zoo, else the published "
        'head count of the width; required for other widths)')
    p.add_argument('--src-format', default='auto', choices=FORMATS)
    return p.parse_args(argv)


def _by_block(keys: List[str]) -> str:
    """Key names with the block index folded (``layers.*.gamma_1``), so that a
    per-block tensor is listed once."""
    names = sorted({re.sub(r'^layers\.\d+\.', 'layers.*.', k) for k in keys})
    if len(names) == len(keys):
        return str(keys)
    return f'{len(keys)} tensors, {names}'


def format_report(report: dict) -> str:
    """What a conversion did, in lines (the CLI's output)."""
    lines = [
        f"converted {report['num_tensors']} tensors for {report['target']}"
        f" ({report.get('backbone_type', 'VisionTransformer')}, img_size "
        f"{report['img_size']}, pos_embed {report['pos_embed']['src_grid']}"
        f" -> {report['pos_embed']['dst_grid']})",
        f"missing keys: {len(report['missing'])}, unexpected keys: "
        f"{len(report['unexpected'])}"
    ]
    if report.get('allowed_missing'):
        lines.append(f"left to the target's init: "
                     f"{_by_block(report['allowed_missing'])}")
    if report.get('dropped'):
        lines.append(f'source tensors not used by the target: '
                     f"{_by_block(report['dropped'])}")
    for note in report.get('notes', []):
        lines.append(f'note: {note}')
    if report['target'] == 'timm':
        kw = report['timm_kwargs']
        if report.get('timm_model'):
            lines.append(
                f"load with: timm.create_model('{report['timm_model']}', "
                'pretrained=True, num_classes=0, pretrained_cfg_overlay='
                "dict(file='<DST>'))")
        lines.append(f'timm VisionTransformer kwargs: {kw}')
    return '\n'.join(lines)


def main(target: str, argv=None) -> int:
    """Convert as ``hybrid2<target>.py`` is asked; the exit status.

    Args:
        target (str): ``'mmpretrain'``, ``'mmseg'``, ``'mmdet'`` or ``'timm'``.
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.
    """
    args = parse_args(target, argv)
    img_size = None if args.img_size is None else as_pair(args.img_size)
    try:
        if target == 'timm':
            report = convert_to_timm(
                args.src,
                args.dst,
                img_size or DEFAULT_IMG_SIZE['timm'],
                num_heads=args.num_heads,
                src_format=args.src_format)
        else:
            report = convert_to_mmpretrain(
                args.src,
                args.dst,
                config=args.config,
                img_size=img_size,
                target=target,
                num_heads=args.num_heads,
                allow=args.allow,
                src_format=args.src_format)
    except (ConversionError, CheckpointError) as e:
        one_line = '; '.join(ln.strip() for ln in str(e).splitlines()
                             if ln.strip())
        print(f'ERROR: {one_line}', file=sys.stderr)
        return 1
    print(format_report(report))
    print(f'saved {os.path.abspath(args.dst)}')
    return 0
