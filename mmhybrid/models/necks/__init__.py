from .distill_projection_neck import DistillProjectionNeck
from .simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ['DistillProjectionNeck', 'SimpleFeaturePyramid']
