"""choose_part_size / part_range at the S3 limits (5 MiB..5 GiB parts, 10,000 parts, 5 TiB)."""

from __future__ import annotations

import random

import pytest

from djust_resumable.conf import GiB, MiB, TiB, get_settings
from djust_resumable.errors import TooLarge
from djust_resumable.sinks.base import choose_part_size, part_count, part_range


@pytest.fixture
def s3():
    return get_settings({})


def check_invariants(size: int, part: int, st) -> None:
    assert st.MIN_PART_SIZE <= part <= st.MAX_PART_SIZE
    assert part >= st.PREFERRED_PART_SIZE
    assert part_count(size, part) <= st.MAX_PARTS
    assert part % MiB == 0


def test_defaults_mirror_s3_limits(s3):
    assert (s3.MIN_PART_SIZE, s3.MAX_PART_SIZE, s3.MAX_PARTS, s3.MAX_OBJECT_SIZE) == (
        5 * MiB, 5 * GiB, 10_000, 5 * TiB)


@pytest.mark.parametrize("size", [0, 1, 5 * MiB - 1, 8 * MiB - 1, 8 * MiB, 8 * MiB + 1])
def test_small_files_use_the_preferred_size(s3, size):
    assert choose_part_size(size, s3) == 8 * MiB


def test_exactly_10000_preferred_parts_keeps_the_preferred_size(s3):
    size = 10_000 * 8 * MiB
    assert choose_part_size(size, s3) == 8 * MiB
    assert part_count(size, 8 * MiB) == 10_000


def test_one_byte_past_10000_parts_grows_to_the_next_mib(s3):
    size = 10_000 * 8 * MiB + 1
    part = choose_part_size(size, s3)
    assert part == 9 * MiB
    check_invariants(size, part, s3)
    # the unrounded preferred size would have needed part number 10,001
    assert part_count(size, 8 * MiB) == 10_001


def test_5_tib_exactly_fits(s3):
    size = 5 * TiB
    part = choose_part_size(size, s3)
    check_invariants(size, part, s3)
    assert part == 525 * MiB  # ceil(5 TiB / 10,000) = 524.29 MiB, rounded up to whole MiB
    assert part_count(size, part) == 9_987


def test_5_tib_plus_one_byte_is_too_large(s3):
    with pytest.raises(TooLarge) as ei:
        choose_part_size(5 * TiB + 1, s3)
    assert ei.value.code == "too_large"


def test_custom_max_parts_for_stores_with_lower_limits():
    st = get_settings({"MAX_PARTS": 1_000})
    size = 10 * GiB
    part = choose_part_size(size, st)
    assert part == 11 * MiB  # 10 GiB / 1,000 = 10.24 MiB
    check_invariants(size, part, st)
    assert choose_part_size(size, get_settings({})) == 8 * MiB  # default: 1,280 parts fit


def test_min_part_size_wins_over_a_smaller_preferred_size():
    st = get_settings({"PREFERRED_PART_SIZE": 1 * MiB, "MIN_PART_SIZE": 5 * MiB})
    assert choose_part_size(1, st) == 5 * MiB
    assert choose_part_size(100 * MiB, st) == 5 * MiB


def test_preferred_size_is_rounded_up_to_a_mib():
    st = get_settings({"PREFERRED_PART_SIZE": 6 * MiB + 1})
    assert choose_part_size(10, st) == 7 * MiB


def test_no_part_size_fits_raises_too_large():
    st = get_settings({"MAX_PARTS": 10, "MAX_PART_SIZE": 8 * MiB})
    assert choose_part_size(80 * MiB, st) == 8 * MiB
    with pytest.raises(TooLarge):
        choose_part_size(80 * MiB + 1, st)


def test_max_part_size_not_a_mib_multiple_is_still_usable():
    st = get_settings({"MAX_PARTS": 10, "MAX_PART_SIZE": 5 * MiB + 100,
                       "PREFERRED_PART_SIZE": 5 * MiB})
    size = 10 * (5 * MiB + 100)
    assert choose_part_size(size, st) == 5 * MiB + 100
    with pytest.raises(TooLarge):
        choose_part_size(size + 1, st)


def test_negative_size_is_a_programming_error(s3):
    with pytest.raises(ValueError):
        choose_part_size(-1, s3)


def test_random_sizes_respect_every_limit(s3):
    rng = random.Random(1234)
    for _ in range(2_000):
        size = rng.randrange(0, 5 * TiB + 1)
        part = choose_part_size(size, s3)
        check_invariants(size, part, s3)
        # minimal: the next smaller MiB multiple (if still >= preferred) would not fit
        if part > 8 * MiB:
            assert part_count(size, part - MiB) > s3.MAX_PARTS


def test_part_range_covers_the_file_without_gaps():
    total, ps = 20 * MiB + 7, 8 * MiB
    ranges = [part_range(n, ps, total) for n in range(1, part_count(total, ps) + 1)]
    assert ranges == [(0, 8 * MiB), (8 * MiB, 16 * MiB), (16 * MiB, 20 * MiB + 7)]
    assert part_range(1, ps, 1) == (0, 1)
    assert part_range(2, ps, 16 * MiB) == (8 * MiB, 16 * MiB)


@pytest.mark.parametrize("number,total", [(0, 10), (2, 10), (3, 16 * 1024 * 1024), (1, 0)])
def test_part_range_rejects_parts_outside_the_file(number, total):
    with pytest.raises(ValueError):
        part_range(number, 8 * MiB, total)
