"""``tvlens atv train|eval|compare``: thin layers over :func:`tvlens.atv.train.train_atv`,
:func:`tvlens.atv.evaluate.evaluate_run` and :func:`tvlens.atv.compare.run_compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tvlens.atv.compare_config import PRESETS as COMPARE_PRESETS
from tvlens.atv.compare_config import CompareConfig
from tvlens.atv.config import PRESETS as ATV_PRESETS
from tvlens.atv.config import ATVConfig
from tvlens.cli.errors import json_option, registrar
from tvlens.cli.options import DeviceOpt, ResumeOpt, config_options, out_opt, preset_opt

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


@command("train")
@config_options(
    ATVConfig, overrides=True,
    only=("target", "generator", "rank", "positions", "scale", "layers", "epochs", "seed",
          "batch_size", "grad_accum", "n_train", "train_generator"),
)  # fmt: skip
def train_cmd(
    out: out_opt("the run"),
    suite: Annotated[
        str | None,
        typer.Option(
            help="Suite name, folder or JSON spec (default: the preset's, e.g. "
            '"atv_lists", the synthetic setting).'
        ),
    ] = None,  # fmt: skip
    preset: preset_opt(ATV_PRESETS) = "tiny",
    resume: ResumeOpt = False,
    device: DeviceOpt = None,
    *,
    config: dict[str, Any],
) -> None:
    """Train an ATV generator against a frozen target; writes OUT/atv.safetensors."""
    from tvlens.atv.train import train_atv

    if suite is not None:
        config["suite"] = _suite_spec(suite)
    typer.echo(train_atv(out, preset=preset, resume=resume, device=device, **config))


@command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Option(help="ATV run folder (or an atv.safetensors file).")],
    suite: Annotated[str | None, typer.Option(help="Suite to score (default: the run's).")] = None,
    split: Annotated[str, typer.Option(help="test or dev queries of the run's split.")] = "test",
    device: DeviceOpt = None,
) -> None:
    """Score zero-shot and ATV on held-out queries; prints JSON and writes RUN/eval.json."""
    from tvlens.atv.evaluate import evaluate_run

    res = evaluate_run(run, suite=_suite_spec(suite), split=split, device=device)
    typer.echo(json.dumps(res.to_dict(), indent=2))


@command("compare")
@config_options(
    CompareConfig, overrides=True,
    only=("target", "seeds", "methods", "data_dir", "in_domain", "unseen", "epochs", "n_train",
          "n_test"),
)  # fmt: skip
def compare_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the comparison.")] = Path("runs/compare"),
    preset: preset_opt(COMPARE_PRESETS) = "cpu",
    device: DeviceOpt = None,
    workers: Annotated[
        str,
        typer.Option(
            help="Processes computing cells at once, each with its own target copy; auto: "
            "one per core (at most 4) on a CPU, one on an accelerator."
        ),
    ] = "auto",
    *,
    config: dict[str, Any],
) -> None:
    """Compare zero-shot, ICL, task / function vectors, retrieval, LoRA, prefix tuning and ATV
    on instructed in-domain and unseen tasks; writes OUT/comparison.{json,csv}, the tables,
    the verdicts and figures. Resumes."""
    from tvlens.atv.compare import run_compare

    target = config.pop("target", None)
    typer.echo(run_compare(target, out, preset=preset, device=device, workers=workers, **config))


@command("distill")
def distill_cmd(
    target: Annotated[str, typer.Option(help="Frozen target: HF name, folder or tvlens run.")],
    out: Annotated[
        Path, typer.Option(help="A comparison folder (its dev-chosen variants are used).")
    ] = Path("runs/compare"),
    preset: preset_opt(COMPARE_PRESETS) = "cpu",
    rank: Annotated[int, typer.Option(help="Rank of the ATV expansion and of LoRA.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the teachers.")] = 0,
    device: DeviceOpt = None,
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
    typer.echo(f"{res}\nwrote {path}")
