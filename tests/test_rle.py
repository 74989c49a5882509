"""SIIM-ACR's run-length encoding: relative starts, column-major pixels, checked on masks made here."""

from __future__ import annotations

import numpy as np
import pytest

from cxrmim.data.rle import RleError, decode, decode_union, encode


def test_column_major_order_on_a_non_square_image():
    # 2 rows x 3 columns: pixel numbers run down each column first (0 1 | 2 3 | 4 5).
    mask = np.array([[0, 1, 0], [0, 0, 1]], dtype=bool)
    assert encode(mask) == "2 1 2 1"  # pixel 2 (row 0, col 1), then pixel 5 after a gap of 2 (pixels 3, 4)
    assert decode("2 1 2 1", (2, 3)).tolist() == mask.tolist()
    # Row-major reading would have put "1 1" first; the transposed shape must not decode to the same mask.
    assert decode("2 1 2 1", (3, 2)).tolist() != mask.T.tolist()


def test_starts_are_relative_to_the_end_of_the_previous_run():
    # 3 rows x 4 columns; runs at absolute pixels 3-4 and 6-9: gaps 3 (pixels 0-2) and 1 (pixel 5).
    mask = decode("3 2 1 4", (3, 4))
    expected = np.zeros((3, 4), dtype=bool)
    expected[0:2, 1] = True  # pixels 3, 4
    expected[:, 2] = True  # pixels 6, 7, 8
    expected[0, 3] = True  # pixel 9
    assert mask.tolist() == expected.tolist()
    assert encode(expected) == "3 2 1 4"


def test_a_run_crossing_a_column_boundary_is_one_run():
    mask = np.zeros((4, 3), dtype=bool)
    mask[2:, 0] = True  # bottom of column 0 ...
    mask[:3, 1] = True  # ... continues at the top of column 1: pixels 2..6 in column-major order
    assert encode(mask) == "2 5"
    assert decode("2 5", (4, 3)).tolist() == mask.tolist()


def test_empty_masks_and_edges():
    assert encode(np.zeros((5, 7), dtype=np.uint8)) == "-1"
    assert not decode("-1", (5, 7)).any() and not decode(" -1 ", (5, 7)).any() and not decode("", (5, 7)).any()
    full = np.ones((3, 2), dtype=np.uint8) * 255  # 255 like SIIM's own masks
    assert encode(full) == "0 6" and decode("0 6", (3, 2)).all()
    last = np.zeros((3, 2), dtype=bool)
    last[2, 1] = True  # the very last pixel (SIIM's own encoder dropped a run ending there; ours must not)
    assert encode(last) == "5 1" and decode("5 1", (3, 2)).tolist() == last.tolist()


def test_union_of_several_rows():
    a, b = np.zeros((6, 6), dtype=bool), np.zeros((6, 6), dtype=bool)
    a[1:3, 1:3], b[2:5, 2:4] = True, True
    assert decode_union([encode(a), encode(b)], (6, 6)).tolist() == (a | b).tolist()
    assert decode_union([], (6, 6)).sum() == 0


@pytest.mark.parametrize("seed", range(20))
def test_decode_inverts_encode_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    mask = rng.random(shape) < rng.uniform(0.0, 1.0)
    text = encode(mask)
    assert decode(text, shape).tolist() == mask.tolist()
    if mask.any():
        values = [int(v) for v in text.split()]
        assert all(v > 0 for v in values[1::2]) and all(v > 0 for v in values[2::2])  # gaps between runs > 0


def test_bad_strings_are_refused_with_the_reason():
    with pytest.raises(RleError, match="odd number"):
        decode("3 2 1", (4, 4))
    with pytest.raises(RleError, match="not space-separated integers"):
        decode("3 x", (4, 4))
    with pytest.raises(RleError, match="larger image"):
        decode("10 7", (4, 4))  # 17 pixels on a 16-pixel image
    with pytest.raises(RleError, match="empty runs"):
        decode("3 0", (4, 4))


def test_a_published_train_rle_row_decodes_to_columns_of_the_1024_image():
    # The start of a positive row of train-rle.csv as the challenge's description quotes it.
    text = "387620 23 996 33 986 43 977 51 968 58 962 65 956 70 952 74 949 76 946 79"
    mask = decode(text, (1024, 1024))
    lengths = [int(v) for v in text.split()[1::2]]
    assert mask.sum() == sum(lengths) and encode(mask) == text
    rows, cols = np.nonzero(mask)
    # 387620 = 378 * 1024 + 548: the first run goes down column 378 from row 548, the next ones fill columns 379..
    assert mask[548:571, 378].all() and not mask[571, 378] and not mask[547, 378]
    assert sorted(set(cols.tolist())) == list(range(378, 388))
    assert [int(mask[:, c].sum()) for c in range(378, 388)] == lengths  # one run per column: a growing region
