from .distill_projection_neck import DistillProjectionNeck

__all__ = ['DistillProjectionNeck']
