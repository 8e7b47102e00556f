"""utils/cleanup_gg.py against botocore's Stubber: pagination, cancel-before-delete, dry run, region."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

REPO = Path(__file__).resolve().parent.parent
COMPONENT = "com.yoloedge.inference"
COMPONENT_ARN = f"arn:aws:greengrass:eu-west-1:123456789012:components:{COMPONENT}"
GROUP_ARN = "arn:aws:iot:eu-west-1:123456789012:thinggroup/YoloGroup"
THING_ARN = "arn:aws:iot:eu-west-1:123456789012:thing/Jetson1"


def load_cleanup() -> Any:
    spec = importlib.util.spec_from_file_location("cleanup_gg", REPO / "utils" / "cleanup_gg.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cleanup_gg = load_cleanup()


def client(service: str) -> Any:
    return boto3.client(service, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")


def version_arn(version: str) -> str:
    return f"{COMPONENT_ARN}:versions:{version}"


def deployment(deployment_id: str, status: str, target: str = GROUP_ARN) -> dict:
    return {"deploymentId": deployment_id, "deploymentName": f"name-{deployment_id}", "targetArn": target,
            "deploymentStatus": status, "revisionId": "1", "isLatestForTarget": True}


def stub_listing(stub: Stubber) -> None:
    """Two pages of deployments, their details, the component and two pages of versions."""
    stub.add_response("list_deployments", {"deployments": [deployment("d-active", "ACTIVE"),
                                                           deployment("d-other", "ACTIVE")],
                                           "nextToken": "page2"}, {"historyFilter": "ALL"})
    stub.add_response("list_deployments", {"deployments": [deployment("d-done", "COMPLETED", THING_ARN),
                                                           deployment("d-shared", "ACTIVE")]},
                      {"historyFilter": "ALL", "nextToken": "page2"})
    components = {
        "d-active": {COMPONENT: {"componentVersion": "0.1.1"}},
        "d-other": {"com.example.Other": {"componentVersion": "1.0.0"}},
        "d-done": {COMPONENT: {"componentVersion": "0.1.0"}},
        "d-shared": {COMPONENT: {"componentVersion": "0.1.1"}, "aws.greengrass.Cli": {"componentVersion": "2.12.0"}},
    }
    for deployment_id, parts in components.items():
        stub.add_response("get_deployment", {"deploymentId": deployment_id, "components": parts},
                          {"deploymentId": deployment_id})
    stub.add_response("list_components", {"components": [
        {"arn": "arn:aws:greengrass:eu-west-1:123456789012:components:com.example.Other",
         "componentName": "com.example.Other"},
        {"arn": COMPONENT_ARN, "componentName": COMPONENT}]}, {"scope": "PRIVATE"})
    stub.add_response("list_component_versions", {"componentVersions": [
        {"componentName": COMPONENT, "componentVersion": "0.1.1", "arn": version_arn("0.1.1")}],
        "nextToken": "v2"}, {"arn": COMPONENT_ARN})
    stub.add_response("list_component_versions", {"componentVersions": [
        {"componentName": COMPONENT, "componentVersion": "0.1.0", "arn": version_arn("0.1.0")}]},
        {"arn": COMPONENT_ARN, "nextToken": "v2"})


def stub_core_devices(stub: Stubber) -> None:
    stub.add_response("list_core_devices", {"coreDevices": [{"coreDeviceThingName": "Jetson1", "status": "HEALTHY"}]},
                      {})


def test_plan_follows_pagination_and_skips_shared_and_foreign_deployments() -> None:
    gg = client("greengrassv2")
    with Stubber(gg) as stub:
        stub_listing(stub)
        plan = cleanup_gg.make_plan(gg, [COMPONENT])
        stub.assert_no_pending_responses()
    assert [d.deployment_id for d in plan.deployments] == ["d-active", "d-done"]
    assert [d.deployment_id for d in plan.to_cancel] == ["d-active"]
    assert [d.deployment_id for d in plan.shared] == ["d-shared"]
    assert plan.versions == [version_arn("0.1.1"), version_arn("0.1.0")]


def test_execute_cancels_before_deleting_then_deletes_versions(capsys: pytest.CaptureFixture[str]) -> None:
    gg = client("greengrassv2")
    with Stubber(gg) as stub:
        stub_listing(stub)
        # Stubber fails on any call out of this order.
        stub.add_response("cancel_deployment", {"message": "ok"}, {"deploymentId": "d-active"})
        stub.add_response("delete_deployment", {}, {"deploymentId": "d-active"})
        stub.add_response("delete_deployment", {}, {"deploymentId": "d-done"})
        stub.add_response("delete_component", {}, {"arn": version_arn("0.1.1")})
        stub.add_response("delete_component", {}, {"arn": version_arn("0.1.0")})
        stub_core_devices(stub)
        code = cleanup_gg.main(["--region", "eu-west-1", "--yes"], client_factory=lambda service, region: gg)
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped deployment d-shared" in out and "aws.greengrass.Cli" in out
    assert "core device Jetson1" in out
    assert "would " not in out


def test_include_shared_also_removes_deployments_with_other_components() -> None:
    gg = client("greengrassv2")
    with Stubber(gg) as stub:
        stub_listing(stub)
        plan = cleanup_gg.make_plan(gg, [COMPONENT], include_shared=True)
    assert [d.deployment_id for d in plan.to_cancel] == ["d-active", "d-shared"]


def test_dry_run_only_lists(capsys: pytest.CaptureFixture[str]) -> None:
    gg = client("greengrassv2")
    s3 = client("s3")
    with Stubber(gg) as stub, Stubber(s3) as s3_stub:
        stub_listing(stub)
        stub_core_devices(stub)
        s3_stub.add_response("list_objects_v2", {"Contents": [{"Key": f"{COMPONENT}/0.1.0/yolo_edge.whl"}],
                                                 "IsTruncated": True, "NextContinuationToken": "c2"},
                             {"Bucket": "bkt", "Prefix": f"{COMPONENT}/"})
        s3_stub.add_response("list_objects_v2", {"Contents": [{"Key": f"{COMPONENT}/0.1.1/yolo_edge.whl"}],
                                                 "IsTruncated": False},
                             {"Bucket": "bkt", "Prefix": f"{COMPONENT}/", "ContinuationToken": "c2"})
        code = cleanup_gg.main(["--region", "eu-west-1", "--dry-run", "--bucket", "bkt"],
                               client_factory=lambda service, region: {"greengrassv2": gg, "s3": s3}[service])
        stub.assert_no_pending_responses()
        s3_stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert code == 0
    assert out.index("would cancel deployment d-active") < out.index("would delete deployment d-active")
    assert f"would delete component version {version_arn('0.1.0')}" in out
    assert f"left: 2 S3 object(s) under s3://bkt/{COMPONENT}/" in out


def test_failed_step_is_reported_and_the_rest_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    gg = client("greengrassv2")
    with Stubber(gg) as stub:
        stub_listing(stub)
        stub.add_response("cancel_deployment", {"message": "ok"}, {"deploymentId": "d-active"})
        stub.add_client_error("delete_deployment", "ConflictException", "still active", 409)
        stub.add_response("delete_deployment", {}, {"deploymentId": "d-done"})
        stub.add_response("delete_component", {}, {"arn": version_arn("0.1.1")})
        stub.add_response("delete_component", {}, {"arn": version_arn("0.1.0")})
        stub_core_devices(stub)
        code = cleanup_gg.main(["--yes", "--region", "eu-west-1"], client_factory=lambda service, region: gg)
        stub.assert_no_pending_responses()
    captured = capsys.readouterr()
    assert code == 1
    assert "ConflictException" in captured.out
    assert "1 step(s) failed" in captured.err


def test_region_comes_from_the_environment_and_is_passed_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    regions = []
    gg = client("greengrassv2")

    def factory(service: str, region: str) -> Any:
        regions.append((service, region))
        return gg

    with Stubber(gg) as stub:
        stub.add_response("list_deployments", {"deployments": []}, {"historyFilter": "ALL"})
        stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})
        stub.add_response("list_core_devices", {"coreDevices": []}, {})
        assert cleanup_gg.main(["--dry-run"], client_factory=factory) == 0
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    assert cleanup_gg.resolve_region(None) == "eu-north-1"
    assert cleanup_gg.resolve_region("us-east-2") == "us-east-2"
    assert regions == [("greengrassv2", "ap-south-1")]


def test_missing_region_and_missing_confirmation_are_errors(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)

    def no_client(service: str, region: str) -> Any:
        raise AssertionError("no AWS call expected")

    assert cleanup_gg.main(["--yes"], client_factory=no_client) == 2
    assert "no AWS region" in capsys.readouterr().err
    assert cleanup_gg.main(["--region", "eu-west-1"], client_factory=no_client) == 2
    assert "refusing to delete without --yes" in capsys.readouterr().err
