"""The command line keeps every command, one whose module cannot be imported says why, and a configuration
file and flags make the configuration."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.integration  # as when it was in the component's end-to-end tests
def test_config_file_and_flags(tmp_path: Path):
    from yolo_edge.cli import build_parser
    from yolo_edge.cli_args import build_config

    (tmp_path / "c.yaml").write_text("model_loc: a.onnx\nMODEL_HEIGHT: '480'\nconf_threshold: 0.5\n")
    args = build_parser().parse_args(["run", "--config", str(tmp_path / "c.yaml"), "--model", "b.onnx",
                                      "--set", "conf_threshold=0.6"])
    config = build_config(args)
    assert (config.model_loc, config.model_height, config.conf_threshold) == ("b.onnx", 480, 0.6)
