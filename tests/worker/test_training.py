"""fit / evaluate / MC inference of worker.engine.training, on real digits."""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch
from sklearn.datasets import load_digits

from worker.engine.networks import NetworkSpec, build_network
from worker.engine.training import (
    TrainConfig,
    _batch_indices,
    evaluate,
    fit,
    mc_log_probs,
    pick_device,
    step_budget,
    validation_score,
)

torch.set_num_threads(min(2, torch.get_num_threads()))
CPU = torch.device("cpu")
SIZE = 16  # sklearn's 8x8 digits upscaled: the paper CNN without its small-image padding


@cache
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear")
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def split(n_train: int) -> tuple[torch.Tensor, ...]:
    x, y = digits()
    return x[:n_train], y[:n_train], x[1000:1200], y[1000:1200], x[1200:], y[1200:]


def fresh(seed: int = 0) -> torch.nn.Module:
    return build_network(NetworkSpec(10, 1, SIZE), seed=seed)


def test_fit_learns_digits_well_above_chance() -> None:
    x_train, y_train, x_val, y_val, x_test, y_test = split(300)
    model = fresh()
    report = fit(
        model, x_train, y_train, config=TrainConfig(seed=0), x_val=x_val, y_val=y_val, device=CPU
    )
    result = evaluate(model, x_test, y_test, mc_samples=10, seed=0, device=CPU)
    assert result.accuracy > 0.85, result  # chance is 0.10
    assert result.nll < 0.6
    assert result.count == len(y_test) and result.classes_evaluated == list(range(10))
    assert report.steps > 0 and report.best_validation_nll is not None
    assert report.seconds < 60


@pytest.mark.parametrize("stop_on", ["accuracy", "nll"])
def test_early_stopping_keeps_the_weights_of_the_best_epoch(stop_on: str) -> None:
    x_train, y_train, x_val, y_val, *_ = split(60)
    model = fresh()
    config = TrainConfig(seed=1, patience=2, epoch_steps=20, stop_on=stop_on)  # type: ignore[arg-type]
    report = fit(model, x_train, y_train, config=config, x_val=x_val, y_val=y_val, device=CPU)
    assert report.early_stopped and report.epochs < config.max_epochs
    assert len(report.history) == report.epochs and report.steps == 20 * report.epochs
    if stop_on == "accuracy":
        assert report.best_validation_accuracy == max(s.accuracy for s in report.history)
    else:
        assert report.best_validation_nll == min(s.nll for s in report.history)
    # The last patience epochs brought no improvement, and their weights were thrown away.
    now = validation_score(model, x_val, y_val, config)
    assert now.accuracy == report.best_validation_accuracy
    assert now.nll == pytest.approx(report.best_validation_nll, abs=1e-5)


def test_an_epoch_is_the_configured_steps_or_one_pass_over_the_labels() -> None:
    x_train, y_train, x_val, y_val, *_ = split(300)
    config = TrainConfig(seed=0, epoch_steps=2, max_epochs=2, patience=5)
    report = fit(fresh(), x_train, y_train, config=config, x_val=x_val, y_val=y_val, device=CPU)
    assert report.epochs == 2 and report.steps == 2 * math.ceil(300 / 64)


def test_fit_is_deterministic_under_a_seed_and_leaves_the_global_rng_alone() -> None:
    x_train, y_train, *_, x_test, _ = split(40)
    config = TrainConfig(seed=3, min_steps=60)

    def run(seed: int) -> torch.Tensor:
        model = fresh(seed=7)
        fit(model, x_train, y_train, config=TrainConfig(seed=seed, min_steps=60), device=CPU)
        return mc_log_probs(model, x_test[:50], mc_samples=4, seed=0, device=CPU)

    state = torch.get_rng_state()
    first = run(config.seed)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(run(config.seed), first, atol=0, rtol=0)
    assert float((run(config.seed + 1) - first).abs().max()) > 1e-3


def test_few_labels_use_the_growing_step_budget() -> None:
    x_train, y_train, x_val, y_val, *_ = split(20)
    config = TrainConfig(seed=0, min_steps=80)
    # 30 validation items are below min_validation_for_early_stopping: step budget, no stop.
    report = fit(
        fresh(), x_train, y_train, config=config, x_val=x_val[:30], y_val=y_val[:30], device=CPU
    )
    assert report.steps == step_budget(20, config) == 80
    assert not report.early_stopped
    assert step_budget(10_000, TrainConfig()) > step_budget(1_000, TrainConfig()) >= 500


def test_small_labelled_sets_get_class_balanced_batches() -> None:
    y = torch.tensor([0] * 95 + [1] * 5)
    balanced = _batch_indices(y, TrainConfig(seed=0, balanced_below=200))
    shares = torch.cat([y[next(balanced)] for _ in range(50)]).float().mean()
    assert 0.4 < float(shares) < 0.6  # class 1 drawn about half the time, not 5%
    shuffled = _batch_indices(y, TrainConfig(seed=0, balanced_below=50))
    shares = torch.cat([y[next(shuffled)] for _ in range(50)]).float().mean()
    assert float(shares) < 0.15


def test_evaluate_restricts_to_the_given_classes() -> None:
    x_train, y_train, *_ = split(100)
    model = fresh()
    fit(model, x_train, y_train, config=TrainConfig(seed=0, min_steps=50), device=CPU)
    _, _, _, _, x_test, y_test = split(0)
    result = evaluate(model, x_test, y_test, mc_samples=4, seed=0, classes=[2, 5], device=CPU)
    assert result.count == int(((y_test == 2) | (y_test == 5)).sum())
    assert sorted(result.per_class_accuracy) == result.classes_evaluated == [2, 5]
    empty = evaluate(model, x_test[:0], y_test[:0], mc_samples=4, seed=0, device=CPU)
    assert empty.count == 0 and math.isnan(empty.accuracy) and math.isnan(empty.nll)


def test_bad_training_data_raises() -> None:
    x_train, y_train, *_ = split(20)
    with pytest.raises(ValueError, match="must lie in"):
        fit(fresh(), x_train, y_train + 10, config=TrainConfig(), device=CPU)
    with pytest.raises(ValueError, match="matching"):
        fit(fresh(), x_train, y_train[:5], config=TrainConfig(), device=CPU)
    with pytest.raises(ValueError, match="long"):
        fit(fresh(), x_train, y_train.float(), config=TrainConfig(), device=CPU)
    with pytest.raises(ValueError, match=r"\[N, channels, H, W\]"):
        mc_log_probs(fresh(), x_train[0], mc_samples=2, seed=0, device=CPU)


def test_pick_device_prefers_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == expected
