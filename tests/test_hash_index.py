"""udfs.hash_index: the multi-index hashing index agrees with the brute-force scan through adds and removes."""
import numpy as np
import pytest

from udfs.hash_index import MAX_MEMBER_SETS, HashIndex, IndexMatch, brute_force_search, to_codes


def random_hashes(rng: np.random.Generator, n: int, bits: int) -> list[str]:
    return [row.tobytes().hex() for row in rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)]


def flipped(hash_hex: str, bits_to_flip: int, rng: np.random.Generator) -> str:
    """``hash_hex`` with that many distinct bits flipped (the ThreatExchange benchmark's queries)."""
    bits = np.unpackbits(to_codes([hash_hex], len(hash_hex) * 4)[0])
    bits[rng.choice(len(bits), bits_to_flip, replace=False)] ^= 1
    return np.packbits(bits).tobytes().hex()


def agree(index: HashIndex, query: str, max_distance: int, mask: int) -> list[IndexMatch]:
    found = index.search(query, max_distance, mask)
    assert found == brute_force_search(index.codes(), index.members, query, max_distance, mask)
    return found


@pytest.mark.parametrize("bits, nhash, distances", [(256, 16, (0, 15, 31, 45)), (64, 4, (0, 6, 10))])
def test_the_index_agrees_with_brute_force_through_adds_and_removes(bits, nhash, distances):
    rng = np.random.default_rng(bits)
    stored = random_hashes(rng, 5_000, bits)
    index = HashIndex(bits, nhash)
    index.add(stored[:3_000], 0)
    index.add(stored[2_000:], 1)
    index.remove(stored[:500], 0)
    index.remove(stored[4_500:], 1)
    hits = 0
    for i in range(60):
        target = stored[rng.integers(len(stored))]
        query = flipped(target, int(rng.integers(0, max(distances) + 3)), rng)
        for distance in distances:
            for mask in (0b01, 0b10, 0b11):
                hits += len(agree(index, query, distance, mask))
    assert hits > 100  # the queries land near stored hashes: the comparison is not of empty lists


def test_a_removed_hash_stops_matching_and_comes_back_on_the_same_slot():
    rng = np.random.default_rng(3)
    stored = random_hashes(rng, 100, 256)
    index = HashIndex(256, 16)
    index.add(stored, 0)
    assert [m.hash for m in index.search(stored[7], 0, 1)] == [stored[7]]
    index.remove([stored[7]], 0)
    assert index.search(stored[7], 31, 1) == []
    index.add([stored[7].upper()], 0)
    assert [(m.hash, m.distance, m.members) for m in index.search(stored[7], 31, 1)] == [(stored[7], 0, 1)]
    assert len(index) == 100  # re-adding took the old slot: no growth, no rebuild


def test_membership_is_per_set_and_adding_twice_is_idempotent():
    index = HashIndex(64, 4)
    index.add(["00000000000000ff", "00000000000000ff"], 0)
    index.add(["00000000000000ff"], 3)
    assert len(index) == 1
    (match,) = index.search("00000000000000fe", 1, 0b1001)
    assert (match.distance, match.members) == (1, 0b1001)
    assert index.search("00000000000000fe", 1, 0b0110) == []
    index.clear_member(0)
    assert index.search("00000000000000ff", 0, 0b0001) == []
    assert index.search("00000000000000ff", 0, 0b1000) != []


def test_matches_come_nearest_first():
    index = HashIndex(64, 4)
    index.add(["0000000000000007", "0000000000000001", "0000000000000003"], 0)
    assert [m.distance for m in index.search("0000000000000000", 3, 1)] == [1, 2, 3]


def test_member_sets_are_bounded():
    with pytest.raises(ValueError):
        HashIndex(64, 4).add(["00000000000000ff"], MAX_MEMBER_SETS)


def test_threatexchange_mih_regression_set_agrees_with_brute_force():
    """ThreatExchange's own MIH regression input (1,350 haystack and 100 needle PDQ hashes, threshold 32)."""
    from lifeguard import PROJECT_ROOT
    sets = PROJECT_ROOT.parent / "shared" / "data" / "reference-vectors" / "pdq-threatexchange" / "hash-sets"
    haystack = (sets / "haystack.txt").read_text().split()
    needles = (sets / "needles.txt").read_text().split()
    index = HashIndex(256, 16)
    index.add(haystack, 0)
    found = [agree(index, needle, 32, 1) for needle in needles]
    assert sum(map(len, found)) > 0
