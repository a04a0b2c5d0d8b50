from .checkpoint import (CheckpointError, extract_state_dict,
                         load_checkpoint_file, save_checkpoint_atomic)

__all__ = [
    'CheckpointError', 'load_checkpoint_file', 'save_checkpoint_atomic',
    'extract_state_dict'
]
