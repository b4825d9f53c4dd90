"""The sparse-linear-regression mixture (Han et al. 2025): bases, sampling, the Null task and
the sequence layout."""

from __future__ import annotations

import pytest
import torch

from tvlens.errors import EmptyTaskError, TVLensError
from tvlens.tasks.regression import (
    MIXTURES,
    RegressionMixture,
    interleave,
    query_tokens,
    regression_batch,
)


@pytest.mark.parametrize("name", ["orthogonal4", "orthogonal6"])
def test_orthogonal_bases_are_orthonormal_and_mutually_orthogonal(name):
    mix = MIXTURES[name]
    B = mix.bases()  # [task, d_in, rank]
    assert B.shape == (mix.n_tasks, mix.d_in, 4)
    flat = torch.cat(list(B), dim=1)  # all directions side by side
    assert torch.allclose(flat.T @ flat, torch.eye(flat.shape[1]), atol=1e-5)


def test_overlapping_bases_share_directions_with_neighbours():
    mix = MIXTURES["overlapping8"]
    assert (mix.d_in, mix.n_tasks) == (16, 8)
    B = mix.bases()
    for t in range(8):
        assert torch.allclose(B[t].T @ B[t], torch.eye(4), atol=1e-5)
        # Principal angles: singular values of B_t^T B_u are cosines; 1 = shared direction.
        s_next = torch.linalg.svdvals(B[t].T @ B[(t + 1) % 8])
        s_far = torch.linalg.svdvals(B[t].T @ B[(t + 4) % 8])
        assert (s_next > 1 - 1e-5).sum() == 2
        assert s_far.max() < 1e-5


def test_noise_free_y_is_exactly_linear_with_w_in_the_basis_span():
    mix = RegressionMixture(d_in=16, n_tasks=4, rank=4, noise_std=0.0)
    x, y, w = mix.sample(2, n=5, n_points=7, seed=3)
    assert torch.allclose(y, torch.einsum("npd,nd->np", x, w), atol=1e-5)
    B = mix.bases()[2]
    assert torch.allclose(w, w @ B @ B.T, atol=1e-5)  # w = B B^T w: in span(B_2)
    for other in (0, 1, 3):
        assert (w @ mix.bases()[other]).abs().max() < 1e-4  # orthogonal to other bases


def test_null_task_is_independent_of_x_and_bad_tasks_raise():
    mix = MIXTURES["orthogonal4"]
    x, y, w = mix.sample("null", n=2000, n_points=2, seed=0)
    assert w.abs().max() == 0
    assert abs(torch.corrcoef(torch.stack([x[:, 0, 0], y[:, 0]]))[0, 1]) < 0.1
    with pytest.raises(EmptyTaskError):
        mix.sample("basis_9", n=1, n_points=2, seed=0)
    with pytest.raises(EmptyTaskError):
        mix.sample(0, n=0, n_points=2, seed=0)
    with pytest.raises(TVLensError):
        RegressionMixture(d_in=8, n_tasks=4, rank=4)


def test_sequence_layout_interleaves_x_and_embedded_y():
    x = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 4)
    y = torch.tensor([[10.0, 11, 12], [20, 21, 22]])
    seq = interleave(x, y)
    assert seq.shape == (2, 6, 4)
    assert torch.equal(seq[:, 0::2], x)
    assert torch.equal(seq[:, 1::2, 0], y) and seq[:, 1::2, 1:].abs().max() == 0
    assert torch.equal(query_tokens(x, y)[:, -1], x[:, -1])


def test_training_batches_depend_on_step_and_micro_batch_only():
    mix = MIXTURES["orthogonal4"]
    a = regression_batch(mix, 5, 4, 3, seed=0)
    assert all(torch.equal(u, v) for u, v in zip(a, regression_batch(mix, 5, 4, 3, 0), strict=True))
    assert not torch.equal(a[0], regression_batch(mix, 6, 4, 3, seed=0)[0])
    assert not torch.equal(a[0], regression_batch(mix, 5, 4, 3, seed=0, micro=1)[0])
    assert a[0].shape == (4, 6, mix.d_in) and a[1].shape == (4, 3)
