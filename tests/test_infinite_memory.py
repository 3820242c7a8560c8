"""The ∞-former lesson: the continuous memory's maths, and a memory model that recalls what no window can."""

import pytest
import torch

from babygpt.runner import run
from lessons.infinite_memory import (RECALL_VOCAB, GPTConfig, InfiniteMemoryGPT, MemoryConfig,
                                     WindowGPT, contract, expected_basis, gaussian_density, main,
                                     matching_window_config, recall_accuracy, recall_batch,
                                     reconstruct, reconstruction_error, ridge_fit, train_recall)


def test_ridge_fit_reproduces_a_signal_in_the_basis_span():
    N, L, C = 10, 50, 3
    true_coeffs = torch.randn(2, N, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.linspace(0, 1, L, dtype=torch.float64)
    signal = reconstruct(true_coeffs, t)  # (2, L, C): exactly representable with N coefficients
    fitted = ridge_fit(signal, N, ridge=1e-10)
    assert fitted.shape == (2, N, C)
    assert torch.allclose(reconstruct(fitted, t), signal, atol=1e-5)


def test_reconstruction_error_grows_as_more_vectors_share_the_same_coefficients():
    errors = [reconstruction_error(L, num_basis=16) for L in (8, 16, 32, 64, 128)]
    assert errors[0] < 1e-3  # fewer vectors than coefficients: nothing is lost
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_contraction_keeps_the_memory_size_fixed_and_blurs_old_content():
    g = torch.Generator().manual_seed(0)
    first = torch.randn(1, 16, 4, generator=g)
    memory = contract(None, first, num_basis=16, num_old_samples=32)
    t_first = torch.linspace(0, 1, 16)
    errors = [(reconstruct(memory, t_first) - first).pow(2).mean().item()]
    for k in range(1, 4):
        memory = contract(memory, torch.randn(1, 16, 4, generator=g), num_basis=16, num_old_samples=32)
        assert memory.shape == (1, 16, 4)  # the past grows, the memory does not
        # the first segment now lives in [0, (32/48)^k] (approximately): read it back from there
        span = (31 / 47) ** k
        errors.append((reconstruct(memory, t_first * span) - first).pow(2).mean().item())
    assert all(a < b for a, b in zip(errors, errors[1:])), errors  # older content gets coarser


def test_gaussian_density_integrates_to_one_and_concentrates_as_it_narrows():
    t = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    mu = torch.tensor([0.0, 0.3, 0.5, 0.97], dtype=torch.float64)
    for sigma in (1.0, 0.2, 0.05, 0.01):
        p = gaussian_density(t, mu, torch.full_like(mu, sigma))  # (4, P)
        assert torch.allclose(torch.trapezoid(p, t), torch.ones(4, dtype=torch.float64), atol=1e-6)
    near = (t - 0.5).abs() < 0.05
    mass_near = [torch.trapezoid(gaussian_density(t, torch.tensor(0.5, dtype=torch.float64),
                                                  torch.tensor(s, dtype=torch.float64)) * near, t).item()
                 for s in (1.0, 0.3, 0.1, 0.03, 0.01)]
    assert all(a < b for a, b in zip(mass_near, mass_near[1:])), mass_near
    assert mass_near[-1] > 0.999


def test_closed_form_basis_expectation_matches_numeric_quadrature():
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    mu = torch.tensor([0.02, 0.4, 0.9], dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.05, 0.02], dtype=torch.float64)
    from lessons.infinite_memory import rbf_basis

    numeric = torch.trapezoid(gaussian_density(t, mu, sigma)[:, :, None] * rbf_basis(t, 12)[None], t, dim=1)  # (3, N)
    assert torch.allclose(expected_basis(mu, sigma, 12), numeric, atol=1e-6)


def test_window_gpt_cannot_see_the_key_by_construction():
    """The plain GPT reads only the last segment: its answer to '?' is identical whatever the key was."""
    config = GPTConfig(block_size=8, vocab_size=len(RECALL_VOCAB), n_layer=1, n_head=2, n_embd=16)
    model = WindowGPT(config).eval()
    segments, answers = recall_batch(4, 3, 8, torch.Generator().manual_seed(0))
    other = segments.clone()
    other[:, 0, 1] = (answers + 1) % 8  # a different key
    with torch.no_grad():
        assert torch.equal(model(segments)[:, -1, -1], model(other)[:, -1, -1])


def test_memory_model_recalls_across_segments_where_the_window_is_at_chance():
    """A short run: the memory model answers a key 22 tokens back with a window of 8; the window GPT cannot
    (see the test above), so chance (1/8) is its ceiling on average."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and kind to a shared machine
    try:
        torch.manual_seed(0)
        config = GPTConfig(block_size=8, vocab_size=len(RECALL_VOCAB), n_layer=2, n_head=2, n_embd=32)
        memory_model = InfiniteMemoryGPT(config, MemoryConfig(num_basis=8, num_old_samples=16))
        window_model = WindowGPT(matching_window_config(config, memory_model.num_params()))
        assert abs(window_model.num_params() - memory_model.num_params()) < 0.1 * memory_model.num_params()
        train_recall(memory_model, 150, 8, (2, 3), batch_size=32)
        assert recall_accuracy(memory_model, 3, 8, num_examples=256) > 0.6  # chance is 0.125
    finally:
        torch.set_num_threads(threads)


def test_bad_flags_give_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(main, ["--part", "everything"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
