"""Moved to :mod:`tvlens.runs.checkpoints` (run folders and checkpoints on disk have one home:
:mod:`tvlens.runs`); this module keeps the old import path working."""

from tvlens.runs.checkpoints import (  # noqa: F401
    CKPT_DIR,
    REQUIRED_FILES,
    Checkpoint,
    checkpoint_name,
    clean_temporary,
    is_run_dir,
    list_checkpoints,
    resolve_checkpoint,
    validate_checkpoint,
    write_atomically,
    write_json_atomically,
)
