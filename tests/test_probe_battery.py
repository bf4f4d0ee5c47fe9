"""`correspondences.verify` of something that is no row is a `ValueError` naming `row` (a
`TypeError` before, against dynopt's one-tier rule for bad arguments)."""

import pytest

from dynopt import correspondences


@pytest.mark.parametrize("row", ["gd", None, 3])
def test_verify_of_a_non_row_is_a_value_error_naming_row(row):
    with pytest.raises(ValueError, match=r"row must be a dynopt\.correspondences\.Correspondence"):
        correspondences.verify(row)
