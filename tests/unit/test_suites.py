"""``make test``'s split of the suite (``tests.support.suites``): a caller's ``-k`` narrows a suite's
own selection instead of replacing it (pytest keeps only the last ``-k``)."""

from __future__ import annotations

import pytest

from tests.support.suites import SUITES, pytest_args


@pytest.mark.parametrize("given", [["-k", "retention"], ["-kretention"], ["--keyword", "retention"],
                                   ["--keyword=retention"]])  # fmt: skip
def test_a_callers_keyword_narrows_the_suites_own(given: list[str]) -> None:
    args = pytest_args(SUITES["fault matrix"], [*given, "-x"])
    assert args.count("-k") == 1 and "-x" in args
    assert args[args.index("-k") + 1] == "(not test_drill_fault) and (retention)"


def test_a_suite_without_a_keyword_takes_the_callers_as_given() -> None:
    assert pytest_args(["tests/integration"], ["-k", "restore"]) == ["tests/integration", "-k", "restore"]
    assert pytest_args(SUITES["reliability"], ["-q"]) == [*SUITES["reliability"], "-q"]
