"""The round's queue plan: which pool items, in which order, by which strategy.

BatchBALD picks the head (query_size items); PowerBALD fills the rest of the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.catalog import BAYESIAN_STRATEGIES
from worker.engine.acquisition import select as acquire
from worker.engine.coldstart import probcover, typiclust
from worker.round.data import ProjectSnapshot


@dataclass(frozen=True)
class QueuePlan:
    """The round's queue: pool positions in rank order, why each was picked, and item scores.

    Attributes:
        indices: ``[q]`` pool positions, rank 0 first.
        pick_scores: ``[q]`` each pick's score when it was made (BatchBALD: its gain).
        pick_strategies: the strategy that picked each entry.
        scores: ``[N]`` per-item score that orders the pool after the queue.
    """

    indices: torch.Tensor
    pick_scores: torch.Tensor
    pick_strategies: list[str]
    scores: torch.Tensor


def plan_queue(
    project: ProjectSnapshot,
    log_probs_N_K_C: torch.Tensor | None,
    seed: int,
    notes: list[str],
) -> tuple[str, QueuePlan | None]:
    """Fill the queue (queue_size items) with the project's strategy, b = query_size at a time.

    No model is retrained between the batches of one queue, so for every strategy but
    BatchBALD, batch after batch on the remaining pool is exactly one call with
    b = queue_size: top-k strategies take the same top scores, and random and PowerBALD draw
    without replacement either way. One call it is.

    BatchBALD picks its batch of query_size greedily, as the project asks. The rest of the
    queue is the buffer annotators label while the next round trains; it is drawn by
    PowerBALD from the remaining pool. Continuing the greedy BatchBALD run instead would cost
    a joint-entropy pass over the pool per extra pick, for gains that vanish: with K MC
    samples the joint estimate saturates near log K nats, so late picks are noise. PowerBALD
    keeps the buffer diverse at the cost of a sort (Kirsch et al., "Stochastic Batch
    Acquisition", TMLR 2023, find it on par with BatchBALD).
    """
    strategy = project.strategy
    if log_probs_N_K_C is None:
        return strategy, None
    if strategy in BAYESIAN_STRATEGIES and log_probs_N_K_C.shape[1] < 2:
        notes.append(f"{strategy} needs at least 2 MC samples: used entropy")
        strategy = "entropy"
    generator = torch.Generator().manual_seed(seed)
    N = log_probs_N_K_C.shape[0]
    size = min(project.queue_size, N)
    first = min(size, project.query_size) if strategy == "batchbald" else size
    head = acquire(strategy, log_probs_N_K_C, first, generator=generator)
    plan = QueuePlan(head.indices, head.batch_scores, [strategy] * first, head.scores)
    if first == size:
        return strategy, plan
    return strategy, _fill_with_powerbald(plan, log_probs_N_K_C, size - first, generator)


def _fill_with_powerbald(
    plan: QueuePlan, log_probs_N_K_C: torch.Tensor, count: int, generator: torch.Generator
) -> QueuePlan:
    remaining_N = torch.ones(log_probs_N_K_C.shape[0], dtype=torch.bool)
    remaining_N[plan.indices] = False
    positions = remaining_N.nonzero().squeeze(1)
    tail = acquire("powerbald", log_probs_N_K_C[positions], count, generator=generator)
    return QueuePlan(
        indices=torch.cat([plan.indices, positions[tail.indices]]),
        pick_scores=torch.cat([plan.pick_scores, tail.batch_scores]),
        pick_strategies=plan.pick_strategies + ["powerbald"] * count,
        scores=plan.scores,
    )


def plan_cold_start(
    project: ProjectSnapshot, features_N_D: torch.Tensor, seed: int
) -> tuple[str, QueuePlan] | None:
    """Before any model: the project's cold start over the pool's embeddings (TypiClust or
    ProbCover), or None for seeded random order. The picks head the queue; the rest of the
    queue follows in the pool's seeded random order."""
    if project.cold_start == "random":
        return None
    features = features_N_D.detach().cpu().numpy()
    budget = min(project.queue_size, len(features))
    if project.cold_start == "typiclust":
        selection = typiclust(features, budget, seed=seed % 2**32)
    else:
        selection = probcover(features, budget, num_classes=len(project.classes), seed=seed % 2**32)
    picked = torch.from_numpy(selection.indices.astype(np.int64))
    scores = torch.from_numpy(selection.scores.astype(np.float64)).float()
    count = len(picked)
    return project.cold_start, QueuePlan(
        indices=picked,
        pick_scores=scores,
        pick_strategies=[project.cold_start] * count,
        scores=torch.zeros(len(features)),
    )
