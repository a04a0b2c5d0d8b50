"""The paper's study in miniature, on the CPU: `make study`.

The demo's pipeline (:mod:`mmhybrid.miniature.pipeline`) with four students
(feature-only, relation-only, hybrid, hybrid without masking) and the top-k
ablation over five seeds, from a MoCo v3 Tc and an MAE Tm whose premise it
measures first, on the built-in generated objects or any ImageNet-style folder
(``--data-root``): linear probe, fine-tune, k-NN, attention statistics and
distances to the teachers per model and seed; ``WORK_DIR/report.md`` with
mean +- std, plots and a verdict on each of the paper's three claims
(:func:`mmhybrid.miniature.study.run_study`).

``--quick`` is the same pipeline on a fraction of the data and iterations with
two seeds (the CI test runs it); its numbers mean nothing.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from mmhybrid.miniature.pipeline import add_pipeline_args
    from mmhybrid.miniature.study import (ABLATIONS, DEFAULT_ABLATIONS,
                                          FEATURE_TEACHER, FULL, QUICK,
                                          STUDENTS, TEACHERS)
    p = argparse.ArgumentParser(
        description='The Hybrid Distillation study in miniature (CPU).')
    add_pipeline_args(p, work_dir='work_dirs/study')
    p.add_argument(
        '--quick',
        action='store_true',
        help='a few iterations of everything, two seeds (CI); '
        'numbers are meaningless')
    p.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=None,
        help='one repeat per seed. Default: 0 1 2 3 4 (quick: 0 1)')
    p.add_argument(
        '--students',
        nargs='+',
        default=None,
        choices=[n for n, *_ in STUDENTS + ABLATIONS],
        help='the students to run: the four of the claims (' +
        ', '.join(n for n, *_ in STUDENTS) + ') and the ablation rows (' +
        ', '.join(n for n, *_ in ABLATIONS) + '); the verdicts need the '
        'first four. Default: those four and ' + ', '.join(DEFAULT_ABLATIONS))
    p.add_argument(
        '--feature-teacher',
        choices=sorted(TEACHERS),
        default=FEATURE_TEACHER,
        help="Tc: mmpretrain's MoCoV3 with a tiny ViT (moco) or the "
        'supervised ViT classifier (sup). Default: %(default)s')
    p.add_argument(
        '--student-options',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help='--cfg-options given to every student before its '
        'own (an ablation: e.g. --students hybrid '
        '--student-options model.loss_rel.loss_weight=0.5); no '
        'verdicts then')
    p.add_argument(
        '--iters',
        type=int,
        default=None,
        help='iterations of the feature teacher and of each '
        'student; sets --teacher-iters and --student-iters')
    p.add_argument(
        '--keep-going',
        action='store_true',
        help='report the stages that ran even if one fails')
    for k, v in FULL.items():
        p.add_argument(
            '--' + k.replace('_', '-'),
            type=int,
            default=None,
            help=f'default {v} (quick: {QUICK[k]})')
    return p.parse_args(argv)


def main(argv=None):
    from mmhybrid.miniature.study import FULL, SEEDS, run_study, study_settings
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_study(
        args.work_dir,
        study_settings(args.quick, args.iters,
                       **{k: getattr(args, k)
                          for k in FULL}), args.seeds
        or ([0, 1] if args.quick else list(SEEDS)), args.students,
        args.feature_teacher, args.student_options, args.data_root,
        args.num_classes, args.img_size, args.patch_size, args.jobs,
        args.keep_going, args.resume, args.subprocess,
        'python tools/analysis/run_study.py ' + ' '.join(argv))


if __name__ == '__main__':
    main()
