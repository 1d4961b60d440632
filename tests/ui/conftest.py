"""UI tests: the ``fleet`` fixture lives in ``ui_fixtures`` (shared with the browser test)."""

from ui_fixtures import fleet  # noqa: F401 - a fixture, found by name
