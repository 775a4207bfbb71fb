"""The one check every bad-input test of the command line makes."""

from __future__ import annotations


def assert_one_line_error(result, *fragments: str) -> str:
    """``result`` failed with one ``error: ...`` line on stderr holding every fragment,
    and no traceback; returns that line."""
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err, err
    return err
