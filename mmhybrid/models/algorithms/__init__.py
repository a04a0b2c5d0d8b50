from .hybrid_distill import HybridDistill, default_relation_pairs

__all__ = ['HybridDistill', 'default_relation_pairs']
