"""List every unreadable or empty image of a dataset folder.

Example::

    python tools/data/scan_images.py data/imagenet/train --workers 16 \
        --state work_dirs/scan_imagenet_train.tsv

Checks each image as the training guard does (non-empty, Pillow decodes every
byte) in parallel with a progress bar, prints ``path<TAB>reason`` for each bad
one and exits with status 1 if there is any. ``--state`` records every checked
file: a scan that is stopped and run again with the same file continues where
it stopped. Remove the files it lists, or train with
``custom_hooks=[dict(type='UnreadableImageHook', on_unreadable='skip')]``.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description='List the unreadable or empty images of a folder.')
    parser.add_argument('root', help='dataset folder (searched recursively)')
    parser.add_argument(
        '--workers',
        type=int,
        default=None,
        help='decoding threads (default: all CPUs)')
    parser.add_argument(
        '--state',
        default=None,
        help='record of checked files; a rerun with the same '
        'file skips them (default: no record)')
    parser.add_argument(
        '--out',
        default=None,
        help='also write the bad files (path<TAB>reason) here')
    parser.add_argument(
        '--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmhybrid.datasets.image_scan import scan_images
    try:
        bad = scan_images(
            args.root,
            workers=args.workers,
            state_file=args.state,
            progress=not args.no_progress)
    except FileNotFoundError as e:
        print(f'ERROR: {e}', file=sys.stderr)
        return 2
    lines = [f'{path}\t{reason}' for path, reason in bad]
    for line in lines:
        print(line)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(''.join(line + '\n' for line in lines))
    print(f'{len(bad)} unreadable image(s) under {args.root}', file=sys.stderr)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
