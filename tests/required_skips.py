"""A pytest plugin (loaded by tests/conftest.py): skips that CI must not have fail the run.

`CMHL_REQUIRE=jemalloc,wordnet,...` names what the run must have (`.ci/run` sets it). A test
that skips for a reason naming a required capability (REQUIRED: a pattern of the skip reason,
case-insensitive, and for `mpnet` also of the test's name) is reported as failed, with the
reason; a whole module skipped at collection for such a reason fails the session (exit status
1) and is listed at the end. Without CMHL_REQUIRE nothing changes: a user's run skips what it
lacks.
"""

from __future__ import annotations

import os
import re

import pytest

ENV = "CMHL_REQUIRE"
# capability -> (pattern of the skip reasons that mean it is missing, pattern of the test
# names whose every skip counts, or None)
REQUIRED = {
    "jemalloc": (r"jemalloc", None),
    "wordnet": (r"wordnet|\bnltk\b", None),
    "tmpfs": (r"tmpfs", None),
    "minilm": (r"minilm", None),
    "torch": (r"\btorch\b", None),
    "transformers": (r"\btransformers\b", None),
    "mpnet": (r"mpnet", r"mpnet_real_weights"),
}

_collection_skips: list[str] = []


def required() -> dict[str, tuple[str, str | None]]:
    """The capabilities named by CMHL_REQUIRE, with their patterns; an unknown name is an
    error (a typo must not turn the check off)."""
    names = [n.strip().lower() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    unknown = sorted(set(names) - set(REQUIRED))
    if unknown:
        raise pytest.UsageError(f"{ENV}: unknown {unknown}; known: {', '.join(REQUIRED)}")
    return {n: REQUIRED[n] for n in names}


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = (
        str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    )
    return reason.removeprefix("Skipped: ")


def missing(nodeid: str, reason: str) -> str | None:
    """The required capability a skip of `nodeid` for `reason` stands for, else None."""
    for name, (reason_pattern, name_pattern) in required().items():
        if re.search(reason_pattern, reason, re.IGNORECASE) or (
            name_pattern and re.search(name_pattern, nodeid)
        ):
            return name
    return None


def pytest_configure(config):
    required()  # fail at once on a misspelt CMHL_REQUIRE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        name = missing(report.nodeid, reason)
        if name:
            report.outcome = "failed"
            report.longrepr = f"{ENV} includes {name!r}, but the test skipped: {reason}"


def pytest_collectreport(report):
    if report.skipped:
        reason = _skip_reason(report)
        name = missing(report.nodeid, reason)
        if name:
            _collection_skips.append(f"{report.nodeid}: {ENV} includes {name!r}: {reason}")


def pytest_terminal_summary(terminalreporter):
    if _collection_skips:
        terminalreporter.section(f"required capabilities missing ({ENV})")
        for line in _collection_skips:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session):
    if _collection_skips and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
