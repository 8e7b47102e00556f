"""The command line keeps every command, and one whose module cannot be imported says why."""

from __future__ import annotations

import pytest

from yolo_edge import cli

pytestmark = pytest.mark.runtime


def test_every_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    for command in [*cli.command_modules(), "send"]:
        assert f"    {command} " in listed
    assert "unavailable" not in listed


@pytest.mark.parametrize("failure", [ImportError("cannot import name 'UTC' from 'datetime'"),
                                     TypeError("'ABCMeta' object is not subscriptable")])
def test_a_command_whose_module_fails_to_import_reports_the_error(
        failure: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_import = cli.importlib.import_module

    def import_module(name: str):
        if name == "yolo_edge.cli_run":
            raise failure
        return real_import(name)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    assert cli.main(["run", "--greengrass", "--model", "x.onnx"]) == 1
    error = capsys.readouterr().err
    assert "`yolo-edge run` is unavailable" in error
    assert "yolo_edge.cli_run" in error and f"{type(failure).__name__}: {failure}" in error
    assert ("missing optional dependency" in error) == isinstance(failure, ImportError)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "run                 unavailable (" in capsys.readouterr().out
