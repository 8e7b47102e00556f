#!/usr/bin/env python3
"""Remove yolo-edge's Greengrass resources from an AWS account, in the order AWS requires.

1. cancel the deployments that include the component (active ones), then delete them;
2. delete every version of the component (and of the model component with --component);
3. report what is left for you to decide on: S3 artifacts, core devices / things.

    python3 utils/cleanup_gg.py --region eu-west-1 --dry-run      # show the plan
    python3 utils/cleanup_gg.py --region eu-west-1 --yes          # do it

Deleting a deployment only removes the cloud record; devices keep running what they have until the
target gets a new deployment without the component. Deployments that also carry other components
are skipped unless --include-shared.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_COMPONENTS = ("com.yoloedge.inference",)
ACTIVE = "ACTIVE"


@dataclass
class Deployment:
    deployment_id: str
    name: str
    target_arn: str
    status: str
    components: list[str]


@dataclass
class Plan:
    components: list[str]
    deployments: list[Deployment] = field(default_factory=list)  # to cancel (when active) and delete
    shared: list[Deployment] = field(default_factory=list)  # carry other components too: left alone
    versions: list[str] = field(default_factory=list)  # component version ARNs to delete

    @property
    def to_cancel(self) -> list[Deployment]:
        return [d for d in self.deployments if d.status == ACTIVE]


def paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Iterable[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def make_plan(gg: Any, components: list[str], include_shared: bool = False) -> Plan:
    plan = Plan(components=list(components))
    wanted = set(components)
    summaries = list(paginate(gg, "list_deployments", "deployments", historyFilter="ALL"))
    for summary in summaries:
        detail = gg.get_deployment(deploymentId=summary["deploymentId"])
        names = sorted((detail.get("components") or {}).keys())
        if not wanted & set(names):
            continue
        deployment = Deployment(deployment_id=summary["deploymentId"], name=summary.get("deploymentName", ""),
                                target_arn=summary.get("targetArn", ""), status=summary.get("deploymentStatus", ""),
                                components=names)
        if set(names) <= wanted or include_shared:
            plan.deployments.append(deployment)
        else:
            plan.shared.append(deployment)
    arns = {c["componentName"]: c["arn"] for c in paginate(gg, "list_components", "components", scope="PRIVATE")}
    for name in components:
        if name not in arns:
            continue
        for version in paginate(gg, "list_component_versions", "componentVersions", arn=arns[name]):
            plan.versions.append(version["arn"])
    return plan


def execute(gg: Any, plan: Plan, *, dry_run: bool, log: Callable[[str], None] = print) -> list[str]:
    """Cancel, then delete deployments, then delete versions. Returns the errors met (it goes on)."""
    prefix = "would " if dry_run else ""
    errors: list[str] = []

    def step(text: str, call: Callable[[], Any]) -> None:
        log(f"{prefix}{text}")
        if dry_run:
            return
        try:
            call()
        except Exception as exc:  # ClientError etc.: report and continue with the rest
            errors.append(f"{text}: {exc}")
            log(f"  failed: {exc}")

    for d in plan.to_cancel:
        step(f"cancel deployment {d.deployment_id} ({d.name} -> {d.target_arn})",
             lambda d=d: gg.cancel_deployment(deploymentId=d.deployment_id))
    for d in plan.deployments:
        step(f"delete deployment {d.deployment_id} ({d.name}, {d.status})",
             lambda d=d: gg.delete_deployment(deploymentId=d.deployment_id))
    for arn in plan.versions:
        step(f"delete component version {arn}", lambda arn=arn: gg.delete_component(arn=arn))
    for d in plan.shared:
        log(f"skipped deployment {d.deployment_id} ({d.name} -> {d.target_arn}): it also deploys "
            f"{', '.join(c for c in d.components if c not in plan.components)}; use --include-shared")
    return errors


def report_leftovers(plan: Plan, *, gg: Any, s3: Any | None, bucket: str | None,
                     log: Callable[[str], None] = print) -> None:
    """What cleanup does not delete: artifacts in S3 and the core devices (things)."""
    if s3 is not None and bucket:
        for name in plan.components:
            keys = [o["Key"] for o in paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=f"{name}/")]
            if keys:
                log(f"left: {len(keys)} S3 object(s) under s3://{bucket}/{name}/ "
                    f"(remove with: aws s3 rm --recursive s3://{bucket}/{name}/)")
    else:
        log("left: S3 artifacts are not checked; pass --bucket to list them (GDK's bucket is "
            "<prefix>-<region>-<account>)")
    for device in paginate(gg, "list_core_devices", "coreDevices"):
        thing = device["coreDeviceThingName"]
        log(f"left: core device {thing} ({device.get('status', '?')}); it keeps running its components. "
            f"Remove it with: aws greengrassv2 delete-core-device --core-device-thing-name {thing} "
            f"&& aws iot delete-thing --thing-name {thing} (after detaching its certificate)")


def resolve_region(explicit: str | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    return explicit or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None


def boto3_client(service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Cancel and delete yolo-edge's Greengrass deployments, then delete its component versions.",
        epilog="Order: cancel active deployments -> delete deployments -> delete component versions -> "
               "report S3 artifacts and core devices left.")
    parser.add_argument("--component", action="append", default=None, metavar="NAME",
                        help="component to remove (repeatable; default: com.yoloedge.inference; add "
                             "com.yoloedge.model for the model component)")
    parser.add_argument("--region", default=None,
                        help="AWS region (default: $AWS_REGION, then $AWS_DEFAULT_REGION)")
    parser.add_argument("--bucket", default=None, help="artifact bucket to report leftover objects in")
    parser.add_argument("--include-shared", action="store_true",
                        help="also delete deployments that carry other components")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    mode.add_argument("--yes", action="store_true", help="do it (required unless --dry-run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, client_factory: Callable[[str, str], Any] = boto3_client) -> int:
    args = parse_args(argv)
    region = resolve_region(args.region)
    if not region:
        print("cleanup_gg: error: no AWS region: pass --region or set AWS_REGION", file=sys.stderr)
        return 2
    if not (args.dry_run or args.yes):
        print("cleanup_gg: error: refusing to delete without --yes (preview with --dry-run)", file=sys.stderr)
        return 2
    components = args.component or list(DEFAULT_COMPONENTS)
    try:
        gg = client_factory("greengrassv2", region)
        plan = make_plan(gg, components, include_shared=args.include_shared)
        if not (plan.deployments or plan.versions or plan.shared):
            print(f"nothing to clean up for {', '.join(components)} in {region}")
        errors = execute(gg, plan, dry_run=args.dry_run)
        s3 = client_factory("s3", region) if args.bucket else None
        report_leftovers(plan, gg=gg, s3=s3, bucket=args.bucket)
    except Exception as exc:  # botocore errors: credentials, permissions, throttling
        print(f"cleanup_gg: AWS error: {exc}", file=sys.stderr)
        return 1
    if errors:
        print(f"cleanup_gg: {len(errors)} step(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
