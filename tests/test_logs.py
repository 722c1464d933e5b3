"""The workflow scripts' logging context."""

import logging
import warnings

import pytest

from radiodet.logs import configure


def test_configure_logs_to_the_file_and_restores_the_warning_filters(tmp_path):
    filters_before, handlers_before = list(warnings.filters), list(logging.getLogger().handlers)
    with configure(tmp_path / "stage.log") as log:
        log.info("progress line")
        warnings.warn("a BLANK keyword on float data", stacklevel=1)  # filtered inside the block
    assert warnings.filters == filters_before
    text = (tmp_path / "stage.log").read_text()
    assert "progress line" in text and "BLANK" not in text
    with pytest.warns(UserWarning, match="BLANK"):
        warnings.warn("a BLANK keyword on float data", stacklevel=1)
    assert logging.getLogger().handlers == handlers_before


def test_a_failing_stage_writes_its_traceback_to_the_log(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with configure(tmp_path / "stage.log"):
            raise ZeroDivisionError("division by zero")
    assert "stage failed" in (tmp_path / "stage.log").read_text()
    assert "ZeroDivisionError" in (tmp_path / "stage.log").read_text()
