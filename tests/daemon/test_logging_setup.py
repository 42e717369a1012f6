"""The daemon's logging gathers per record only what its format shows."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from xfrmctl.daemon.main import _setup_logging


def test_records_carry_no_caller_thread_or_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    _setup_logging("info")
    root.addHandler(Keep())
    logging.getLogger("xfrmctl.daemon").info("%s: IKE SA #%d established", "site", 7)
    (record,) = records
    assert record.pathname == "(unknown file)" and record.funcName == "(unknown function)"
    assert record.threadName is None and record.processName is None
    assert err.getvalue() == "INFO xfrmctl.daemon: site: IKE SA #7 established\n"
