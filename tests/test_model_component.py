"""utils/publish_model_component.py: the model component recipe, S3 upload and CreateComponentVersion
(botocore Stubber), and the --local layout for greengrass-cli."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber

REPO = Path(__file__).resolve().parent.parent
NAME = "com.yoloedge.model"
ACCOUNT = "123456789012"
COMPONENT_ARN = f"arn:aws:greengrass:eu-west-1:{ACCOUNT}:components:{NAME}"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / "utils" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


publisher = load("publish_model_component")


@pytest.fixture
def models(tmp_path: Path) -> list[Path]:
    files = []
    for name, size in (("yolov8n.onnx", 3000), ("yolov8n-seg.engine", 1200)):
        path = tmp_path / name
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


class Clients:
    """Stubbed sts, greengrassv2 and s3 clients; records the CreateComponentVersion recipe."""

    def __init__(self) -> None:
        self.clients = {service: boto3.client(service, region_name="eu-west-1", aws_access_key_id="x",
                                              aws_secret_access_key="y") for service in ("sts", "greengrassv2", "s3")}
        self.stubs = {service: Stubber(client) for service, client in self.clients.items()}
        self.recipes: list[dict] = []
        self.regions: set[str] = set()
        self.clients["greengrassv2"].meta.events.register(
            "provide-client-params.greengrassv2.CreateComponentVersion",
            lambda params, **_: self.recipes.append(yaml.safe_load(params["inlineRecipe"])))

    def factory(self, service: str, region: str) -> Any:
        self.regions.add(region)
        return self.clients[service]

    def __enter__(self) -> Clients:
        for stub in self.stubs.values():
            stub.activate()
        self.stubs["sts"].add_response("get_caller_identity", {
            "Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/dev", "UserId": "AIDAEXAMPLEUSERID"})
        return self

    def __exit__(self, *exc: object) -> None:
        for stub in self.stubs.values():
            stub.deactivate()

    def assert_done(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def expect_uploads(clients: Clients, models: list[Path], version: str, bucket: str = "my-bucket") -> None:
    for path in models:
        digest = base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
        clients.stubs["s3"].add_response("put_object", {"ETag": '"e"'}, {
            "Bucket": bucket, "Key": f"{NAME}/{version}/{path.name}", "Body": ANY, "ChecksumSHA256": digest})


def test_cloud_publish_uploads_hashes_and_creates_the_next_patch(models: list[Path],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sleeps: list[float] = []
    with Clients() as clients:
        gg = clients.stubs["greengrassv2"]
        gg.add_response("list_component_versions", {"componentVersions": [
            {"componentName": NAME, "componentVersion": "1.0.9", "arn": f"{COMPONENT_ARN}:versions:1.0.9"}],
            "nextToken": "t"}, {"arn": COMPONENT_ARN})
        gg.add_response("list_component_versions", {"componentVersions": [
            {"componentName": NAME, "componentVersion": "1.0.10", "arn": f"{COMPONENT_ARN}:versions:1.0.10"}]},
            {"arn": COMPONENT_ARN, "nextToken": "t"})
        expect_uploads(clients, models, "1.0.11")
        version_arn = f"{COMPONENT_ARN}:versions:1.0.11"
        gg.add_response("create_component_version", {
            "arn": version_arn, "componentName": NAME, "componentVersion": "1.0.11",
            "creationTimestamp": "2024-01-01T00:00:00Z", "status": {"componentState": "REQUESTED"}},
            {"inlineRecipe": ANY})
        gg.add_response("describe_component", {"arn": version_arn, "status": {"componentState": "INITIATED"}},
                        {"arn": version_arn})
        gg.add_response("describe_component", {"arn": version_arn, "status": {"componentState": "DEPLOYABLE"}},
                        {"arn": version_arn})
        code = publisher.main([*map(str, models), "--bucket", "my-bucket", "--region", "eu-west-1"],
                              client_factory=clients.factory, sleep=sleeps.append)
        clients.assert_done()
    assert code == 0, capsys.readouterr().err
    assert clients.regions == {"eu-west-1"}
    assert len(sleeps) == 1
    (recipe,) = clients.recipes
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentName"] == NAME and recipe["ComponentVersion"] == "1.0.11"
    (manifest,) = recipe["Manifests"]
    assert manifest["Platform"] == {"os": "linux", "runtime": "*"}  # "*": the Java nucleus and nucleus lite
    assert manifest["Artifacts"] == [
        {"URI": f"s3://my-bucket/{NAME}/1.0.11/{p.name}", "Permission": {"Read": "ALL"}} for p in models]
    assert not manifest["Lifecycle"]
    files = recipe["ComponentConfiguration"]["DefaultConfiguration"]["files"]
    assert files == [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                      "bytes": str(p.stat().st_size)} for p in models]
    assert "is DEPLOYABLE" in capsys.readouterr().out


def test_first_publish_is_1_0_0_and_a_failed_version_is_an_error(models: list[Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with Clients() as clients:
        gg = clients.stubs["greengrassv2"]
        gg.add_client_error("list_component_versions", "ResourceNotFoundException", "no such component", 404)
        expect_uploads(clients, models[:1], "1.0.0", bucket="b")
        gg.add_response("create_component_version", {
            "arn": f"{COMPONENT_ARN}:versions:1.0.0", "componentName": NAME, "componentVersion": "1.0.0",
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "status": {"componentState": "FAILED", "message": "artifact not readable"}}, {"inlineRecipe": ANY})
        code = publisher.main([str(models[0]), "--bucket", "b", "--region", "eu-west-1"],
                              client_factory=clients.factory, sleep=lambda s: None)
        clients.assert_done()
    assert code == 1
    assert "com.yoloedge.model 1.0.0 failed: artifact not readable" in capsys.readouterr().err


def test_an_existing_version_is_refused_before_uploading(models: list[Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with Clients() as clients:
        clients.stubs["greengrassv2"].add_response("list_component_versions", {"componentVersions": [
            {"componentName": NAME, "componentVersion": "2.0.0", "arn": f"{COMPONENT_ARN}:versions:2.0.0"}]},
            {"arn": COMPONENT_ARN})
        code = publisher.main([str(models[0]), "--bucket", "b", "--version", "2.0.0", "--region", "eu-west-1"],
                              client_factory=clients.factory)
        clients.assert_done()  # no put_object, no create_component_version
    assert code == 1
    assert "2.0.0 already exists" in capsys.readouterr().err


def published_recipe(models: list[Path], version: str, *, changed: bool = False) -> bytes:
    files = [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": str(p.stat().st_size)}
             for p in models]
    if changed:
        files[0]["sha256"] = "0" * 64
    return yaml.safe_dump({"RecipeFormatVersion": "2020-01-25", "ComponentName": NAME, "ComponentVersion": version,
                           "ComponentConfiguration": {"DefaultConfiguration": {"files": files}},
                           "Manifests": [{"Platform": {"os": "linux", "runtime": "*"}, "Lifecycle": {}}]}).encode()


def test_reuse_existing_keeps_a_version_with_the_same_files(models: list[Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    version_arn = f"{COMPONENT_ARN}:versions:1.0.4"
    with Clients() as clients:
        gg = clients.stubs["greengrassv2"]
        gg.add_response("list_component_versions", {"componentVersions": [
            {"componentName": NAME, "componentVersion": v, "arn": f"{COMPONENT_ARN}:versions:{v}"}
            for v in ("1.0.4", "1.0.3")]}, {"arn": COMPONENT_ARN})
        gg.add_response("describe_component", {"arn": version_arn, "status": {"componentState": "DEPLOYABLE"}},
                        {"arn": version_arn})
        gg.add_response("get_component", {"recipeOutputFormat": "YAML", "recipe": published_recipe(models, "1.0.4")},
                        {"arn": version_arn, "recipeOutputFormat": "YAML"})
        code = publisher.main([*map(str, models), "--bucket", "b", "--region", "eu-west-1", "--reuse-existing",
                               "--json"], client_factory=clients.factory)
        clients.assert_done()  # no put_object, no create_component_version
    out = capsys.readouterr().out
    assert code == 0
    assert json.loads(out.splitlines()[-1]) == {
        "component": NAME, "version": "1.0.4", "arn": version_arn, "state": "DEPLOYABLE", "reused": True,
        "files": [p.name for p in models]}
    assert "model_loc: 1.0.4/yolov8n.onnx" in out


def test_reuse_existing_publishes_the_next_patch_when_a_file_changed(models: list[Path],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    version_arn = f"{COMPONENT_ARN}:versions:1.0.4"
    with Clients() as clients:
        gg = clients.stubs["greengrassv2"]
        gg.add_response("list_component_versions", {"componentVersions": [
            {"componentName": NAME, "componentVersion": "1.0.4", "arn": version_arn}]}, {"arn": COMPONENT_ARN})
        gg.add_response("describe_component", {"arn": version_arn, "status": {"componentState": "DEPLOYABLE"}},
                        {"arn": version_arn})
        gg.add_response("get_component", {"recipeOutputFormat": "YAML",
                                          "recipe": published_recipe(models, "1.0.4", changed=True)},
                        {"arn": version_arn, "recipeOutputFormat": "YAML"})
        expect_uploads(clients, models, "1.0.5", bucket="b")
        gg.add_response("create_component_version", {
            "arn": f"{COMPONENT_ARN}:versions:1.0.5", "componentName": NAME, "componentVersion": "1.0.5",
            "creationTimestamp": "2024-01-01T00:00:00Z", "status": {"componentState": "DEPLOYABLE"}},
            {"inlineRecipe": ANY})
        code = publisher.main([*map(str, models), "--bucket", "b", "--region", "eu-west-1", "--reuse-existing",
                               "--json"], client_factory=clients.factory)
        clients.assert_done()
    assert code == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (result["version"], result["reused"], result["state"]) == ("1.0.5", False, "DEPLOYABLE")


def test_local_layout_for_greengrass_cli(models: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "model-build"
    assert publisher.main([*map(str, models), "--local", str(out)], client_factory=None) == 0
    artifacts = out / "artifacts" / NAME / "1.0.0"
    assert sorted(p.name for p in artifacts.iterdir()) == sorted(p.name for p in models)
    for path in models:
        assert (artifacts / path.name).read_bytes() == path.read_bytes()
    (recipe_path,) = (out / "recipes").iterdir()
    assert recipe_path.name == f"{NAME}-1.0.0.yaml"
    text = recipe_path.read_text()
    assert "RecipeFormatVersion: '2020-01-25'" in text  # stays a string, not a date
    recipe = yaml.safe_load(text)
    assert [a["URI"] for a in recipe["Manifests"][0]["Artifacts"]] == [
        f"s3://BUCKET_NAME/{NAME}/1.0.0/{p.name}" for p in models]
    # Re-publishing the same version replaces the files.
    assert publisher.main([str(models[0]), "--local", str(out)], client_factory=None) == 0
    assert [p.name for p in artifacts.iterdir()] == [models[0].name]


@pytest.mark.parametrize(("make", "args", "message"), [
    ("missing", [], "not found"),
    ("txt", [], "unsupported extension '.txt'"),
    ("dup", [], "artifact names must be unique"),
    ("ok", ["--version", "1.0"], "not a semver version"),
    ("ok", ["--name", "aws.greengrass.Nucleus"], "not aws.greengrass.*"),
    ("ok", ["--bucket", "b"], "no AWS region"),
])
def test_input_errors_name_the_problem(make: str, args: list[str], message: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    model = tmp_path / ("m.txt" if make == "txt" else "m.onnx")
    if make != "missing":
        model.write_bytes(b"x")
    paths = [str(model)]
    if make == "dup":
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "m.onnx").write_bytes(b"y")
        paths.append(str(tmp_path / "sub" / "m.onnx"))
    if "--bucket" not in args:
        args = [*args, "--local", str(tmp_path / "out")]

    def no_aws(service: str, region: str) -> Any:
        raise AssertionError("no AWS call expected")

    assert publisher.main([*paths, *args], client_factory=no_aws) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_next_patch() -> None:
    assert publisher.next_patch([]) == "1.0.0"
    assert publisher.next_patch(["1.0.9", "1.0.10", "0.9.99"]) == "1.0.11"
    assert publisher.next_patch(["2.1.0-beta", "2.0.5"]) == "2.1.1"
