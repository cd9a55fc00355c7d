"""The `flow` entry point as far as it exists: help, version, and `flow mocks`."""

from __future__ import annotations

import pytest

from flow import __version__
from flow.cli import main


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: flow") and "mocks" in out


def test_no_command_is_bad_usage(capsys):
    assert main([]) == 2
    assert "usage: flow" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"flow {__version__}\n"


def test_unknown_command_one_line(capsys):
    assert main(["runn"]) == 2
    assert capsys.readouterr().err == "flow: error: unknown command 'runn' (see flow --help)\n"


def test_flow_mocks_is_the_mocks_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["mocks", "--help"])
    assert info.value.code == 0
    assert "usage: flow mocks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["mocks", "--error-rate", "x"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("flow mocks: error: argument --error-rate")
