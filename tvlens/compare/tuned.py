"""The comparison's trained methods: LoRA and prefix tuning (peft, on the plain HF model), ATV as
published, ATV with a frozen generator at matched parameter budgets, and the equal-rank pair
(a rank-r ATV expansion against rank-r LoRA on each block's residual write), with the static
affine ATV of the paper's theorem beside it (:class:`StaticAffineATVMethod`). All train through
:func:`tvlens.compare.fitting.engine_fit` (early stopping on dev, best-dev weights kept)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from safetensors.torch import save_file
from torch import Tensor, nn

from tvlens.atv.affine import AffineSteered, StaticAffineATV, mlp_width
from tvlens.atv.data import ATVSplits
from tvlens.atv.model import ATV, WEIGHTS_FILE
from tvlens.atv.train import train_atv
from tvlens.compare.context import CompareContext
from tvlens.compare.fitting import (
    answer_ce,
    engine_fit,
    fresh_hf,
    hf_logits,
    hf_source,
    lm_batch,
    load_trainable,
    trainable_state,
)
from tvlens.compare.methods import SteeringMethod
from tvlens.compare.options import ATVOptions, PeftOptions
from tvlens.errors import TVLensError
from tvlens.evaluation.icl import evaluate_prompts
from tvlens.extraction.residual import residual_at_query
from tvlens.models.families import family_of_model_type, lora_query_value, residual_write_sites
from tvlens.models.hf import get_peft_model_quietly, quiet_transformers
from tvlens.models.loading import TVModel, load_model
from tvlens.tasks.prompts import ICLPrompt, tokenize_prompts

PEFT_KINDS = ("lora_qv", "lora_all", "lora_sites", "prefix")


def peft_config(kind: str, options: PeftOptions, model_type: str, rank: int | None = None):
    """The peft config of ``lora_qv`` / ``lora_all`` / ``lora_sites`` / ``prefix`` with the
    comparison's peft settings ``options`` (``rank``: the LoRA rank, default
    ``options.lora_rank``)."""
    from peft import LoraConfig, PrefixTuningConfig

    if kind not in PEFT_KINDS:
        raise TVLensError(f"Unknown peft kind {kind!r}; use one of {list(PEFT_KINDS)}.")
    if kind == "prefix":
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=options.prefix_tokens)
    # q and v projections (fused with k in GPT-2 and NeoX: LoRA then adapts the fused matrix);
    # lora_sites: each block's MLP output projection, where ATV adds its vector (the sites of
    # the equal-rank pair). Both from the model family's record (Llama's names when none).
    targets = {"lora_all": "all-linear", "lora_qv": lora_query_value(model_type),
               "lora_sites": residual_write_sites(model_type)}[kind]  # fmt: skip
    rank = rank or options.lora_rank
    family = family_of_model_type(model_type)
    return LoraConfig(
        r=rank,
        lora_alpha=options.lora_alpha_ratio * rank,
        lora_dropout=0.0,
        target_modules=targets,
        task_type="CAUSAL_LM",
        # GPT-2's Conv1D stores weights transposed (peft warns and corrects it otherwise)
        fan_in_fan_out=bool(family and family.conv1d),
    )


def peft_parameter_count(
    target: TVModel, kind: str, options: PeftOptions, rank: int | None = None, config: Any = None
) -> int:
    """Trainable parameters of a peft method on ``target`` with the peft settings ``options``
    (``config``: a user's peft config instead of ``kind``'s), counted on a weightless (meta)
    copy of its architecture: exact, and nothing is loaded."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if target.spec.source == "memory":  # nothing to read from disk: the model's own config
        hf_cfg = target.bridge.original_model.config
    else:
        src, rev = hf_source(target)
        hf_cfg = AutoConfig.from_pretrained(src, revision=rev)
    with torch.device("meta"), quiet_transformers():
        model = AutoModelForCausalLM.from_config(hf_cfg)
    conf = copy.deepcopy(config) if config is not None else None
    pm = get_peft_model_quietly(model, conf or peft_config(kind, options, hf_cfg.model_type, rank))
    return sum(p.numel() for p in pm.parameters() if p.requires_grad)


def prefix_init_ids(prompts: Sequence[ICLPrompt], target: TVModel, n: int) -> Int[Tensor, "1 n"]:
    """``n`` real tokens to start a prefix from: the first training prompts (query and answer,
    pads dropped), one after another, as the target tokenizes them."""
    pb = tokenize_prompts(list(prompts), target, "left", include_answer=True, device="cpu")
    ids = pb.tokens[pb.attention_mask.bool()]
    if ids.numel() < n:
        raise TVLensError(
            f"Prefix tuning needs {n} real tokens to start from; the training prompts have only "
            f"{ids.numel()}. Lower prefix_tokens."
        )
    return ids[:n].unsqueeze(0)


@torch.no_grad()
def init_prefix_from_tokens(model: nn.Module, ids: Int[Tensor, "1 n"]) -> None:
    """Start peft's prefix (no reparametrisation) at the target's own keys and values of real
    tokens (Li & Liang 2021, sec. 7.2: real-word initialisation). peft's default N(0, 1) prefix
    replaces every layer's attention context with noise: on SmolLM2-135M the test loss started
    at 13.7 (uniform over the vocabulary is 10.8) and prefix tuning ended at accuracy 0; started
    from real tokens it is 5.0 and it learns. The copy is checked against peft's own unpacking
    of the prefix; where the layout differs it raises."""
    base = model.get_base_model()
    cache = base(input_ids=ids.to(next(base.parameters()).device), use_cache=True).past_key_values
    kv = torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])
    # peft's embedding row per virtual token is [layers, (key, value), kv_heads, head_dim]
    flat = kv.permute(3, 0, 1, 2, 4).reshape(ids.shape[1], -1)
    emb = model.prompt_encoder[model.active_adapter].embedding.weight
    if emb.shape != flat.shape:
        raise TVLensError(
            f"Prefix layout {tuple(emb.shape)} is not the target's keys and values "
            f"{tuple(flat.shape)}; prefix tuning cannot start from real tokens on this model."
        )
    emb.copy_(flat.to(emb.dtype))
    got = model.get_prompt(1)
    got = got.layers[0].keys if hasattr(got, "layers") else got[0][0]
    if not torch.allclose(got[0].to(kv.dtype), kv[0, 0], atol=1e-5):
        raise TVLensError("peft unpacks the prefix in another layout than this copy assumed.")


class TrainableWeights:
    """Best-dev weights of a method whose trained module (attribute ``trained``) is a plain
    ``nn.Module``: its trainable parameters saved as safetensors, restored into a fresh
    :meth:`build` (the frozen rest comes from the target, as at fit time)."""

    trained: str = "model"

    def save_best(self, path: Path) -> None:
        save_file(trainable_state(getattr(self, self.trained)), str(path))

    def restore(self, path: Path) -> None:
        module = self.build()
        load_trainable(module, path)
        module.eval()
        setattr(self, self.trained, module)


class PeftMethod(TrainableWeights, SteeringMethod):
    """LoRA or prefix tuning (peft) on a fresh plain HF copy of the target, trained on the
    in-domain training queries (``kind``: see :func:`peft_config`; ``rank``: LoRA's; or
    ``config``: any peft config of the user's, e.g. ``LoraConfig(...)``, see
    :func:`tvlens.compare.registry.peft_method`)."""

    path = "hf"
    options_class = PeftOptions

    def __init__(
        self, ctx: CompareContext, name: str, seed: int, variant: dict | None = None,
        kind: str = "lora_qv", rank: int | None = None, config: Any = None,
    ) -> None:  # fmt: skip
        self.bind(ctx, name, seed, variant)
        self.kind, self.rank, self.config = kind, rank, config
        if config is not None:
            self.kind = "prefix" if type(config).__name__ == "PrefixTuningConfig" else "user"
        self.model: nn.Module | None = None
        if kind == "prefix":
            self.virtual_tokens = self.options.prefix_tokens

    def build(self) -> nn.Module:
        hf = fresh_hf(self.target)
        conf = copy.deepcopy(self.config) if self.config is not None else None
        conf = conf or peft_config(self.kind, self.options, hf.config.model_type, self.rank)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return get_peft_model_quietly(hf, conf)

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        self.model = self.build()
        target = self.target
        if self.kind == "prefix":
            init_prefix_from_tokens(
                self.model, prefix_init_ids(splits.train, target, self.virtual_tokens)
            )
        info = engine_fit(
            self, self.model,
            loss=lambda m, b: answer_ce(hf_logits(m, b.tokens, b.attention_mask), b.labels),
            splits=splits,
            collate=lambda ps: lm_batch(ps, target),
            lr=self.variant.get("lr", self.options.lrs[0]),
            weight_decay=self.ctx.cfg.weight_decay,
        )  # fmt: skip
        self.model.eval()
        return {**info, "kind": self.kind, "rank": self.rank}

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_prompts(self.model, list(prompts), tokenizer=self.target,
                                batch_size=self.batch_size)  # fmt: skip

    def trainable_parameters(self) -> int:
        if self.model is None:
            return peft_parameter_count(self.target, self.kind, self.options, self.rank,
                                        self.config)  # fmt: skip
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- ATV


def matched_rank(budget: int, d_gen: int, n_out: int) -> int:
    """The low-rank expansion rank whose ``r * (d_gen + n_out) + n_out`` parameters come
    closest to ``budget`` (at least 1)."""
    return max(1, round((budget - n_out) / (d_gen + n_out)))


# The comparison's names for what ATV's generator reads -> tvlens.atv.data.generator_text's.
GENERATOR_INPUTS = {"instructed": "prompt", "query": "query"}


class ATVMethod(SteeringMethod):
    """Adaptive task vectors (:class:`tvlens.atv.model.ATV`), the one ATV method: on its own
    (the demo, ``tvlens atv eval``) an already trained ``atv``, or one trained by
    :func:`tvlens.atv.train.train_atv` into ``run_dir`` (a finished run there is reused); in a
    comparison cell (:meth:`for_cell`) trained on the in-domain training queries with the
    cell's ``cfg.atv`` block (:class:`~tvlens.compare.options.ATVOptions`). ``kind``: ``atv``
    (the paper: generator trained, full-rank expansion, the generator LM at
    ``generator_lr_ratio`` times the expansion's learning rate); ``lora_budget`` /
    ``prefix_budget`` (frozen generator, low-rank expansion at LoRA-q,v's / prefix tuning's
    parameter count, counted with the cell's ``cfg.peft``); ``rank`` (frozen generator,
    rank-``rank`` expansion). A cell's variant sets the learning rate ``lr`` and λ ``scale``."""

    options_class = ATVOptions
    KINDS = ("atv", "lora_budget", "prefix_budget", "rank")

    def __init__(
        self,
        config: Any = None,
        run_dir: str | Path | None = None,
        name: str = "atv",
        atv: Any = None,
        batch_size: int = 64,
        **train_kwargs: Any,
    ) -> None:
        self.atv, self.config, self.name, self.batch_size = atv, config, name, batch_size
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.train_kwargs = train_kwargs
        self.kind, self.rank, self.budget = "atv", None, None

    @classmethod
    def for_cell(
        cls, ctx: CompareContext, name: str, seed: int, variant: dict | None = None,
        kind: str = "atv", rank: int | None = None, **kwargs: Any,
    ) -> ATVMethod:  # fmt: skip
        if kind not in cls.KINDS:
            raise TVLensError(f"Unknown ATV kind {kind!r}; use one of {list(cls.KINDS)}.")
        method = cls(name=name, batch_size=ctx.cfg.eval_batch_size)
        method.bind(ctx, name, seed, variant)
        method.kind, method.rank = kind, rank
        return method

    def generator_lm(self, trainable: bool) -> TVModel:

        opts = self.options
        if opts.generator is None and self.target.spec.source == "memory":
            raise TVLensError(
                "ATV's generator is a fresh copy of the target by default, and a model passed "
                "in memory cannot be loaded again: set atv={'generator': ...} (atv_generator=) "
                "to a model name or folder, or pass the target by folder."
            )
        src = opts.generator or (self.target.spec.path or self.target.spec.name)
        if trainable:  # modified by training: a fresh copy per cell
            return load_model(src, device=self.ctx.device)
        key = ("frozen_generator", src)
        if key not in self.ctx.cache:
            self.ctx.cache[key] = load_model(src, device=self.ctx.device)
        return self.ctx.cache[key]

    def build(self):

        opts, t = self.options, self.target
        trainable = self.kind == "atv"
        gen = self.generator_lm(trainable)
        if self.kind.endswith("_budget"):
            peft = "lora_qv" if self.kind == "lora_budget" else "prefix"
            # the budget is the peft method's parameter count, with the comparison's peft block
            self.budget = peft_parameter_count(t, peft, self.ctx.cfg.options_for(PeftOptions))
            self.rank = matched_rank(self.budget, gen.d_model, t.n_layers * t.d_model)
        return ATV.build(t, gen, scale=self.variant.get("scale", opts.scale),
                         positions=opts.positions, rank=self.rank,
                         train_generator=trainable,
                         generator_stop_at_layer=opts.generator_stop_at_layer,
                         generator_input=self.generator_input(),
                         template=self.ctx.template, seed=self.seed)  # fmt: skip

    def generator_input(self) -> str:
        """What the generator reads (:func:`tvlens.atv.data.generator_text`): the variant's
        ``generator_input``, else ``atv.generator_input``: ``"instructed"`` (the instructed
        zero-shot prompt the target reads) or ``"query"`` (the paper-faithful arm: ``"Q:
        {input} \\n A: "`` only, as in the official training script, while the target still
        reads the instructed prompt)."""
        value = self.variant.get("generator_input", self.options.generator_input)
        if value not in GENERATOR_INPUTS:
            raise TVLensError(
                f"generator_input must be one of {list(GENERATOR_INPUTS)}, got {value!r}."
            )
        return GENERATOR_INPUTS[value]

    def param_groups(self) -> list[dict[str, Any]]:
        """The expansion at the variant's lr; the generator LM (when trained) at
        ``generator_lr_ratio`` times it."""
        gen, lr = self.atv.generator, self.variant.get("lr", self.options.lrs[0])
        expansion = [p for p in gen.expansion.parameters() if p.requires_grad]
        lm = [p for p in gen.lm.parameters() if p.requires_grad]
        return [{"params": expansion, "lr": lr},
                {"params": lm, "lr": lr * self.options.generator_lr_ratio}]  # fmt: skip

    def steer_ratio(self, prompts: Sequence[ICLPrompt]) -> dict[str, Any]:
        """‖λ v_l‖ / ‖h_l‖ per target layer, averaged over ``prompts``: how large the written
        vector is against the residual it is added to (h: the unsteered target's residual
        after block l at the query's last token)."""

        atv = self.atv
        key = ("resid_norms", id(self.target), len(prompts))
        if key not in self.ctx.cache:
            pb = tokenize_prompts(list(prompts), self.target, "left")
            h = residual_at_query(self.target, pb, atv.spec.layers, batch_size=self.batch_size)
            self.ctx.cache[key] = h.float().norm(dim=-1).mean(-1).cpu()
        b = atv.batch(list(prompts)).to(self.ctx.device)
        with torch.no_grad():
            v = atv.generator(b.gen_tokens, b.gen_mask).float()
        ratio = (atv.spec.scale * v.norm(dim=-1).mean(0).cpu()) / self.ctx.cache[key]
        return {"steer_ratio": [round(float(x), 5) for x in ratio]}

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        if self.ctx is None:  # on its own: given trained, or trained by train_atv
            if self.run_dir is None:
                return {}
            result = train_atv(self.run_dir, config=self.config, resume=True, **self.train_kwargs)
            self.atv = result.atv
            return {"seconds": result.seconds}
        atv = self.atv = self.build()
        probe = splits.dev[:: max(1, len(splits.dev) // 32)]
        info = engine_fit(
            self, atv.generator,
            loss=lambda m, b: atv.loss(b, generator=m),
            splits=splits,
            collate=lambda ps: atv.batch(ps),
            lr=self.variant.get("lr", self.options.lrs[0]),
            weight_decay=self.options.weight_decay,
            save=lambda folder, step: atv.save(folder / WEIGHTS_FILE, extra={"step": step}),
            load=lambda folder, device: atv.load_weights(folder / WEIGHTS_FILE),
            required=(WEIGHTS_FILE,),
            param_groups=self.param_groups,
            evaluate_extra=lambda: self.steer_ratio(probe),
        )  # fmt: skip
        return {**info, "kind": self.kind, "rank": self.rank, "matched_budget": self.budget,
                "generator": atv.spec.generator["name"], "scale": atv.spec.scale,
                "generator_lr_ratio": self.options.generator_lr_ratio}  # fmt: skip

    def save_best(self, path: Path) -> None:
        self.atv.save(path)

    def restore(self, path: Path) -> None:
        self.atv = self.build()
        self.atv.load_weights(path)

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        if self.atv is None:
            raise TVLensError(f"{self.name}: call fit() first (or pass a trained atv).")
        return self.atv.correctness(list(prompts), batch_size=self.batch_size)

    def trainable_parameters(self) -> int:
        return 0 if self.atv is None else self.atv.trainable_parameters()


class StaticAffineATVMethod(TrainableWeights, ATVMethod):
    """The static affine ATV (:class:`tvlens.atv.affine.StaticAffineATV`, the form Kang et al.
    2025's equal-rank theorem covers): ``b_l + s · U_l V_lᵀ a_l`` added to each block's MLP
    output, rank ``rank``, no generator. Beside ``atv_r{rank}`` in the equal-rank test against
    ``lora_r{rank}``. Its settings are its LoRA pair's (``cfg.peft``): the same learning rates
    swept, the same start (``U = 0``, ``V`` as LoRA's ``A``) and ``s = alpha / r``, so that the
    multiplicative term trains as that LoRA does and the pair differs by the bias ``b``
    alone, which is what the theorem says the two families differ by."""

    options_class = PeftOptions
    KINDS = ("affine",)
    trained = "atv"

    def build(self) -> StaticAffineATV:
        t = self.target
        t.bridge.requires_grad_(False)  # the target is frozen, as under ATV
        t.bridge.eval()
        module = StaticAffineATV(range(t.n_layers), t.d_model, mlp_width(t), self.rank,
                                 scaling=self.options.lora_alpha_ratio, seed=self.seed)  # fmt: skip
        return module.to(t.device)

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        module = self.atv = self.build()
        target = self.target
        steered = AffineSteered(target, module)
        info = engine_fit(
            self, module,
            loss=lambda m, b: answer_ce(steered(b.tokens, b.attention_mask), b.labels),
            splits=splits,
            collate=lambda ps: lm_batch(ps, target),
            lr=self.variant.get("lr", self.options.lrs[0]),
            weight_decay=self.ctx.cfg.weight_decay,
        )  # fmt: skip
        module.eval()
        return {**info, "kind": self.kind, "rank": self.rank, "scaling": module.scaling}

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        if self.atv is None:
            raise TVLensError(f"{self.name}: call fit() first.")
        with torch.no_grad():
            return evaluate_prompts(AffineSteered(self.target, self.atv), list(prompts),
                                    tokenizer=self.target, batch_size=self.batch_size)  # fmt: skip

    def trainable_parameters(self) -> int:
        if self.atv is not None:
            return self.atv.trainable_parameters()
        t = self.target
        return t.n_layers * (self.rank * (t.d_model + mlp_width(t)) + t.d_model)
