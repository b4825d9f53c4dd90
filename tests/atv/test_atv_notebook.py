"""notebooks/05_atv.ipynb executed end to end on the tiny preset."""


def test_atv_notebook_runs(tmp_path, run_notebook):
    run_notebook("05_atv.ipynb", tmp_path)
