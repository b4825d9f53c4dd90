"""notebooks/05_atv.ipynb executed end to end on the tiny preset."""

import shutil


def test_atv_notebook_runs(tmp_path, run_notebook, atv_target):
    # The notebook reuses a finished target run in its run folder instead of training one.
    shutil.copytree(atv_target, tmp_path / "atv-target")
    run_notebook("05_atv.ipynb", tmp_path)
