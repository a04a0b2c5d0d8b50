from .hybrid_vit import DistillOutput, HybridViT

__all__ = ['HybridViT', 'DistillOutput']
