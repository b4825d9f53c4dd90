"""Every ``tvlens`` command, one entry each: the public function it runs (same arguments), the
configuration its options come from, and its inputs (:func:`tvlens.cli.options.add_command`)."""

from __future__ import annotations

from pathlib import Path

import typer

from tvlens.atv.config import DEFAULT_PRESET as ATV_DEFAULT
from tvlens.atv.config import PRESETS as ATV_PRESETS
from tvlens.atv.config import ATVConfig
from tvlens.cli.options import Input, add_command, comma_separated, json_value
from tvlens.compare.config import DEFAULT_PRESET as COMPARE_DEFAULT
from tvlens.compare.config import PRESETS as COMPARE_PRESETS
from tvlens.compare.config import CompareConfig
from tvlens.evaluation.config import EvalConfig
from tvlens.experiments.configs import (
    DecodabilityConfig,
    HeadsConfig,
    LayerFinetuneConfig,
    VectorTableConfig,
)
from tvlens.extraction.config import VectorsConfig
from tvlens.patching.config import PatchConfig
from tvlens.probing.config import EmergenceConfig, ProbeConfig
from tvlens.training.config import DEFAULT_PRESET, PRESETS, TrainConfig
from tvlens.training.regression_config import DEFAULT_REGRESSION_PRESET, RegressionConfig


def group(help: str) -> typer.Typer:
    # Plain click errors: a bad option is one "Error: ..." line, not a drawn box.
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None)  # fmt: skip


app = group("tvlens: task vectors, task encoding and patching on TransformerLens 4.x.")
atv = group("Adaptive task vectors: a generator reads the query and steers a frozen target.")
pretrained = group("The seed papers' pretrained-model experiments (default model: smollm2-135m).")
cache = group("Converted models (GGUF files, embedded models) in tvlens's cache.")
for sub, name in ((pretrained, "pretrained"), (atv, "atv"), (cache, "cache")):
    app.add_typer(sub, name=name)
# Each run family's presets and the one its function uses when none is named.
SYNTHETIC, REGRESSION = (PRESETS, DEFAULT_PRESET), (None, DEFAULT_REGRESSION_PRESET)
ATV_RUN, COMPARISONS = (ATV_PRESETS, ATV_DEFAULT), (COMPARE_PRESETS, COMPARE_DEFAULT)

# fmt: off
add_command(app, "demo", "tvlens.demo.run:run_demo", presets=SYNTHETIC, inputs="device",
            own={"figures_dir": Input(Path, "Where figures and the report go.", Path("runs/demo")),
                 "run_dir": Input(Path, "Training run to reuse or create.", Path("runs/default")),
                 "retrain": Input(bool, "Delete the run and train again.", False)},
            help="Train (or reuse) the default synthetic ICL model and write the demo figures "
            "(to runs/demo; `tvlens regenerate` rewrites the committed figures/).")
add_command(app, "regenerate", "tvlens.demo.run:regenerate_figures", inputs="device",
            help="Rewrite the demo's committed figures/ (figures, demo.json, its README part) "
            "from today's code, training runs/default if missing. Run from the repository root.")
add_command(app, "train-synthetic", "tvlens.training.runner:train_synthetic", TrainConfig,
            out="the run", presets=SYNTHETIC, inputs="resume device", overrides=True,
            only=("steps", "seed", "suite", "arch", "tv_loss_weight", "tv_loss_layer"),
            help="Train a small transformer from scratch on synthetic ICL tasks, with checkpoints.")
add_command(app, "eval", "tvlens.evaluation.runner:run_eval", EvalConfig,
            inputs="model suite revision device",
            own={"out": Input(Path | None, "Write results JSON here.", None)})
add_command(app, "vectors", "tvlens.injection.runner:run_task_vectors", VectorsConfig,
            inputs="model suite revision device", out="results.json, vectors and figures",
            skip=("split", "template", "max_batch"), wrote="results.json")
add_command(app, "probe", "tvlens.probing.runner:run_probe", ProbeConfig,
            inputs="model suite device", out="td.json and figures", wrote="td.json")
add_command(app, "train-regression", "tvlens.training.regression:train_regression",
            RegressionConfig, out="the run", presets=REGRESSION, inputs="resume device",
            overrides=True, only=("mixture", "steps", "seed", "arch"),
            help="Train a read-in/read-out transformer on the sparse-linear-regression mixture "
            "(Han et al. 2025), with checkpoints that load through the bridge.")
add_command(app, "emergence", "tvlens.probing.run:run_emergence", EmergenceConfig,
            out="JSON and figures", skip=("revisions", "perturb_prompts", "perturb_steps"),
            own={"run": Input(Path, "tvlens run (token suite or regression).")},
            wrote="emergence.json")
add_command(app, "patch", "tvlens.patching.runner:run_patching", PatchConfig, wrote="patching.json",
            inputs="model suite revision device", out="patching.json and the heatmap")
add_command(app, "suites", "tvlens.tasks.registry:describe_suites",
            own={"name": Input(str | None, "Show the tasks of this suite.", None, argument=True)},
            help="List the built-in task suites, or the tasks of one.")
add_command(app, "info", "tvlens.models.loading:model_info", inputs="model revision device",
            help="Describe a model: sizes, hook names, checkpoints of a tvlens run.")
add_command(app, "models", "tvlens.models.pretrained:models_report",
            help="List the pretrained models tvlens knows by short name (--model NAME) and "
            "whether each is available here.")
add_command(cache, "list", "tvlens.models.pretrained:cache_report",
            help="Show the converted folders: size, where each came from.")
add_command(cache, "clear", "tvlens.models.pretrained:clear_cache_report",
            own={"name": Input(str | None, "Only folders whose name or source contains this.",
                               None, argument=True)},
            help="Delete converted folders (they are converted again on next use).")

# tvlens atv ...
add_command(atv, "train", "tvlens.atv.train:train_atv", ATVConfig, out="the run",
            presets=ATV_RUN, inputs="resume device", overrides=True,
            only=("target", "generator", "suite", "rank", "positions", "scale", "layers",
                  "epochs", "seed", "batch_size", "grad_accum", "n_train", "train_generator"),
            help="Train an ATV generator against a frozen target; writes OUT/atv.safetensors.")
add_command(atv, "eval", "tvlens.compare.evaluate:evaluate_run", inputs="run suite split device",
            own={"run": Input(Path, "ATV run folder (or an atv.safetensors file)."),
                 "suite": Input(str | None, "Suite to score (default: the run's).", None,
                                parser=json_value("--suite", or_text=True)),
                 "split": Input(str, "test or dev queries of the run's split.", "test")},
            help="Score zero-shot and ATV on held-out queries; prints JSON, writes RUN/eval.json.")
# Required, as every command's --out (it had a default, runs/compare, alone among them).
COMPARISON = {"out": Input(Path, "The comparison's folder.")}
add_command(atv, "compare", "tvlens.compare.run:run_compare", CompareConfig,
            presets=COMPARISONS, inputs="out device workers", overrides=True,
            only=("target", "seeds", "methods", "data_dir", "in_domain", "unseen", "epochs",
                  "n_train", "n_test", "sweep_widen", "sweep_joint"),
            own={**COMPARISON, "workers": Input(str, "Processes computing cells at once, each "
                 "with its own target copy; auto: one per core (at most 4) on a CPU, one on an "
                 "accelerator.", "auto")},
            help="Compare zero-shot, ICL, task / function vectors, retrieval, LoRA, prefix tuning "
            "and ATV on instructed in-domain and unseen tasks; writes OUT/comparison.{json,csv}, "
            "the tables, the verdicts and figures. Resumes.")
add_command(atv, "distill", "tvlens.compare.distill:run_distill", CompareConfig,
            presets=COMPARISONS, overrides=True,
            only=("in_domain", "data_dir", "n_train", "epochs"),
            inputs="target out ranks seeds rank student_epochs rel_tol lora_lr atv_lr atv_scale "
            "device",
            wrote="distill.json",
            own={**COMPARISON, "target": Input(str, "Frozen target: HF name, folder or run."),
                 "ranks": Input(str, "Ranks of the ATV expansion and of LoRA, comma-separated.",
                                "1,8", parser=comma_separated("--ranks", int),
                                metavar="<int>,..."),
                 "seeds": Input(int | None, "Seeds per rank (0, 1, ...): teachers and "
                                "students (default: the preset's).", None),
                 "rank": Input(int | None, "One rank instead of --ranks.", None),
                 "student_epochs": Input(int | None, "Most epochs a student trains (default: "
                                         "the preset's epochs).", None),
                 "rel_tol": Input(float, "A student stops when its KL has not fallen by more "
                                  "than this share for the preset's patience epochs.", 0.01),
                 "lora_lr": Input(float | None, "One learning rate for the LoRA teachers and "
                                  "students (default: the comparison's choice on dev, else "
                                  "the preset's).", None),
                 "atv_lr": Input(float | None, "One learning rate for the ATV teachers and "
                                 "students (default: as for --lora-lr).", None),
                 "atv_scale": Input(float | None, "The ATV expansion's λ (default: the "
                                    "preset's).", None)},
            help="The equal-rank distillation test of expressivity: per rank and seed, rank-r "
            "ATV and LoRA teachers, and a fresh student of each family distilled from each "
            "teacher (cross-family, and same-family as the floor) over every answer token "
            "until the KL stops falling; writes OUT/distill/ (one cell per rank and seed: it "
            "resumes), OUT/distill.json and OUT/distill.md.")

# tvlens pretrained ...: the default model is the embedded SmolLM2-135M.
SMOLLM2, WORDS = {"model": "smollm2-135m"}, Input(str, "Suite name, folder or task file.", "words")
add_command(pretrained, "vectors", "tvlens.experiments.pretrained:vector_table",
            VectorTableConfig, out="vectors.json, table.md, figures",
            inputs="model suites tasks n_examples bos device",
            defaults={**SMOLLM2, "suites": ["words"]},
            own={"bos": Input(str, "auto, none or a token.", "auto")})
add_command(pretrained, "combine", "tvlens.experiments.pretrained:combine_vector_tables",
            out="the combined vectors.json, table.md",
            own={"parts": Input(list[Path], "Output folders of `pretrained vectors`.",
                                argument=True)},
            help="Combine the tables of several `pretrained vectors` runs (split over processes).")
add_command(pretrained, "decodability", "tvlens.experiments.pretrained:task_decodability_table",
            DecodabilityConfig, out="td.json and figures",
            inputs="model suites tasks n_examples device",
            defaults={**SMOLLM2, "suites": ["bitwise"]})
add_command(pretrained, "heads", "tvlens.experiments.pretrained:head_comparison", HeadsConfig,
            out="heads.json and figures", inputs="model suite tasks device", defaults=SMOLLM2,
            own={"suite": WORDS})
add_command(pretrained, "finetune", "tvlens.experiments.pretrained:layer_finetuning",
            LayerFinetuneConfig, out="metrics.json, table.md, tuned models",
            inputs="model suite tasks device", defaults=SMOLLM2, own={"suite": WORDS})
# fmt: on
