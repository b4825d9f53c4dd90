"""State vectors against an oracle: the official procedure (HITsz-TMG/ICL-State-Vector,
TVframework.py / optimizer.py / aggregation.py) re-written in plain transformers + torch, with
hooks on the HF ``o_proj`` / ``c_proj`` modules, on the same tiny HF model that tvlens runs
through TransformerLens. The states, the inner and momentum optimisation, the aggregation and
the steered logits must agree to float tolerance."""

import pytest
import torch

from tests.reference import attn_out_proj
from tvlens.errors import ConfigError, PromptError
from tvlens.extraction.methods import StateVector
from tvlens.extraction.state_vector import (
    momentum_optimize,
    separator_positions,
    state_vector,
)
from tvlens.injection.intervention import apply_intervention
from tvlens.tasks import sample_prompts, tokenize_prompts
from tvlens.tasks.prompts import ICLPrompt

# GPT-2 (output bias), Llama (grouped-query attention), Gemma-2 and OLMo-2 (a norm after the
# attention: the write must come before it, as the official o_proj hook's does).
ORACLE_ARCHS = ("gpt2", "llama", "gemma2", "olmo2")
K = 6  # the official momentum window needs k >= 6 demonstrations


@pytest.fixture(scope="module", params=ORACLE_ARCHS)
def arch_model(request, make_tiny, letters_tokenizer):
    return make_tiny(request.param, request.param, letters_tokenizer)


# ---------------------------------------------------------------------------- the oracle


def n_layers_of(hf):
    return hf.config.num_hidden_layers


def format_example(tok, bos, query, demons):
    """The official ``format_example``: token ids and a mask naming every token
    (``project_r`` the separator of demonstration r, ``project`` the query's)."""

    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    ids, mask = ([bos], ["bos"]) if bos is not None else ([], [])
    for r, (q, a) in enumerate(demons):
        for piece, name in ((q, f"query_{r}"), ("->", f"project_{r}"), (a, f"answer_{r}"),
                            ("\n", f"eos_{r}")):  # fmt: skip
            t = enc(piece)
            ids += t
            mask += [name] * len(t)
    for piece, name in ((query, "query"), ("->", "project")):
        t = enc(piece)
        ids += t
        mask += [name] * len(t)
    return torch.tensor([ids]), mask


@torch.no_grad()
def oracle_read(hf, ids, mask, k, write=None):
    """The official ``read_activation``: each layer's ``o_proj`` input at the separators
    (``{layer: {"dev_r": [n_sep, hidden], "test": ...}}``). ``write``
    (``{layer: {"project_r": [n_sep, hidden]}}``) first replaces the input at those separators
    (the official ``intervention_activation``, as in ``tv_write_then_read``)."""
    got, handles = {}, []
    for layer in range(n_layers_of(hf)):

        def pre(mod, args, layer=layer):
            x = args[0]
            if write is not None:
                x = x.clone()
                for name, v in write[layer].items():
                    idx = [i for i, m in enumerate(mask) if m == name]
                    x[0, idx] = v
            got[layer] = x[0].clone()
            return (x,)

        handles.append(attn_out_proj(hf, layer).register_forward_pre_hook(pre))
    try:
        hf(ids)
    finally:
        for h in handles:
            h.remove()
    tv = {}
    for layer, act in got.items():
        tv[layer] = {f"dev_{r}": act[[i for i, m in enumerate(mask) if m == f"project_{r}"]]
                     for r in range(k)}  # fmt: skip
        tv[layer]["test"] = act[[i for i, m in enumerate(mask) if m == "project"]]
    return tv


def avg_tv(tvs):
    return {
        layer: {name: torch.stack([t[layer][name] for t in tvs]).mean(0) for name in tvs[0][layer]}
        for layer in tvs[0]
    }


def fixed(dev, test, betas):
    seq = dev + [test]
    start = len(seq) - len(betas)
    return sum(seq[i] * betas[x] for x, i in enumerate(range(start, len(seq)))) / sum(betas)


def fix_one_step(dev, test, weight, lr):
    """The official ``FixOneStepOptimizer`` for one layer."""
    opt = fixed(dev, test, [1] * (len(weight) + 1))
    grad = dev + [opt]
    delta = torch.zeros_like(test)
    for x, i in enumerate(range(len(grad) - len(weight), len(grad))):
        delta += (grad[i] - grad[i - 1]) * weight[x] / sum(weight)
    return opt + delta * lr


@torch.no_grad()
def oracle_steered_logits(hf, ids, mask, vector):
    """The official ``write_activation`` with ``add#0#1`` at the attention: the query
    separator's ``o_proj`` input replaced by the state in every layer of ``vector``."""
    idx = [i for i, m in enumerate(mask) if m == "project"]
    handles = []
    for layer, v in vector.items():

        def pre(mod, args, v=v):
            x = args[0].clone()
            x[0, idx] = v
            return (x,)

        handles.append(attn_out_proj(hf, layer).register_forward_pre_hook(pre))
    try:
        return hf(ids).logits[0, -1]
    finally:
        for h in handles:
            h.remove()


def demons_of(p: ICLPrompt):
    return [(d.input, d.output) for d in p.demonstrations]


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("optimizer", ["none", "inner", "momentum"])
def test_states_optimizers_and_steered_logits_match_the_official_procedure(
    arch_model, chain_task, optimizer
):
    model, hf, tok = arch_model.model, arch_model.hf, arch_model.tokenizer
    bos = model.prompt_bos_id
    res = state_vector(model, chain_task, k=K, n_prompts=2, seed=3, optimizer=optimizer, layer=1)
    prompts = sample_prompts(chain_task, K, 2, seed=3, template="arrow")

    tvs = []
    for p in prompts:
        ids, mask = format_example(tok, bos, p.query.input, demons_of(p))
        batch = tokenize_prompts([p], model)
        assert ids[0].tolist() == batch.tokens[0].tolist()  # the same tokens as tvlens's
        tvs.append(oracle_read(hf, ids, mask, K))
    tv = avg_tv(tvs)
    L = n_layers_of(hf)
    for layer in range(L):
        official = torch.cat([tv[layer][f"dev_{r}"] for r in range(K)] + [tv[layer]["test"]])
        ours = res.states[:, layer].flatten(-2)
        torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)

    vector = {}
    for layer in range(L):
        dev = [tv[layer][f"dev_{r}"] for r in range(K)]
        test = tv[layer]["test"]
        if optimizer == "none":
            vector[layer] = test
        elif optimizer == "inner":
            vector[layer] = fixed(dev, test, [1] * 7)
        else:
            vector[layer] = fix_one_step(dev, test, [1, 2, 4, 8, 16, 0], 1.0)
        torch.testing.assert_close(res.state[layer].flatten()[None], vector[layer],
                                   atol=1e-5, rtol=1e-5)  # fmt: skip

    query = chain_task.examples[7]
    ids, mask = format_example(tok, bos, query.input, [])
    for last in (0, 1, L - 1):
        official = oracle_steered_logits(hf, ids, mask, {x: vector[x] for x in range(last + 1)})
        batch = tokenize_prompts([ICLPrompt("next", (), query)], model)
        with torch.no_grad(), apply_intervention(model, res.intervention(layer=last)):
            ours = model(batch.tokens, attention_mask=batch.attention_mask)[0, -1]
        torch.testing.assert_close(ours, official, atol=1e-4, rtol=1e-4)
        plain = model(batch.tokens)[0, -1]
        assert (ours - plain).abs().max() > 1e-3  # the write changes the prediction


def test_aggregation_matches_the_official_divide_and_conquer(arch_model, chain_task):
    """Groups of k demonstrations -> group states (query state over shuffles) -> written at
    the separators of a prompt with one demonstration per group -> the query's state."""
    model, hf, tok = arch_model.model, arch_model.hf, arch_model.tokenizer
    bos = model.prompt_bos_id
    task = chain_task
    groups, k, n, shuffles, seed = 2, 3, 2, 3, 5
    res = state_vector(model, task, k=k, n_prompts=n, seed=seed, groups=groups,
                       shuffles=shuffles)  # fmt: skip
    # The oracle on the same draws (numpy's generator: the order tvlens documents).
    import numpy as np

    rng = np.random.default_rng(seed)
    order = [task.examples[int(i)] for i in rng.permutation(len(task))]
    demos, rest = order[: groups * k], order[groups * k :]
    agg, dummies = rest[:groups], rest[groups : groups + n]
    L = n_layers_of(hf)
    group_state = []
    for g in range(groups):
        group = demos[g * k : (g + 1) * k]
        tvs = []
        for _ in range(shuffles):
            shuffled = [group[int(i)] for i in rng.permutation(k)]
            ids, mask = format_example(
                tok, bos, agg[g].input, [(d.input, d.output) for d in shuffled]
            )
            tvs.append(oracle_read(hf, ids, mask, k))
        group_state.append({layer: t["test"] for layer, t in avg_tv(tvs).items()})
    tvs = []
    for q in dummies:
        ids, mask = format_example(tok, bos, q.input, [(d.input, d.output) for d in agg])
        write = {layer: {f"project_{g}": group_state[g][layer] for g in range(groups)}
                 for layer in range(L)}  # fmt: skip
        tvs.append(oracle_read(hf, ids, mask, groups, write=write))
    tv = avg_tv(tvs)
    for layer in range(L):
        torch.testing.assert_close(res.state[layer].flatten()[None], tv[layer]["test"],
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


def test_momentum_with_few_demonstrations_uses_the_states_there_are():
    states = torch.arange(4.0)[
        :, None, None, None
    ]  # k=3 demonstrations (0, 1, 2) and the query (3)
    # inner average of all 4 = 1.5; sequence [0, 1, 2, 1.5]; the last 3 weights (8, 16, 0)
    # on the differences (1, 1, -0.5): 1.5 + (8 + 16) / 24 = 2.5
    assert momentum_optimize(states).item() == pytest.approx(2.5)
    # one demonstration: the only difference has weight 0, so the inner average is returned
    assert momentum_optimize(states[-2:]).item() == pytest.approx(2.5)


def test_separator_positions_of_left_padded_prompts(tiny, chain_task):
    prompts = sample_prompts(chain_task, 2, 2, seed=0) + sample_prompts(chain_task, 2, 1, seed=1)
    batch = tokenize_prompts(prompts, tiny.model, padding_side="left")
    pos = separator_positions(tiny.model, batch)
    arrow = tiny.tokenizer.convert_tokens_to_ids("->")
    rows = torch.arange(len(batch))[:, None]
    assert (batch.tokens[rows, pos] == arrow).all()
    assert (pos[:, -1] == batch.tokens.shape[1] - 1).all()


def test_states_do_not_depend_on_the_batch_size(tiny, chain_task):
    a = state_vector(tiny.model, chain_task, k=3, n_prompts=5, seed=2)
    b = state_vector(tiny.model, chain_task, k=3, n_prompts=5, seed=2, max_batch=2)
    torch.testing.assert_close(a.states, b.states, atol=1e-5, rtol=1e-5)


def test_method_object_and_bad_input(tiny, chain_task):
    method = StateVector(optimizer="inner")
    ex = method.extract(tiny.model, chain_task, k=3, n_extract=2, seed=0, template=None)
    res = ex.extras["result"]
    assert torch.equal(ex.vector.vectors, res.outputs) and ex.vector.method == "state_vector"
    assert res.optimizer == "inner" and res.states.shape[0] == 4
    assert res.intervention().layers == tuple(range(res.layer + 1))
    with pytest.raises(ConfigError, match="optimizer"):
        state_vector(tiny.model, chain_task, k=3, optimizer="adam")
    with pytest.raises(ConfigError, match="out of range"):
        res.intervention(layer=tiny.model.n_layers)
    with pytest.raises(PromptError, match="needs"):
        state_vector(tiny.model, chain_task, k=3, groups=5)


def test_hooks_are_removed_after_an_error(tiny, chain_task):
    model = tiny.model
    res = state_vector(model, chain_task, k=3, n_prompts=1)
    with pytest.raises(RuntimeError, match="boom"):
        with apply_intervention(model, res.intervention(layer=1)):
            raise RuntimeError("boom")
    left = [hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks]
    assert not left
    # read_states removes its hooks when the forward pass fails (a write of the wrong shape)
    from tvlens.extraction.state_vector import read_states

    batch = tokenize_prompts(sample_prompts(chain_task, 2, 1), model)
    pos = separator_positions(model, batch)
    bad = torch.zeros(1, 1, model.n_layers, model.n_heads + 1, model.d_head)
    with pytest.raises(RuntimeError):
        read_states(model, batch, pos[:, -1:], write=bad, write_positions=pos[:, :1])
    assert not [hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks]
