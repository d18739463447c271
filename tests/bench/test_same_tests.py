"""The reference's tests found in this checkout: by id, or by name when moved to another file."""

import pytest

from sweep.bench.same_tests import same_tests

REFERENCE = [
    "tests/a/test_x.py::test_kept",
    "tests/a/test_x.py::test_moved[1]",
    "tests/a/test_x.py::test_renamed",
    "tests/a/test_y.py::TestCase::test_in_a_class",
]
OURS = [
    "tests/a/test_x.py::test_kept",
    "tests/b/test_z.py::test_moved[1]",
    "tests/b/test_z.py::test_moved[2]",  # a parameter the reference did not have
    "tests/a/test_x.py::test_new_name",
    "tests/a/test_y.py::TestCase::test_in_a_class",
]


def test_tests_match_by_id_or_by_name_and_the_unmatched_are_named():
    same, gone = same_tests(OURS, REFERENCE)
    assert same == [
        "tests/a/test_x.py::test_kept",
        "tests/b/test_z.py::test_moved[1]",
        "tests/a/test_y.py::TestCase::test_in_a_class",
    ]
    assert gone == ["tests/a/test_x.py::test_renamed"]
