from .progressive_masking_hook import ProgressiveMaskingHook

__all__ = ['ProgressiveMaskingHook']
