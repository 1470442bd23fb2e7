"""builder.digest.small_hash: the same digests as hashlib, for short and long inputs, fed at once
or piecewise; unknown algorithms raise as hashlib.new does."""

from __future__ import annotations

import hashlib

import pytest

from builder.digest import SMALL, Digest, small_hash


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
@pytest.mark.parametrize("size", [0, 1, 63, 64, 1000, SMALL, SMALL + 1])
def test_same_digest_as_hashlib(algorithm: str, size: int) -> None:
    data = bytes(i * 7 % 251 for i in range(size))
    assert small_hash(algorithm, data).hexdigest() == hashlib.new(algorithm, data).hexdigest()
    h = small_hash(algorithm)
    for i in range(0, size, 4093):
        h.update(data[i:i + 4093])
    assert h.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    assert h.digest() == hashlib.new(algorithm, data).digest()


def test_digest_of_bytes_uses_it() -> None:
    assert str(Digest.of_bytes(b"abc")) == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_unknown_algorithm_raises_like_hashlib() -> None:
    with pytest.raises(ValueError):
        hashlib.new("nosuchhash")
    with pytest.raises(ValueError):
        small_hash("nosuchhash")
