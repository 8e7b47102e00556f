#!/usr/bin/env python3
"""Publish model files as a Greengrass component (default name com.yoloedge.model).

A model component has no process: its artifacts are the model files, each with its SHA-256 in the
component's configuration. The inference component, built with `--model-component`, depends on it
and finds them under YOLO_EDGE_MODEL_DIR (the model component's artifacts folder, one sub-folder per
version), so `model_loc: 1.0.3/yolov8n.onnx` picks one of them.

    # cloud: upload to s3://BUCKET/<name>/<version>/<file>, then CreateComponentVersion
    python3 utils/publish_model_component.py models/yolov8n.onnx --bucket my-artifacts --region eu-west-1
    # device: write <dir>/recipes + <dir>/artifacts for `greengrass-cli deployment create`
    python3 utils/publish_model_component.py models/yolov8n.onnx --local model-build --version 1.0.0

Without --version the cloud version is the next patch after the highest existing one (1.0.0 first).
With --reuse-existing, a highest existing version that is DEPLOYABLE and ships the same files (names
and SHA-256) is used as it is: nothing is uploaded or created. --json prints the result as one JSON
line (component, version, arn, state, reused, files) for scripts such as utils/deploy-gdk-build.sh.
An existing version is never overwritten: its artifacts in S3 are what devices check against.
The device's token exchange role needs s3:GetObject on the bucket (see docs/greengrass-deploy.md).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "recipes" / "com.yoloedge.model.yaml"
DEFAULT_NAME = "com.yoloedge.model"
MODEL_SUFFIXES = (".onnx", ".pt", ".engine", ".trt")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
FINAL_STATES = ("DEPLOYABLE", "FAILED")

ClientFactory = Callable[[str, str], Any]


class PublishError(RuntimeError):
    """An input or AWS step that failed; the message names it."""


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str  # hex
    size: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sha256_base64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


def hash_model(path: Path) -> ModelFile:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return ModelFile(path=path, sha256=digest.hexdigest(), size=path.stat().st_size)


def collect_models(paths: list[Path]) -> list[ModelFile]:
    seen: dict[str, Path] = {}
    models = []
    for path in paths:
        if not path.is_file():
            raise PublishError(f"model file {str(path)!r}: not found")
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise PublishError(f"model file {str(path)!r}: unsupported extension {path.suffix!r}; "
                               f"allowed: {', '.join(MODEL_SUFFIXES)}")
        if path.name in seen:
            raise PublishError(f"model file {str(path)!r}: same file name as {str(seen[path.name])!r}; "
                               "artifact names must be unique")
        seen[path.name] = path
        models.append(hash_model(path))
    return models


def check_version(version: str) -> str:
    if not SEMVER.match(version):
        raise PublishError(f"--version {version!r}: not a semver version x.y.z")
    return version


def next_patch(versions: list[str]) -> str:
    """The patch after the highest x.y.z in `versions`; 1.0.0 when there is none."""
    numbers = [tuple(int(p) for p in v.split("-")[0].split(".")) for v in versions if SEMVER.match(v.split("-")[0])]
    if not numbers:
        return "1.0.0"
    major, minor, patch = max(numbers)
    return f"{major}.{minor}.{patch + 1}"


def render_recipe(name: str, version: str, models: list[ModelFile], uri_base: str,
                  template: Path = TEMPLATE) -> str:
    """The model component recipe from the template; `uri_base` + file name is each artifact URI."""
    recipe = yaml.safe_load(template.read_text(encoding="utf-8"))
    recipe["ComponentName"] = name
    recipe["ComponentVersion"] = version
    recipe["ComponentDescription"] = f"YOLO model files for com.yoloedge.inference: {', '.join(m.name for m in models)}"
    recipe["ComponentConfiguration"]["DefaultConfiguration"]["files"] = [
        {"name": m.name, "sha256": m.sha256, "bytes": str(m.size)} for m in models]
    manifest = recipe["Manifests"][0]
    manifest["Artifacts"] = [{"URI": f"{uri_base}/{m.name}", "Permission": {"Read": "ALL"}} for m in models]
    return yaml.safe_dump(recipe, sort_keys=False, width=1000)


def publish_local(models: list[ModelFile], out_dir: Path, name: str, version: str) -> Path:
    """Write <out>/recipes/<name>-<version>.yaml and <out>/artifacts/<name>/<version>/<files>."""
    artifacts = out_dir / "artifacts" / name / version
    recipes = out_dir / "recipes"
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)
    recipes.mkdir(parents=True, exist_ok=True)
    for model in models:
        shutil.copy2(model.path, artifacts / model.name)
    recipe_path = recipes / f"{name}-{version}.yaml"
    # Local deployments do not download: a placeholder bucket is fine when the file is in the store.
    recipe_path.write_text(render_recipe(name, version, models, f"s3://BUCKET_NAME/{name}/{version}"),
                           encoding="utf-8")
    return recipe_path


def existing_versions(gg: Any, arn: str) -> list[str]:
    versions: list[str] = []
    try:
        for page in gg.get_paginator("list_component_versions").paginate(arn=arn):
            versions += [v["componentVersion"] for v in page.get("componentVersions", [])]
    except gg.exceptions.ResourceNotFoundException:
        return []
    return versions


def highest_version(versions: list[str]) -> str | None:
    numbered = [(tuple(int(p) for p in v.split("-")[0].split(".")), v) for v in versions
                if SEMVER.match(v.split("-")[0])]
    return max(numbered)[1] if numbered else None


def same_files(gg: Any, version_arn: str, models: list[ModelFile]) -> bool:
    """Whether the published version at `version_arn` is DEPLOYABLE and ships exactly these files."""
    if gg.describe_component(arn=version_arn).get("status", {}).get("componentState") != "DEPLOYABLE":
        return False
    recipe = yaml.safe_load(gg.get_component(arn=version_arn, recipeOutputFormat="YAML")["recipe"])
    files = ((recipe or {}).get("ComponentConfiguration") or {}).get("DefaultConfiguration", {}).get("files") or []
    published = sorted((f.get("name"), f.get("sha256")) for f in files if isinstance(f, dict))
    return published == sorted((m.name, m.sha256) for m in models)


def wait_deployable(gg: Any, arn: str, timeout_s: float, *, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic, interval_s: float = 3.0) -> dict[str, Any]:
    """Poll describe_component until the version is DEPLOYABLE or FAILED (or the timeout passes)."""
    deadline = clock() + timeout_s
    while True:
        status = gg.describe_component(arn=arn).get("status", {})
        if status.get("componentState") in FINAL_STATES or clock() >= deadline:
            return status
        sleep(interval_s)


def publish_cloud(models: list[ModelFile], *, name: str, version: str | None, bucket: str, region: str,
                  client_factory: ClientFactory, wait_s: float, sleep: Callable[[float], None] = time.sleep,
                  log: Callable[[str], None] = print, reuse_existing: bool = False) -> dict[str, Any]:
    sts = client_factory("sts", region)
    gg = client_factory("greengrassv2", region)
    account = sts.get_caller_identity()["Account"]
    component_arn = f"arn:aws:greengrass:{region}:{account}:components:{name}"
    versions = existing_versions(gg, component_arn)
    latest = highest_version(versions)
    if reuse_existing and not version and latest:
        latest_arn = f"{component_arn}:versions:{latest}"
        if same_files(gg, latest_arn, models):
            log(f"{name} {latest} already ships these files; reusing it")
            return {"arn": latest_arn, "version": latest, "state": "DEPLOYABLE", "reused": True}
    s3 = client_factory("s3", region)
    version = version or next_patch(versions)
    if version in versions:
        raise PublishError(f"{name} {version} already exists in {region}; pass a new --version or omit it "
                           "for the next patch")
    prefix = f"{name}/{version}"
    for model in models:
        log(f"uploading {model.path} -> s3://{bucket}/{prefix}/{model.name} ({model.size} bytes, "
            f"sha256 {model.sha256})")
        with model.path.open("rb") as body:
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{model.name}", Body=body,
                          ChecksumSHA256=model.sha256_base64)
    recipe = render_recipe(name, version, models, f"s3://{bucket}/{prefix}")
    created = gg.create_component_version(inlineRecipe=recipe.encode())
    status = created.get("status", {})
    log(f"created {name} {version}: {created['arn']} ({status.get('componentState', '?')})")
    if wait_s > 0 and status.get("componentState") not in FINAL_STATES:
        status = wait_deployable(gg, created["arn"], wait_s, sleep=sleep)
    if status.get("componentState") == "FAILED":
        raise PublishError(f"{name} {version} failed: {status.get('message')} {status.get('errors') or ''}".strip())
    return {"arn": created["arn"], "version": version, "state": status.get("componentState"), "reused": False}


def boto3_client(service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Publish YOLO model files as a Greengrass component (artifacts only, no process).",
        epilog="Cloud: uploads to s3://BUCKET/NAME/VERSION/FILE and calls CreateComponentVersion. "
               "Local: writes recipes/ and artifacts/ for greengrass-cli deployment create.")
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL",
                        help="model files (.onnx, .pt, .engine, .trt); file names must be unique")
    parser.add_argument("--name", default=DEFAULT_NAME, help="component name (default: %(default)s)")
    parser.add_argument("--version", default=None,
                        help="component version x.y.z (default: next patch in the cloud; 1.0.0 with --local)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--bucket", help="S3 bucket for the artifacts (cloud publish)")
    target.add_argument("--local", type=Path, metavar="DIR",
                        help="write DIR/recipes and DIR/artifacts for a local deployment instead")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                        help="AWS region (default: $AWS_REGION, then $AWS_DEFAULT_REGION)")
    parser.add_argument("--reuse-existing", action="store_true",
                        help="cloud: when the highest existing version is DEPLOYABLE and ships the same files "
                             "(names and SHA-256), use it instead of publishing a new version")
    parser.add_argument("--json", action="store_true",
                        help="also print the result as one JSON line: component, version, arn, state, reused, files")
    parser.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                        help="wait up to this long for the version to become DEPLOYABLE; 0 = do not wait "
                             "(default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, client_factory: ClientFactory = boto3_client,
         sleep: Callable[[float], None] = time.sleep) -> int:
    args = parse_args(argv)
    try:
        if not COMPONENT_NAME.match(args.name) or args.name.startswith("aws.greengrass."):
            raise PublishError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-' (at most 128), "
                               "not aws.greengrass.*")
        version = check_version(args.version) if args.version else None
        models = collect_models(args.models)
        if args.local:
            version = version or "1.0.0"
            recipe = publish_local(models, args.local, args.name, version)
            print(f"wrote {recipe} and {args.local / 'artifacts' / args.name / version}")
            print(f"deploy on the device with: utils/local_deploy.sh --model-dir {args.local}")
            if args.json:
                print_json({"version": version, "arn": None, "state": "LOCAL", "reused": False}, args.name, models)
            return 0
        if not args.region:
            raise PublishError("no AWS region: pass --region or set AWS_REGION")
        result = publish_cloud(models, name=args.name, version=version, bucket=args.bucket, region=args.region,
                               client_factory=client_factory, wait_s=args.wait, sleep=sleep,
                               reuse_existing=args.reuse_existing)
    except PublishError as exc:
        print(f"publish_model_component: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # botocore ClientError, NoCredentialsError, ...: name the AWS step that failed
        print(f"publish_model_component: AWS error: {exc}", file=sys.stderr)
        return 1
    print(f"{result['arn']} is {result['state']}")
    print(f"deploy it with: utils/deploy-gdk-build.sh --model FILE (publishes and deploys in one go) or add "
          f"{args.name}={result['version']} to a deployment of an inference component built with "
          f"--model-component; model_loc: {result['version']}/{models[0].name}")
    if args.json:
        print_json(result, args.name, models)
    return 0


def print_json(result: dict[str, Any], name: str, models: list[ModelFile]) -> None:
    print(json.dumps({"component": name, **result, "files": [m.name for m in models]}))


if __name__ == "__main__":
    sys.exit(main())
