"""``tvlens atv train|eval|compare``: thin layers over :func:`tvlens.atv.train.train_atv`,
:func:`tvlens.atv.evaluate.evaluate_run` and :func:`tvlens.atv.compare.run_compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tvlens.cli.errors import json_option, number_list, registrar

app = typer.Typer(
    help="Adaptive task vectors: a generator reads the query and steers a frozen target.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


command = registrar(app)


def _suite_spec(suite: str | None) -> dict | None:
    if suite is None:
        return None
    if not suite.lstrip().startswith("{"):
        return {"name": suite}
    return json_option(suite, "--suite", 'a suite name or \'{"name": "words"}\'')


def _layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    return number_list(text, "--layers", int, "comma-separated integers")


@command("train")
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
                "layers": _layers(layers),
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
    last = res.metrics["checkpoints"][-1] if res.metrics.get("checkpoints") else {}
    typer.echo(
        f"ATV ({res.atv.trainable_parameters()} trainable parameters) in {res.run_dir} "
        f"({res.seconds:.0f} s); dev accuracy {last.get('mean_dev_accuracy', float('nan')):.3f}"
    )


@command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Option(help="ATV run folder (or an atv.safetensors file).")],
    suite: Annotated[str | None, typer.Option(help="Suite to score (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="test or dev queries of the run's split.")] = "test",
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """Score zero-shot and ATV on held-out queries; prints JSON and writes RUN/eval.json."""
    from tvlens.atv.evaluate import evaluate_run

    res = evaluate_run(run, suite=_suite_spec(suite), split=split, device=device)
    typer.echo(json.dumps(res, indent=2))


def _list(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


@command("compare")
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
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            "--data",  # the old name, still accepted
            help="Function-vector datasets folder (abstractive/, extractive/) for "
            "fv/<task> tasks (default: the copy shipped with tvlens).",
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
    workers: Annotated[
        str,
        typer.Option(
            help="Processes computing cells at once, each with its own target copy; auto: "
            "one per core (at most 4) on a CPU, one on an accelerator."
        ),
    ] = "auto",
) -> None:
    """Compare zero-shot, ICL, task / function vectors, retrieval, LoRA, prefix tuning and ATV
    on instructed in-domain and unseen tasks; writes OUT/comparison.{json,csv}, the tables,
    the verdicts and figures. Resumes."""
    from tvlens.atv.compare import run_compare

    overrides = {
        "seeds": seeds,
        "methods": _list(methods),
        "data_dir": None if data_dir is None else str(data_dir),
        "in_domain": _list(in_domain),
        "unseen": _list(unseen),
        "epochs": epochs,
        "n_train": n_train,
        "n_test": n_test,
    }
    res = run_compare(target, out, preset=preset, device=device, workers=workers,
                      **{k: v for k, v in overrides.items() if v is not None})  # fmt: skip
    typer.echo(res.table)
    typer.echo((res.out / "verdicts.md").read_text())
    typer.echo(
        f"{len(res.ran)} cell(s) computed, the others reused; wrote {res.out / 'comparison.csv'}"
        f" ({res.seconds:.0f} s)"
    )


@command("distill")
def distill_cmd(
    target: Annotated[str, typer.Option(help="Frozen target: HF name, folder or tvlens run.")],
    out: Annotated[
        Path, typer.Option(help="A comparison folder (its dev-chosen variants are used).")
    ] = Path("runs/compare"),
    preset: Annotated[str, typer.Option(help="tiny, cpu or gpu.")] = "cpu",
    rank: Annotated[int, typer.Option(help="Rank of the ATV expansion and of LoRA.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the teachers.")] = 0,
    device: Annotated[str | None, typer.Option(help="cuda, mps or cpu.")] = None,
) -> None:
    """The equal-rank distillation test: rank-r ATV and LoRA teachers, each family's student
    trained to match the other's; prints and writes OUT/distill_r{rank}.json."""
    from tvlens.atv.compare import compare_context, get_compare_preset
    from tvlens.atv.distill import distill_pair
    from tvlens.models import load_model

    cfg = get_compare_preset(preset).with_overrides(target=target)
    model = load_model(target, device=device)
    res = distill_pair(compare_context(cfg, model, out), rank=rank, seed=seed)
    path = res.save(out / f"distill_r{rank}.json")
    typer.echo(res.to_dataframe().to_string(index=False))
    typer.echo(f"wrote {path}")
