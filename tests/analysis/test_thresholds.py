import numpy as np
import pytest

from analysis.thresholds import parse_threshold


@pytest.mark.parametrize("text, low, high", [
    ("8", 8, None), (8, 8, None), (">=9", 9, None), (">9", 10, None), ("10", 10, None),
    ("==9", 9, 9), ("=9", 9, 9), ("8-10", 8, 10), (" >= 8 ", 8, None), ("9-9", 9, 9),
])
def test_parse_forms(text, low, high):
    t = parse_threshold(text)
    assert (t.low, t.high) == (low, high)


@pytest.mark.parametrize("text", ["", "abc", ">=x", "10-8", "0", ">=0", "8-", "<8", "8.5"])
def test_invalid_thresholds_name_valid_forms(text):
    with pytest.raises(ValueError) as err:
        parse_threshold(text)
    assert "threshold" in str(err.value)


def test_mask_inclusive_range():
    votes = np.array([0, 7, 8, 9, 10])
    assert parse_threshold("8").mask(votes).tolist() == [False, False, True, True, True]
    assert parse_threshold("8-9").mask(votes).tolist() == [False, False, True, True, False]
    assert parse_threshold("==10").mask(votes).tolist() == [False, False, False, False, True]
    assert str(parse_threshold("8-10")) == "8-10" and str(parse_threshold("9")) == ">=9"
