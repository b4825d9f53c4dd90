"""notebooks/03_task_encoding.ipynb executed end to end on the tiny fast path."""

import pytest


# ~40 s; TD, emergence and perturbation have their own tests: `-m slow` keeps the default run
# under 10 minutes
@pytest.mark.slow
def test_task_encoding_notebook_runs(tmp_path, run_notebook):
    run_notebook("03_task_encoding.ipynb", tmp_path)
    assert (tmp_path / "tiny-finetune" / "metrics.json").is_file()
    assert any((tmp_path / "tiny-regression" / "checkpoints").iterdir())
