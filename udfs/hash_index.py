"""A Hamming-distance index over perceptual hashes that takes adds and removes while it serves look-ups.

The index is faiss's ``IndexBinaryMultiHash`` (multi-index hashing: the hash is cut into ``nhash``
chunks, each a hash-table key; a hash within ``d`` bits of a query has some chunk within
``d // nhash`` bits of the query's, so probing every chunk's neighbours that far finds every match, and
the candidates are then checked on the full hash). faiss cannot remove from it, so membership lives
beside it: one 64-bit mask per stored hash, a bit per bank. Removing a hash from a bank clears its bit;
adding it again sets the bit on the same slot. A hash with no bit set matches nothing. The faiss index
never has to be rebuilt, so a bank update takes effect on the next look-up with no pause; the cost is
that a removed hash keeps its slot (32 bytes for PDQ) until the job restarts.

``brute_force_search`` is the reference: a linear scan that the index must agree with exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

MAX_MEMBER_SETS = 64  # bits in a membership mask: at most this many banks share one index


@dataclass(frozen=True)
class IndexMatch:
    hash: str  # the stored hash, lower-case hex
    distance: int  # Hamming distance in bits to the query
    members: int  # the mask of member sets (banks) that hold it


def to_codes(hashes_hex: list[str], bits: int) -> np.ndarray:
    """Hex hashes as faiss binary codes: an (n, bits/8) uint8 array, most significant byte first."""
    if not hashes_hex:
        return np.zeros((0, bits // 8), dtype=np.uint8)
    return np.frombuffer(bytes.fromhex("".join(hashes_hex)), dtype=np.uint8).reshape(len(hashes_hex), bits // 8)


def hamming_distances(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The distance of each row of ``codes`` (n, bytes) to ``query`` (bytes,)."""
    return np.bitwise_count(np.bitwise_xor(codes, query)).sum(axis=1, dtype=np.int64)


def brute_force_search(codes: np.ndarray, members: np.ndarray, query_hex: str, max_distance: int,
                       member_mask: int) -> list[IndexMatch]:
    """The reference: every stored hash within ``max_distance`` bits whose members meet ``member_mask``,
    nearest first (ties by hash)."""
    query = to_codes([query_hex], codes.shape[1] * 8)[0]
    distances = hamming_distances(codes, query)
    live = (members & np.uint64(member_mask)) != 0
    found = np.flatnonzero((distances <= max_distance) & live)
    return sorted((IndexMatch(codes[i].tobytes().hex(), int(distances[i]), int(members[i])) for i in found),
                  key=lambda m: (m.distance, m.hash))


class HashIndex:
    """Hashes of one signal type (``bits`` long) in up to ``MAX_MEMBER_SETS`` member sets (banks),
    numbered by the caller. ``nhash`` chunks of ``bits // nhash`` bits each; look-ups are exact for any
    distance (a larger distance probes more neighbours per chunk)."""

    def __init__(self, bits: int, nhash: int):
        if bits % 8 or bits % nhash:
            raise ValueError(f"{bits} bits do not split into bytes and {nhash} chunks")
        self.bits = bits
        self._index = faiss.IndexBinaryMultiHash(bits, nhash, bits // nhash)
        self._members = np.zeros(1024, dtype=np.uint64)  # grows by doubling; slot i is faiss id i

    def __len__(self) -> int:
        """Slots in use, removed hashes included (their slots are kept for a later re-add)."""
        return self._index.ntotal

    @property
    def members(self) -> np.ndarray:
        return self._members[: len(self)]

    def codes(self) -> np.ndarray:
        """Every slot's hash as binary codes, for the brute-force reference and for tests."""
        storage = faiss.downcast_IndexBinary(self._index.storage)
        return faiss.vector_to_array(storage.xb).reshape(len(self), self.bits // 8)

    def member_count(self, member: int) -> int:
        """Hashes in member set ``member``."""
        return int(np.count_nonzero(self.members & self._bit(member)))

    def memory_bytes(self) -> int:
        """Codes and hash tables (faiss' estimate: 8 bytes per table entry) plus membership masks."""
        return len(self) * (self.bits // 8 + self._index.nhash * 8) + self._members.nbytes

    # ---- changes ----------------------------------------------------------------------------------

    def add(self, hashes_hex: list[str], member: int) -> None:
        """Puts each hash into member set ``member`` (0 <= member < MAX_MEMBER_SETS); idempotent."""
        self.add_codes(to_codes([h.lower() for h in hashes_hex], self.bits), member)

    def add_codes(self, codes: np.ndarray, member: int) -> None:
        """``add`` for hashes given as binary codes, (n, bits/8) uint8: bulk loads skip the hex."""
        bit = self._bit(member)
        _, first = np.unique(codes, axis=0, return_index=True)
        codes = codes[np.sort(first)]  # duplicates dropped, arrival order kept
        slots = self._slots(codes)
        present = slots >= 0
        self._members[slots[present]] |= bit
        new = codes[~present]
        if len(new):
            start = len(self)
            self._grow(start + len(new))
            self._index.add(new)
            self._members[start: start + len(new)] = bit

    def remove(self, hashes_hex: list[str], member: int) -> None:
        """Takes each hash out of member set ``member``; absent hashes are ignored."""
        slots = self._slots(to_codes([h.lower() for h in hashes_hex], self.bits))
        self._members[slots[slots >= 0]] &= ~self._bit(member)

    def clear_member(self, member: int) -> None:
        """Takes every hash out of member set ``member`` (its number may then be given to another set)."""
        self._members &= ~self._bit(member)

    # ---- look-ups ---------------------------------------------------------------------------------

    def search(self, query_hex: str, max_distance: int, member_mask: int) -> list[IndexMatch]:
        """Every stored hash within ``max_distance`` bits in a member set of ``member_mask``, nearest first
        (ties by hash): the same list as ``brute_force_search``."""
        lims, distances, ids = self.search_codes(to_codes([query_hex.lower()], self.bits), max_distance)
        members = self._members[ids]
        keep = (members & np.uint64(member_mask)) != 0
        stored = self._index.storage
        matches = [IndexMatch(_code_hex(stored, int(i), self.bits), int(d), int(m))
                   for i, d, m in zip(ids[keep], distances[keep], members[keep])]
        return sorted(matches, key=lambda m: (m.distance, m.hash))

    def search_codes(self, queries: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """faiss' range search for many queries at once, removed hashes included: (lims, distances, ids),
        query q's results at ``lims[q]:lims[q+1]``."""
        self._index.nflip = max_distance // self._index.nhash
        # faiss' binary range search keeps distances strictly below the radius.
        return self._index.range_search(queries, max_distance + 1)

    # ---- internals --------------------------------------------------------------------------------

    @staticmethod
    def _bit(member: int) -> np.uint64:
        if not 0 <= member < MAX_MEMBER_SETS:
            raise ValueError(f"member set {member} is outside 0..{MAX_MEMBER_SETS - 1}")
        return np.uint64(1 << member)

    def _slots(self, codes: np.ndarray) -> np.ndarray:
        """Each code's slot, or -1 if it has none: an exact look-up in the index itself."""
        if not len(codes) or not len(self):
            return np.full(len(codes), -1, dtype=np.int64)
        self._index.nflip = 0
        lims, _, ids = self._index.range_search(codes, 1)
        counts = np.diff(lims)
        slots = np.full(len(codes), -1, dtype=np.int64)
        slots[counts > 0] = ids[lims[:-1][counts > 0]]
        return slots

    def _grow(self, size: int) -> None:
        if size > len(self._members):
            grown = np.zeros(max(size, 2 * len(self._members)), dtype=np.uint64)
            grown[: len(self)] = self.members
            self._members = grown


def _code_hex(storage, slot: int, bits: int) -> str:
    return faiss.downcast_IndexBinary(storage).reconstruct(slot).tobytes().hex()
