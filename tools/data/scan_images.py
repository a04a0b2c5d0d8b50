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
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)

if __name__ == '__main__':
    from mmhybrid.datasets.image_scan import main
    sys.exit(main())
