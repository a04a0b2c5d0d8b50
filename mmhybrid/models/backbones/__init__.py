from .hybrid_vit import DistillOutput, HybridViT
from .strict_pretrained_vit import StrictPretrainedViT

__all__ = ['HybridViT', 'DistillOutput', 'StrictPretrainedViT']
