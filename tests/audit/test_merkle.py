"""audit/merkle.py against RFC 6962's tree: published test vectors and properties over many sizes."""

from __future__ import annotations

import hashlib

import pytest

from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    inclusion_ok,
    inclusion_path,
    leaf_hash,
    node_hash,
    root_from_inclusion_path,
    root_of,
)

# The test vectors of transparency-dev/merkle (proof/verify_test.go, the successor of Trillian's
# merkle/rfc6962 tests and of certificate-transparency's C++ merkle tree tests): eight leaves,
# the roots of their first 1..8, and audit paths given as (1-based leaf, tree size, path).
LEAVES = [bytes.fromhex(text) for text in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")] + [
    bytes.fromhex("606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
PATHS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
LEAF_HASHES = [leaf_hash(leaf) for leaf in LEAVES]


def test_the_hashes_are_rfc_6962s_with_their_domain_prefixes():
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_published_vectors(size):
    assert root_of(LEAF_HASHES[:size]).hex() == ROOTS[size - 1]
    frontier = Frontier()
    for item in LEAF_HASHES[:size]:
        frontier.append(item)
    assert frontier.root().hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("leaf", "size", "path"), PATHS)
def test_audit_paths_match_the_published_vectors(leaf, size, path):
    index = leaf - 1
    assert [node.hex() for node in inclusion_path(index, LEAF_HASHES[:size])] == path
    nodes = [bytes.fromhex(node) for node in path]
    root = bytes.fromhex(ROOTS[size - 1])
    assert root_from_inclusion_path(index=index, size=size, leaf=LEAF_HASHES[index], path=nodes) == root


def tree(size: int) -> list[bytes]:
    return [leaf_hash(index.to_bytes(4, "big")) for index in range(size)]


def test_every_leaf_of_every_tree_up_to_70_leaves_verifies_and_the_frontier_gives_the_same_root():
    frontier = Frontier()
    for size in range(1, 71):
        leaves = tree(size)
        frontier.append(leaves[-1])
        root = root_of(leaves)
        assert frontier.root() == root
        assert Frontier(size, frontier.nodes).root() == root  # as a checkpoint keeps it
        for index in range(size):
            path = inclusion_path(index, leaves)
            assert inclusion_ok(index=index, size=size, leaf=leaves[index], path=path, root=root), (index, size)


def corruptions(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes):
    """Every way a proof may be wrong that a verifier must catch (after transparency-dev's probes)."""
    yield "leaf index - 1", {"index": index - 1}
    yield "leaf index + 1", {"index": index + 1}
    yield "leaf index ^ 2", {"index": index ^ 2}
    yield "tree size * 2", {"size": size * 2}
    yield "tree size // 2", {"size": size // 2}
    yield "wrong leaf", {"leaf": leaf_hash(b"not this one")}
    yield "empty root", {"root": EMPTY_ROOT}
    yield "trailing node", {"path": [*path, root]}
    yield "preceding node", {"path": [root, *path]}
    for position in range(len(path)):
        flipped = bytearray(path[position])
        flipped[0] ^= 8
        yield f"bit flipped in node {position}", {"path": [*path[:position], bytes(flipped), *path[position + 1 :]]}
    if path:
        yield "node removed", {"path": path[:-1]}
    if len(path) > 1:
        yield "node inserted", {"path": [path[0], leaf_hash(b"x"), *path[1:]]}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 16, 17, 31, 33, 64])
def test_a_tampered_proof_never_verifies(size):
    leaves = tree(size)
    root = root_of(leaves)
    for index in range(size):
        path = inclusion_path(index, leaves)
        proof = {"index": index, "size": size, "leaf": leaves[index], "path": path, "root": root}
        assert inclusion_ok(**proof)
        for what, change in corruptions(index, size, leaves[index], path, root):
            assert not inclusion_ok(**{**proof, **change}), (what, index, size)


def test_malformed_inputs_are_refused():
    leaves = tree(4)
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_path(4, leaves)
    with pytest.raises(ValueError, match="not in a tree"):
        root_from_inclusion_path(index=0, size=0, leaf=leaves[0], path=[])
    with pytest.raises(ValueError, match="32 bytes"):
        root_from_inclusion_path(index=0, size=2, leaf=leaves[0], path=[b"short"])
    with pytest.raises(ValueError, match="frontier nodes"):
        Frontier(3, [leaves[0]])
