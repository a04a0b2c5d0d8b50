from .checkpoint import (CheckpointError, check_finite_weights,
                         extract_state_dict, load_checkpoint_file,
                         non_finite_keys, probe_checkpoint,
                         save_checkpoint_atomic)

__all__ = [
    'CheckpointError', 'load_checkpoint_file', 'save_checkpoint_atomic',
    'extract_state_dict', 'probe_checkpoint', 'check_finite_weights',
    'non_finite_keys'
]
