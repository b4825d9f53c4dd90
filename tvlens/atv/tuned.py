"""The comparison's trained methods: LoRA and prefix tuning (peft, on the plain HF model), ATV as
published and at matched parameter budgets, and a static (query-independent) ATV; and
:func:`build_method`, which makes any method of the comparison by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tvlens.atv.baselines import (
    CompareMethod,
    FunctionVectorMethod,
    ICLMethod,
    TaskVectorMethod,
    ZeroShotMethod,
    answer_ce,
    engine_fit,
    fresh_hf,
    hf_logits,
    hf_source,
    lm_batch,
)
from tvlens.atv.compare_setup import CompareContext
from tvlens.atv.data import ATVSplits
from tvlens.errors import TVLensError
from tvlens.icl_accuracy import answer_correctness, evaluate_prompts
from tvlens.models.hf import quiet_transformers
from tvlens.models.loading import TVModel
from tvlens.tasks.prompts import ICLPrompt, tokenize_prompts


def peft_config(kind: str, cfg: Any, model_type: str):
    """The peft config of ``lora_qv`` / ``lora_all`` / ``lora_r1`` / ``prefix``."""
    from peft import LoraConfig, PrefixTuningConfig

    if kind == "prefix":
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.prefix_tokens)
    # q and v projections; GPT-2 and NeoX fuse q, k and v in one matrix: LoRA then adapts it.
    qv = {"gpt2": ["c_attn"], "gpt_neox": ["query_key_value"]}.get(model_type, ["q_proj", "v_proj"])
    rank = 1 if kind == "lora_r1" else cfg.lora_rank
    return LoraConfig(
        r=rank,
        lora_alpha=cfg.lora_alpha_ratio * rank,
        lora_dropout=0.0,
        target_modules="all-linear" if kind == "lora_all" else qv,
        task_type="CAUSAL_LM",
    )


def peft_parameter_count(target: TVModel, kind: str, cfg: Any) -> int:
    """Trainable parameters of a peft method on ``target``, counted on a weightless (meta)
    copy of its architecture: exact, and nothing is loaded."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    src, rev = hf_source(target)
    hf_cfg = AutoConfig.from_pretrained(src, revision=rev)
    with torch.device("meta"), quiet_transformers():
        model = AutoModelForCausalLM.from_config(hf_cfg)
    pm = get_peft_model(model, peft_config(kind, cfg, hf_cfg.model_type))
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


class PeftMethod(CompareMethod):
    """LoRA or prefix tuning (peft) on a fresh plain HF copy of the target, trained on the
    in-domain training queries through the engine."""

    path = "hf"

    def __init__(self, ctx: CompareContext, name: str, seed: int):
        super().__init__(ctx, name, seed)
        self.model: nn.Module | None = None
        if name == "prefix":
            self.virtual_tokens = ctx.cfg.prefix_tokens

    def build(self) -> nn.Module:
        from peft import get_peft_model

        hf = fresh_hf(self.target)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return get_peft_model(hf, peft_config(self.name, self.ctx.cfg, hf.config.model_type))

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        self.model = self.build()
        train, target = splits.train, self.target
        if self.name == "prefix":
            init_prefix_from_tokens(self.model, prefix_init_ids(train, target, self.virtual_tokens))
        info = engine_fit(
            self.ctx, self.name, self.seed, self.model,
            loss=lambda m, b: answer_ce(hf_logits(m, b.tokens, b.attention_mask), b.labels),
            prompts=train,
            collate=lambda idx: lm_batch([train[int(i)] for i in idx], target),
            lr=self.ctx.cfg.peft_lr, weight_decay=self.ctx.cfg.weight_decay,
        )  # fmt: skip
        self.model.eval()
        return info

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_prompts(self.model, list(prompts), tokenizer=self.target,
                                batch_size=self.batch_size)  # fmt: skip

    def trainable_parameters(self) -> int:
        if self.model is None:
            return peft_parameter_count(self.target, self.name, self.ctx.cfg)
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------- ATV


def matched_rank(budget: int, d_gen: int, n_out: int) -> int:
    """The low-rank expansion rank whose ``r * (d_gen + n_out) + n_out`` parameters come
    closest to ``budget`` (at least 1)."""
    return max(1, round((budget - n_out) / (d_gen + n_out)))


class ATVCompareMethod(CompareMethod):
    """:class:`tvlens.atv.model.ATV` trained through the engine on the in-domain training
    queries. ``atv``: generator trained, full-rank expansion (the paper); ``atv_lora_budget``
    / ``atv_prefix_budget``: frozen generator, low-rank expansion at LoRA-q,v's / prefix
    tuning's parameter count."""

    def __init__(self, ctx: CompareContext, name: str, seed: int):
        super().__init__(ctx, name, seed)
        self.atv = None

    def generator_lm(self, trainable: bool) -> TVModel:
        from tvlens.models.loading import load_model

        cfg = self.ctx.cfg
        src = cfg.atv_generator or (self.target.spec.path or self.target.spec.name)
        if trainable:  # modified by training: a fresh copy per cell
            return load_model(src, device=self.ctx.device)
        key = ("frozen_generator", src)
        if key not in self.ctx.cache:
            self.ctx.cache[key] = load_model(src, device=self.ctx.device)
        return self.ctx.cache[key]

    def build(self):
        from tvlens.atv.model import ATV

        cfg, t = self.ctx.cfg, self.target
        trainable = self.name == "atv"
        gen = self.generator_lm(trainable)
        rank, budget = None, None
        if not trainable:
            budget = peft_parameter_count(t, "lora_qv" if self.name == "atv_lora_budget"
                                          else "prefix", cfg)  # fmt: skip
            rank = matched_rank(budget, gen.d_model, t.n_layers * t.d_model)
        self.rank, self.budget = rank, budget
        return ATV.build(t, gen, scale=cfg.atv_scale, positions=cfg.atv_positions, rank=rank,
                         train_generator=trainable,
                         generator_stop_at_layer=cfg.atv_generator_stop_at_layer,
                         template=self.ctx.template, seed=self.seed)  # fmt: skip

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        from tvlens.atv.model import WEIGHTS_FILE

        atv = self.atv = self.build()
        train = splits.train
        info = engine_fit(
            self.ctx, self.name, self.seed, atv.generator,
            loss=lambda m, b: atv.loss(b, generator=m),
            prompts=train,
            collate=lambda idx: atv.batch([train[int(i)] for i in idx]),
            lr=self.ctx.cfg.atv_lr, weight_decay=self.ctx.cfg.atv_weight_decay,
            save=lambda folder, step: atv.save(folder / WEIGHTS_FILE, extra={"step": step}),
            load=lambda folder, device: atv.load_weights(folder / WEIGHTS_FILE),
            required=(WEIGHTS_FILE,),
        )  # fmt: skip
        return {**info, "rank": self.rank, "matched_budget": self.budget,
                "generator": atv.spec.generator["name"], "scale": atv.spec.scale}  # fmt: skip

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return self.atv.correctness(list(prompts), batch_size=self.batch_size)

    def trainable_parameters(self) -> int:
        return self.atv.trainable_parameters() if self.atv is not None else 0


class StaticVectors(nn.Module):
    """One learned vector per target layer, the same for every query (zeros at the start:
    training starts from the frozen target)."""

    def __init__(self, n_layers: int, d_model: int):
        super().__init__()
        self.vectors = nn.Parameter(torch.zeros(n_layers, d_model))

    def forward(self, batch_size: int) -> Float[Tensor, "batch n_layers d_model"]:
        return self.vectors[None].expand(batch_size, -1, -1)


class StaticATVMethod(CompareMethod):
    """A query-independent ATV: ``scale * v_l`` added after every block at every real token,
    ``v_l`` learned (no generator: the query is not read)."""

    def __init__(self, ctx: CompareContext, name: str, seed: int):
        super().__init__(ctx, name, seed)
        t = self.target
        self.module = StaticVectors(t.n_layers, t.d_model).to(t.device)
        self.layers = list(range(t.n_layers))

    def logits(self, module: nn.Module, tokens: Tensor, mask: Tensor) -> Tensor:
        from tvlens.atv.steering import steer

        with steer(self.target, module(tokens.shape[0]), self.layers, mask, "all",
                   self.ctx.cfg.static_scale):  # fmt: skip
            return self.target(tokens, attention_mask=mask)

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        train, target = splits.train, self.target
        return engine_fit(
            self.ctx, self.name, self.seed, self.module,
            loss=lambda m, b: answer_ce(self.logits(m, b.tokens, b.attention_mask), b.labels),
            prompts=train,
            collate=lambda idx: lm_batch([train[int(i)] for i in idx], target),
            lr=self.ctx.cfg.peft_lr, weight_decay=self.ctx.cfg.weight_decay,
        )  # fmt: skip

    @torch.no_grad()
    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        method = self

        class _Steered:  # what answer_correctness calls: the target with the vectors added
            bridge = self.target.bridge

            def __call__(self, tokens: Tensor, attention_mask: Tensor) -> Tensor:
                return method.logits(method.module, tokens, attention_mask)

        firsts, exacts = [], []
        for start in range(0, len(prompts), self.batch_size):
            pb = tokenize_prompts(list(prompts[start : start + self.batch_size]), self.target,
                                  "left", include_answer=True)  # fmt: skip
            f, e = answer_correctness(_Steered(), pb)
            firsts.append(f.numpy())
            exacts.append(e.numpy())
        return np.concatenate(firsts), np.concatenate(exacts)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


# ---------------------------------------------------------------------------- registry


def build_method(ctx: CompareContext, name: str, seed: int) -> CompareMethod:
    """The method ``name`` of :data:`tvlens.atv.compare.METHODS` for one cell."""
    if name == "zero_shot":
        return ZeroShotMethod(ctx, name, seed)
    if name.startswith("icl_"):
        return ICLMethod(ctx, name, seed, int(name.split("_")[1]))
    if name == "task_vector":
        return TaskVectorMethod(ctx, name, seed)
    if name == "function_vector":
        return FunctionVectorMethod(ctx, name, seed)
    if name in ("lora_qv", "lora_all", "lora_r1", "prefix"):
        return PeftMethod(ctx, name, seed)
    if name in ("atv", "atv_lora_budget", "atv_prefix_budget"):
        return ATVCompareMethod(ctx, name, seed)
    if name == "static_atv":
        return StaticATVMethod(ctx, name, seed)
    raise TVLensError(f"Unknown method {name!r}.")
