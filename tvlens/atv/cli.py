"""``tvlens atv train`` and ``tvlens atv eval``: a thin layer over :func:`train_atv` and
:func:`evaluate_run` (same arguments)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tvlens.errors import TVLensError

app = typer.Typer(
    help="Adaptive task vectors: a generator reads the query and steers a frozen target.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _suite_spec(suite: str | None) -> dict | None:
    if suite is None:
        return None
    return json.loads(suite) if suite.lstrip().startswith("{") else {"name": suite}


@app.command("train")
def train_cmd(
    target: Annotated[str, typer.Option(help="Target model: HF name, folder or tvlens run.")],
    out: Annotated[Path, typer.Option(help="Run folder to write.")],
    generator: Annotated[
        str | None, typer.Option(help="Generator model (default: a copy of the target).")
    ] = None,
    suite: Annotated[
        str | None,
        typer.Option(
            help="Suite name, folder or JSON spec (default: the preset's, e.g. "
            '"atv_lists", the synthetic setting).'
        ),
    ] = None,  # fmt: skip
    preset: Annotated[str, typer.Option(help="tiny, cpu or gpu.")] = "tiny",
    rank: Annotated[int | None, typer.Option(help="Low-rank expansion (default: full).")] = None,
    positions: Annotated[str | None, typer.Option(help="all or last.")] = None,
    scale: Annotated[float | None, typer.Option(help="λ, the steering scale.")] = None,
    layers: Annotated[
        str | None, typer.Option(help="Target layers to steer, e.g. 0,1,2 (default: all).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the preset's seed.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per micro-batch.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per step.")] = None,
    n_train: Annotated[int | None, typer.Option(help="Training queries per task.")] = None,
    frozen_generator: Annotated[
        bool | None,
        typer.Option("--frozen-generator/--train-generator", help="Freeze the generator LM."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """Train an ATV generator against a frozen target; writes OUT/atv.safetensors."""
    from tvlens.atv.train import train_atv

    try:
        res = train_atv(
            out,
            preset=preset,
            resume=resume,
            device=device,
            **{
                k: v
                for k, v in {
                    "target": target,
                    "generator": generator,
                    "suite": _suite_spec(suite),
                    "rank": rank,
                    "positions": positions,
                    "scale": scale,
                    "layers": [int(x) for x in layers.split(",")] if layers else None,
                    "epochs": epochs,
                    "seed": seed,
                    "batch_size": batch_size,
                    "grad_accum": grad_accum,
                    "n_train": n_train,
                    "train_generator": None if frozen_generator is None else not frozen_generator,
                }.items()
                if v is not None
            },
        )
    except (TVLensError, json.JSONDecodeError, ValueError) as e:
        _fail(e)
    last = res.metrics["checkpoints"][-1] if res.metrics.get("checkpoints") else {}
    typer.echo(
        f"ATV ({res.atv.trainable_parameters()} trainable parameters) in {res.run_dir} "
        f"({res.seconds:.0f} s); dev accuracy {last.get('mean_dev_accuracy', float('nan')):.3f}"
    )


@app.command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Option(help="ATV run folder (or an atv.safetensors file).")],
    suite: Annotated[str | None, typer.Option(help="Suite to score (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="test or dev queries of the run's split.")] = "test",
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """Score zero-shot and ATV on held-out queries; prints JSON and writes RUN/eval.json."""
    from tvlens.atv.evaluate import evaluate_run

    try:
        res = evaluate_run(run, suite=_suite_spec(suite), split=split, device=device)
    except (TVLensError, json.JSONDecodeError, ValueError) as e:
        _fail(e)
    typer.echo(json.dumps(res, indent=2))


app.command("compare")(__import__("tvlens.atv.compare_cli", fromlist=["x"]).compare_cmd)
