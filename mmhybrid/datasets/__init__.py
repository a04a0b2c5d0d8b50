from .image_scan import scan_images
from .resumable_sampler import ResumableSampler
from .sample_guard import (SampleGuard, UnreadableImageError, image_problem,
                           install_sample_guard)
from .shapes import (IMAGENET_TASKS, SHAPE_CLASSES, make_ade20k_style,
                     make_all, make_coco_style, make_imagenet_style,
                     render_object, render_sample)
from .shapes_seg import *  # noqa: F401,F403  (mmseg dataset, if installed)
from .transfer import (CheckedCIFAR100, CheckedStanfordCars, DatasetFileError,
                       INaturalist2019)

__all__ = [
    'SHAPE_CLASSES', 'IMAGENET_TASKS', 'render_sample', 'render_object',
    'make_imagenet_style', 'make_ade20k_style', 'make_coco_style', 'make_all',
    'ResumableSampler', 'SampleGuard', 'UnreadableImageError', 'image_problem',
    'install_sample_guard', 'scan_images', 'CheckedCIFAR100',
    'CheckedStanfordCars', 'INaturalist2019', 'DatasetFileError'
]
