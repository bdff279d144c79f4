"""S3T bookkeeping without torch: slices, sequences, deactivation, provenance.

Everything a deletion does happens here, so the deletion-capacity test and
bench drive exactly this code. The strategy (``model.py``) adds the weights.

Layout. Every learn request forms one *group* of slices per shard: ``L``
slices for the first request, ``continual_slices`` for each later one. A
sample's shard and slice follow from a keyed hash of its id, so the layout of
any retained sample does not depend on which other samples exist: training
from scratch on the retained samples puts every one of them in the slice it
is in now. Each shard keeps ``B`` sequences; a sequence is the list of the
slices its *active* stages were trained on, in order, each group's slices in
that sequence's order for the group (cyclic rotation or BMS).

Deactivation. Deleting a sample of slice ``s`` truncates every sequence of its
shard just before ``s``: the stages from there on saw the sample and are
dropped. A shard serves with its longest sequence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


def slot_hash(seed: int, sample_id: str) -> int:
    """A 64-bit keyed hash of a sample id (stable across processes and platforms)."""
    h = hashlib.blake2b(sample_id.encode(), digest_size=8, key=seed.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little")


def ids_digest(ids) -> str:
    """sha256 over the sorted ids, each terminated by a NUL."""
    h = hashlib.sha256()
    for sid in sorted(ids):
        h.update(sid.encode())
        h.update(b"\0")
    return h.hexdigest()


# ---- sequence selection -------------------------------------------------------


def cyclic_orders(g: int, n_sequences: int) -> list[list[int]]:
    """Sequence k starts at slice k mod g and runs cyclically (the L rotations of
    the identity order). Beyond g sequences, rotation k mod g gets its suffix
    rotated by k // g, which adds orders until they repeat."""
    orders = []
    for k in range(n_sequences):
        r, q = k % g, k // g
        base = [(r + i) % g for i in range(g)]
        suffix = base[1:]
        if suffix:
            shift = q % len(suffix)
            suffix = suffix[shift:] + suffix[:shift]
        orders.append(base[:1] + suffix)
    return orders


def bms_score(order: list[int], priors: np.ndarray, tau: float) -> float:
    """S3T's score sum_n n (1 - c_n)^tau, c_n the prior mass of the first n slices."""
    c, total = 0.0, 0.0
    for n, s in enumerate(order, start=1):
        c += priors[s]
        total += n * max(0.0, 1.0 - c) ** tau
    return total


def bms_orders(g: int, n_sequences: int, priors, tau: float) -> list[list[int]]:
    """Bipartite-matching selection: built position by position; at each position
    a maximum-weight assignment (Hungarian) gives every partial sequence a
    distinct next slice, weighted by the score of the extended sequence, so
    slices likely to be deleted drift to late positions while each position
    still holds different slices across sequences."""
    from scipy.optimize import linear_sum_assignment

    priors = np.full(g, 0.01) if priors is None else np.asarray(priors, dtype=np.float64)
    orders: list[list[int]] = [[] for _ in range(n_sequences)]
    for _ in range(g):
        for start in range(0, n_sequences, g):
            chunk = list(range(start, min(start + g, n_sequences)))
            weights = np.full((len(chunk), g), -1e12)
            for a, k in enumerate(chunk):
                for s in range(g):
                    if s not in orders[k]:
                        weights[a, s] = bms_score(orders[k] + [s], priors, tau)
            rows, cols = linear_sum_assignment(weights, maximize=True)
            for a, s in zip(rows, cols, strict=True):
                k = chunk[a]
                if s in orders[k]:  # no perfect matching on valid slices: take this sequence's best valid one
                    s = int(np.argmax(weights[a]))
                orders[k].append(int(s))
    return orders


# ---- the book -----------------------------------------------------------------


@dataclass
class Slice:
    shard: int
    group: int
    local: int  # index within its group
    ids: set[str] = field(default_factory=set)


class Book:
    """Layout and active sequences of every shard."""

    def __init__(self, n_shards: int, n_sequences: int, *, n_slices: int, continual_slices: int,
                 selection: str = "cyclic", priors=None, tau: float = 100.0, seed: int = 0) -> None:
        self.m, self.B = n_shards, n_sequences
        self.n_slices, self.continual_slices = n_slices, continual_slices
        self.selection, self.priors, self.tau, self.seed = selection, priors, tau, seed
        self.slices: list[Slice] = []
        self.slot: dict[str, int] = {}  # live sample id -> global slice index
        self.group_sizes: list[int] = []  # slices per shard of each group
        self.seqs: list[list[list[int]]] = [[[] for _ in range(n_sequences)] for _ in range(n_shards)]

    # ---- layout ---------------------------------------------------------------

    def orders(self, group: int) -> list[list[int]]:
        g = self.group_sizes[group]
        if self.selection == "bms":
            return bms_orders(g, self.B, self.priors if group == 0 else None, self.tau)
        return cyclic_orders(g, self.B)

    def shard_slices(self, shard: int, group: int) -> list[int]:
        """Global indices of a shard's slices of one group, by local index."""
        found = [i for i, s in enumerate(self.slices) if s.shard == shard and s.group == group]
        return sorted(found, key=lambda i: self.slices[i].local)

    def add_group(self, sample_ids) -> dict[tuple[int, int], int]:
        """Lay out one learn request's samples as a new group and append its
        slices to every sequence of each shard that got samples. Returns, per
        (shard, sequence), the position of the first new stage."""
        group = len(self.group_sizes)
        g = self.n_slices if group == 0 else self.continual_slices
        self.group_sizes.append(g)
        placed: dict[int, list[tuple[int, str]]] = {}
        for sid in sample_ids:
            if sid in self.slot:
                raise ValueError(f"sample {sid!r} is already learned")
            h = slot_hash(self.seed, sid)
            placed.setdefault(h % self.m, []).append(((h // self.m) % g, sid))
        starts = {}
        orders = self.orders(group) if placed else []
        for shard in sorted(placed):
            first = len(self.slices)
            for local in range(g):
                self.slices.append(Slice(shard, group, local))
            for local, sid in placed[shard]:
                self.slices[first + local].ids.add(sid)
                self.slot[sid] = first + local
            for k in range(self.B):
                starts[shard, k] = len(self.seqs[shard][k])
                self.seqs[shard][k].extend(first + local for local in orders[k])
        return starts

    def full_sequences(self, shard: int) -> list[list[int]]:
        """The sequences a training from scratch of the shard (all its slices) would have."""
        seqs: list[list[int]] = [[] for _ in range(self.B)]
        for group in range(len(self.group_sizes)):
            members = self.shard_slices(shard, group)
            if not members:
                continue
            for k, order in enumerate(self.orders(group)):
                seqs[k].extend(members[local] for local in order)
        return seqs

    def rebuild(self, shard: int) -> list[list[int]]:
        """Reset the shard's sequences to full length (after a retrain)."""
        self.seqs[shard] = self.full_sequences(shard)
        return self.seqs[shard]

    # ---- deletion -------------------------------------------------------------

    def deactivate(self, sample_ids) -> tuple[dict[tuple[int, int], int], int]:
        """Remove samples; truncate every sequence just before their slices.

        Returns ({(shard, sequence): new length} for the sequences cut, number
        of ids that were live here). Unknown or already removed ids are skipped.
        """
        cut: dict[tuple[int, int], int] = {}
        found = 0
        for sid in sample_ids:
            s = self.slot.pop(sid, None)
            if s is None:
                continue
            found += 1
            sl = self.slices[s]
            sl.ids.discard(sid)
            for k, seq in enumerate(self.seqs[sl.shard]):
                if s in seq:
                    del seq[seq.index(s):]
                    cut[sl.shard, k] = len(seq)
        return cut, found

    # ---- reading --------------------------------------------------------------

    def best(self, shard: int) -> tuple[int, int]:
        """(sequence, length) of the shard's longest active sequence (first on ties)."""
        lengths = [len(seq) for seq in self.seqs[shard]]
        k = int(np.argmax(lengths))
        return k, lengths[k]

    def serving(self, shard: int) -> bool:
        return self.best(shard)[1] > 0

    def n_shard_slices(self, shard: int) -> int:
        return sum(1 for s in self.slices if s.shard == shard)

    def live_ids(self, shard: int) -> list[str]:
        return sorted(sid for s in self.slices if s.shard == shard for sid in s.ids)

    def needs_retrain(self, shard: int, retrain_below: int) -> bool:
        """The shard holds retained samples but its longest prefix is below
        min(retrain_below, its slice count)."""
        n = self.n_shard_slices(shard)
        if n == 0 or not any(self.slices[i].ids for i in range(len(self.slices)) if self.slices[i].shard == shard):
            return False
        return self.best(shard)[1] < min(retrain_below, n)

    def stage_ids(self, seq: list[int], position: int) -> list[str]:
        """The samples stage ``position`` of a sequence trains on, in canonical
        order: its prefix slices in sequence order, each slice's ids sorted."""
        return [sid for s in seq[: position + 1] for sid in sorted(self.slices[s].ids)]

    # ---- state ----------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        ids = sorted(self.slot)
        out = {
            "book/slice_shard": np.array([s.shard for s in self.slices], dtype=np.int64),
            "book/slice_group": np.array([s.group for s in self.slices], dtype=np.int64),
            "book/slice_local": np.array([s.local for s in self.slices], dtype=np.int64),
            "book/group_sizes": np.array(self.group_sizes, dtype=np.int64),
            "book/sample_ids": np.array(ids, dtype=str) if ids else np.zeros(0, dtype="<U1"),
            "book/sample_slice": np.array([self.slot[i] for i in ids], dtype=np.int64),
        }
        for j in range(self.m):
            for k in range(self.B):
                out[f"book/seq/{j}/{k}"] = np.array(self.seqs[j][k], dtype=np.int64)
        return out

    def load_arrays(self, state: dict[str, np.ndarray]) -> None:
        shard, group, local = (state[f"book/slice_{n}"] for n in ("shard", "group", "local"))
        self.slices = [Slice(int(a), int(b), int(c)) for a, b, c in zip(shard, group, local, strict=True)]
        self.group_sizes = [int(g) for g in state["book/group_sizes"]]
        self.slot = {}
        for sid, s in zip(state["book/sample_ids"], state["book/sample_slice"], strict=True):
            sid = str(sid)
            self.slot[sid] = int(s)
            self.slices[int(s)].ids.add(sid)
        self.seqs = [[[int(x) for x in state[f"book/seq/{j}/{k}"]] for k in range(self.B)] for j in range(self.m)]

    def clone(self) -> Book:
        other = Book.__new__(Book)
        other.__dict__.update(self.__dict__)
        other.slices = [Slice(s.shard, s.group, s.local, set(s.ids)) for s in self.slices]
        other.slot = dict(self.slot)
        other.group_sizes = list(self.group_sizes)
        other.seqs = [[list(seq) for seq in shard] for shard in self.seqs]
        return other
