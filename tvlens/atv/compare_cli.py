"""``tvlens atv compare``: a thin layer over :func:`tvlens.atv.compare.run_compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tvlens.errors import TVLensError


def _list(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def compare_cmd(
    target: Annotated[
        str | None, typer.Option(help="Frozen target: HF name, folder or tvlens run.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the comparison.")] = Path("runs/compare"),
    preset: Annotated[str, typer.Option(help="tiny, cpu or gpu.")] = "cpu",
    seeds: Annotated[int | None, typer.Option(help="Seeds per trained method.")] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset (default: every method).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Function-vector datasets folder (abstractive/, extractive/) for "
            "fv/<task> tasks, e.g. ../shared/data/function_vectors."
        ),
    ] = None,  # fmt: skip
    in_domain: Annotated[
        str | None, typer.Option(help="Comma-separated alias/task list (default: preset's).")
    ] = None,
    unseen: Annotated[
        str | None, typer.Option(help="Comma-separated alias/task list (default: preset's).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    n_train: Annotated[int | None, typer.Option(help="Training queries per task.")] = None,
    n_test: Annotated[int | None, typer.Option(help="Test queries per task.")] = None,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """Compare zero-shot, ICL, task / function vectors, LoRA, prefix tuning and ATV on
    in-domain and unseen tasks; writes OUT/comparison.{json,csv} and figures. Resumes."""
    from tvlens.atv.compare import format_table, run_compare

    overrides = {
        "seeds": seeds,
        "methods": _list(methods),
        "data_dir": None if data is None else str(data),
        "in_domain": _list(in_domain),
        "unseen": _list(unseen),
        "epochs": epochs,
        "n_train": n_train,
        "n_test": n_test,
    }
    try:
        res = run_compare(target, out, preset=preset, device=device,
                          **{k: v for k, v in overrides.items() if v is not None})  # fmt: skip
    except TVLensError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    typer.echo(format_table(res.rows))
    typer.echo(
        f"{len(res.ran)} cell(s) computed, the others reused; wrote {res.out / 'comparison.csv'}"
        f" ({res.seconds:.0f} s)"
    )
