"""Check that the model index and the config files agree (the lint's
``metafile`` hook): every config listed in configs/**/metafile.yml exists and
every pretraining/downstream config is listed.

    python tools/check_metafile.py [--root DIR]

Prints one line per problem and exits 1 if there is any. The rule is
:func:`mmhybrid.utils.metafile.check_model_index`.
"""
import argparse
import os.path as osp
import sys

from mmhybrid.utils.metafile import check_model_index


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--root',
        default=osp.dirname(osp.dirname(osp.abspath(__file__))),
        help='repository root holding model-index.yml and configs/ '
        '(default: this checkout)')
    return parser.parse_args()


def main():
    problems = check_model_index(parse_args().root)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
