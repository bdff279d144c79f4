"""Deletion capacity of S3T, measured on the real bookkeeping, with the exact expectations.

Exact expectations for m shards, L equal slices, B cyclic sequences and
uniformly random single-sample deletions (olora-s3t-feasibility.md, part B):
- deletions until the first shard has no usable sequence (first full-shard
  retrain): (m L / B) sum_{j=1..B} Beta(j/B, m);
- deletions until no shard can serve (total outage): m L H(m B);
- S3T retraining a shard when it dies: B / (L H(B)) full-shard trainings per deletion;
- SISA with slice checkpoints: (L+1)/(2L) of a shard per deletion counted in
  stages, (2L+1)/(3L) counted in data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lifecycle.strategies.s3t.book import Book


def harmonic(n: int) -> float:
    return float(sum(1.0 / i for i in range(1, n + 1)))


def expected_first_retrain(m: int, L: int, B: int) -> float:
    from scipy.special import beta

    return float(m * L / B * sum(beta(j / B, m) for j in range(1, B + 1)))


def expected_outage(m: int, L: int, B: int) -> float:
    return m * L * harmonic(m * B)


def s3t_cost_per_deletion(L: int, B: int) -> float:
    return B / (L * harmonic(B))


def sisa_cost_per_deletion(L: int) -> tuple[float, float]:
    return (L + 1) / (2 * L), (2 * L + 1) / (3 * L)


def template_book(m: int, L: int, B: int, per_slice: int = 300, seed: int = 0) -> tuple[Book, list[str]]:
    """A book laid out by the strategy's own code from ids alone (no training)."""
    book = Book(m, B, n_slices=L, continual_slices=1, selection="cyclic", seed=seed)
    ids = [f"s{i}" for i in range(m * L * per_slice)]
    book.add_group(ids)
    return book, ids


@dataclass(frozen=True)
class Capacity:
    first_retrain: np.ndarray  # per stream: index of the deletion after which a shard first had no usable sequence
    outage: np.ndarray  # per stream: index of the deletion after which no shard could serve


def measure_capacity(template: Book, ids: list[str], n_streams: int, rng: np.random.Generator) -> Capacity:
    """Drive ``Book.deactivate`` (the strategy's deletion code) with streams of
    uniformly random single-sample deletions, until total outage."""
    first, outage = np.zeros(n_streams, np.int64), np.zeros(n_streams, np.int64)
    ids_arr = np.array(ids)
    m = template.m
    for t in range(n_streams):
        book = template.clone()
        dead = [False] * m
        n_dead = 0
        order = rng.permutation(len(ids))
        for i, pos in enumerate(order, start=1):
            cut, _ = book.deactivate((ids_arr[pos],))
            for j in {shard for shard, _ in cut}:
                if not dead[j] and not book.serving(j):
                    dead[j] = True
                    n_dead += 1
                    if n_dead == 1:
                        first[t] = i
            if n_dead == m:
                outage[t] = i
                break
        else:
            raise RuntimeError("ran out of samples before every shard died; use more samples per slice")
    return Capacity(first, outage)


def measure_costs(template: Book, ids: list[str], n_deletions: int, rng: np.random.Generator,
                  per_stream: int = 3000) -> dict[str, float]:
    """Retrain cost per deletion in full-shard units on the same deletion streams:
    S3T retraining a shard (all B sequences, ``Book.rebuild``) when it dies, and
    SISA with slice checkpoints (one model per shard, natural slice order)
    retraining from the deleted slice on."""
    m, L, B = template.m, template.n_slices, template.B
    sisa_template = Book(m, 1, n_slices=L, continual_slices=1, selection="cyclic", seed=template.seed)
    sisa_template.add_group(ids)
    ids_arr = np.array(ids)
    s3t_units = sisa_stages = sisa_data = 0.0
    done = 0
    while done < n_deletions:
        book, sisa = template.clone(), sisa_template.clone()
        for pos in rng.permutation(len(ids))[: min(per_stream, n_deletions - done)]:
            sid = ids_arr[pos]
            cut, _ = book.deactivate((sid,))
            for j in {shard for shard, _ in cut}:
                if not book.serving(j):
                    book.rebuild(j)
                    s3t_units += B
            cut, _ = sisa.deactivate((sid,))
            for (j, _k), keep in cut.items():
                sisa_stages += (L - keep) / L
                sisa_data += sum(range(keep + 1, L + 1)) / sum(range(1, L + 1))
                sisa.rebuild(j)
            done += 1
    return {"s3t": s3t_units / done, "sisa_stages": sisa_stages / done, "sisa_data": sisa_data / done}
