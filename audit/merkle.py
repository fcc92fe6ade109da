"""The Merkle tree over the sealed chain, in RFC 6962's shape (section 2.1), and its inclusion proofs.

Leaf ``m`` (0-based) is event number ``m + 1`` of the chain; its leaf input is the 32 raw bytes
of that event's chain hash. ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) =
SHA-256(0x01 || l || r)``, and a tree of ``n > 1`` leaves splits at ``k``, the largest power of
two below ``n``. A checkpoint signs the root of the first ``sequence`` leaves; an inclusion
proof (the RFC's audit path) lets anyone holding the public key check that one event is in it,
without the rest of the log.

Pure Python and standard library only: the verifier needs nothing of Django.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    # The largest power of two smaller than n (n > 1).
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes (the empty tree's root is SHA-256 of nothing)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    frontier = Frontier()
    for item in leaf_hashes:
        frontier.append(item)
    return frontier.root()


def inclusion_path(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf ``index`` in the tree of ``leaf_hashes``, leaf side first."""
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaf_hashes)} leaves")
    path: list[bytes] = []
    low, high = 0, len(leaf_hashes)  # the subtree D[low:high] that holds the leaf
    while high - low > 1:
        k = _split(high - low)
        if index < low + k:
            path.append(root_of(leaf_hashes[low + k : high]))
            high = low + k
        else:
            path.append(root_of(leaf_hashes[low : low + k]))
            low += k
    path.reverse()
    return path


def root_from_inclusion_path(*, index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root that ``path`` proves leaf hash ``leaf`` at ``index`` of a tree of ``size`` leaves
    belongs to (RFC 9162, 2.1.3.2). Raises ValueError for a path of the wrong shape."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    if len(leaf) != 32 or any(len(node) != 32 for node in path):
        raise ValueError("every hash is 32 bytes")
    fn, sn, result = index, size - 1, leaf
    for node in path:
        if sn == 0:
            raise ValueError("the path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = node_hash(node, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, node)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("the path is shorter than the tree is deep")
    return result


def inclusion_ok(*, index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    try:
        return root_from_inclusion_path(index=index, size=size, leaf=leaf, path=path) == root
    except ValueError:
        return False


class Frontier:
    """The roots of the perfect subtrees a tree of ``size`` leaves decomposes into, largest first:
    enough to append leaves and take the root without reading the earlier leaves again."""

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} frontier nodes, not {len(nodes)}")
        self.size = size
        self.nodes = list(nodes)

    def append(self, item: bytes) -> None:
        node, size = item, self.size
        while size & 1:  # each trailing one is a perfect subtree of the new one's height
            node = node_hash(self.nodes.pop(), node)
            size >>= 1
        self.nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        result = self.nodes[-1]
        for node in reversed(self.nodes[:-1]):
            result = node_hash(node, result)
        return result
