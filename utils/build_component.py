#!/usr/bin/env python3
"""Build the com.yoloedge.inference Greengrass component: the wheel and the built recipe.

GDK runs this as the custom build of gdk-config.json (`gdk component build`); it also runs on its own:

    python3 utils/build_component.py                       # -> greengrass-build/
    python3 utils/build_component.py --version 0.2.0 --output-dir /tmp/gg-build

It writes, as GDK's own builds do,

    <output>/artifacts/<ComponentName>/<version>/yolo_edge-<x>-py3-none-any.whl
    <output>/recipes/recipe.yaml

with ComponentName/ComponentVersion/ComponentPublisher from gdk-config.json and the wheel's artifact
URI in GDK's `s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/<file>` form (publish fills it in).
The version is gdk-config's (semver, or NEXT_PATCH, which is kept literally as GDK does: only
`gdk component publish` resolves it, and local deployments need a real version).

`--model-component ">=1.0.0"` (or YOLO_EDGE_MODEL_COMPONENT) adds a HARD dependency on the model
component com.yoloedge.model (deployed, and its files downloaded, before this component starts) and
sets YOLO_EDGE_MODEL_DIR to the folder that holds that component's artifacts, one sub-folder per
version: `model_loc: 1.0.3/yolov8n.onnx` names a file of model version 1.0.3. The folder is spelt
`{kernel:rootPath}/packages/artifacts/com.yoloedge.model`, a variable both the Java nucleus and
nucleus lite interpolate (nucleus lite does not interpolate `{<dependency>:artifacts:path}`).

S3 export of snapshots goes through the Greengrass Stream Manager component: when the recipe's
DefaultConfiguration names a bucket (`snapshots.s3_bucket`), or with `--stream-manager`, the built recipe
depends on aws.greengrass.StreamManager (HARD, 2.x) and its default `install_extras` gets the `s3` extra
(the stream-manager SDK).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
RECIPE_FORMAT_VERSION = "2020-01-25"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
NEXT_PATCH = "NEXT_PATCH"
URI_PREFIX = "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/"
MODEL_COMPONENT = "com.yoloedge.model"
MODEL_DIR_ENV = "YOLO_EDGE_MODEL_DIR"
MODEL_DIR_VALUE = "{kernel:rootPath}/packages/artifacts/" + MODEL_COMPONENT
STREAM_MANAGER_COMPONENT = "aws.greengrass.StreamManager"
STREAM_MANAGER_REQUIREMENT = ">=2.0.0 <3.0.0"
S3_EXTRA = "s3"
MAX_RECIPE_BYTES = 16000
# What goes into the wheel's source tree; everything else (tests, models, build output) stays out.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in", "components")


class BuildError(RuntimeError):
    """A build input is missing or wrong; the message says which and what to do."""


def read_gdk_config(project: Path) -> tuple[str, dict[str, Any]]:
    """The one component of gdk-config.json: (name, its settings)."""
    path = project / "gdk-config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"{path}: not found; run from the project folder or pass --project-dir") from None
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path}: not valid JSON ({exc})") from None
    components = config.get("component") if isinstance(config, dict) else None
    if not isinstance(components, dict) or len(components) != 1:
        raise BuildError(f"{path}: 'component' must hold exactly one component, found {components!r}")
    ((name, settings),) = components.items()
    if not isinstance(settings, dict):
        raise BuildError(f"{path}: component {name!r} must be an object")
    return name, settings


def check_version(version: Any) -> str:
    if not isinstance(version, str) or not (version == NEXT_PATCH or SEMVER.match(version)):
        raise BuildError(f"component version {version!r} is not semver (x.y.z) or {NEXT_PATCH}")
    return version


def read_recipe(project: Path) -> tuple[Path, dict[str, Any]]:
    """The project recipe: exactly one recipe.yaml or recipe.json beside gdk-config.json."""
    found = [project / n for n in ("recipe.yaml", "recipe.yml", "recipe.json") if (project / n).is_file()]
    if len(found) != 1:
        raise BuildError(f"{project}: expected exactly one recipe.yaml or recipe.json, found "
                         f"{[p.name for p in found] or 'none'}")
    path = found[0]
    try:
        text = path.read_text(encoding="utf-8")
        recipe = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise BuildError(f"{path}: cannot parse ({exc})") from None
    if not isinstance(recipe, dict):
        raise BuildError(f"{path}: a recipe must be a mapping")
    if recipe.get("RecipeFormatVersion") != RECIPE_FORMAT_VERSION:
        raise BuildError(f"{path}: RecipeFormatVersion must be the string {RECIPE_FORMAT_VERSION!r} (quote it "
                         f"in YAML, or it parses as a date), found {recipe.get('RecipeFormatVersion')!r}")
    if not isinstance(recipe.get("Manifests"), list) or not recipe["Manifests"]:
        raise BuildError(f"{path}: 'Manifests' must be a non-empty list")
    return path, recipe


def build_wheel(project: Path, work: Path, *, isolation: bool) -> Path:
    """Build the package wheel from a clean copy of the sources (keeps build/ and egg-info out of the tree)."""
    source = work / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
    for name in WHEEL_SOURCES:
        item = project / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=ignore)
        elif item.is_file():
            shutil.copy2(item, source / name)
    if not (source / "pyproject.toml").is_file():
        raise BuildError(f"{project}: pyproject.toml not found; cannot build the wheel")
    dist = work / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--wheel-dir", str(dist), str(source)]
    if not isolation:
        command.insert(4, "--no-build-isolation")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"building the wheel failed ({' '.join(command)}):\n{result.stdout}{result.stderr}")
    wheels = sorted(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one wheel from pip, found {[w.name for w in wheels]}")
    return wheels[0]


def set_wheel_artifact(recipe: dict[str, Any], wheel_name: str) -> int:
    """Point every manifest's wheel artifact at `wheel_name`; returns how many were rewritten."""
    count = 0
    for manifest in recipe["Manifests"]:
        for artifact in manifest.get("Artifacts") or []:
            uri = artifact.get("URI", "")
            if uri.startswith("s3://") and uri.endswith(".whl"):
                artifact["URI"] = URI_PREFIX + wheel_name
                count += 1
    return count


def add_model_dependency(recipe: dict[str, Any], requirement: str) -> None:
    """Depend on the model component and export its artifacts folder as YOLO_EDGE_MODEL_DIR."""
    recipe.setdefault("ComponentDependencies", {})[MODEL_COMPONENT] = {
        "VersionRequirement": requirement, "DependencyType": "HARD"}
    for manifest in recipe["Manifests"]:
        lifecycle = manifest.setdefault("Lifecycle", {})
        # Keys are case-sensitive on nucleus lite: reuse the recipe's own spelling of Setenv.
        key = next((k for k in lifecycle if k.lower() == "setenv"), "Setenv")
        lifecycle.setdefault(key, {})[MODEL_DIR_ENV] = MODEL_DIR_VALUE


def configured_s3_bucket(recipe: dict[str, Any]) -> str:
    """DefaultConfiguration's snapshots.s3_bucket ('' when absent); `snapshots` may be an object or its JSON."""
    defaults = (recipe.get("ComponentConfiguration") or {}).get("DefaultConfiguration") or {}
    snapshots = defaults.get("snapshots") if isinstance(defaults, dict) else None
    if isinstance(snapshots, str) and snapshots.strip():
        try:
            snapshots = json.loads(snapshots)
        except json.JSONDecodeError as exc:
            raise BuildError(f"DefaultConfiguration snapshots: not a JSON object ({exc})") from None
    if not isinstance(snapshots, dict):
        return ""
    return str(snapshots.get("s3_bucket") or "").strip()


def add_stream_manager_dependency(recipe: dict[str, Any]) -> None:
    """Depend on Stream Manager and install the stream-manager SDK (the s3 extra) by default."""
    recipe.setdefault("ComponentDependencies", {})[STREAM_MANAGER_COMPONENT] = {
        "VersionRequirement": STREAM_MANAGER_REQUIREMENT, "DependencyType": "HARD"}
    defaults = recipe.setdefault("ComponentConfiguration", {}).setdefault("DefaultConfiguration", {})
    extras = [e.strip() for e in str(defaults.get("install_extras") or "").split(",") if e.strip()]
    if S3_EXTRA not in extras:
        defaults["install_extras"] = ",".join([*extras, S3_EXTRA])


class _RecipeDumper(yaml.SafeDumper):
    """Plain YAML: no anchors/aliases, multi-line scripts as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RecipeDumper.add_representer(str, _represent_str)


def dump_recipe(recipe: dict[str, Any]) -> str:
    return yaml.dump(recipe, Dumper=_RecipeDumper, sort_keys=False, width=1000, allow_unicode=True)


def build(project: Path, output: Path, *, version: str | None = None, model_requirement: str | None = None,
          wheel: Path | None = None, isolation: bool = True, stream_manager: bool = False) -> dict[str, Any]:
    """Build into `output` (recreated); returns a summary of what was written. `stream_manager` adds the
    Stream Manager dependency even when the recipe's default configuration names no S3 bucket."""
    name, settings = read_gdk_config(project)
    version = check_version(version or settings.get("version"))
    author = settings.get("author")
    recipe_path, recipe = read_recipe(project)
    recipe["ComponentName"] = name
    recipe["ComponentVersion"] = version
    if author:
        recipe["ComponentPublisher"] = author
    if model_requirement:
        add_model_dependency(recipe, model_requirement)
    stream_manager = stream_manager or bool(configured_s3_bucket(recipe))
    if stream_manager:
        add_stream_manager_dependency(recipe)

    with tempfile.TemporaryDirectory(prefix="yolo-edge-build-") as tmp:
        built = Path(wheel) if wheel else build_wheel(project, Path(tmp), isolation=isolation)
        if not built.is_file() or built.suffix != ".whl":
            raise BuildError(f"--wheel {built}: not a wheel file")
        if set_wheel_artifact(recipe, built.name) == 0:
            raise BuildError(f"{recipe_path}: no manifest has an s3://…/<name>.whl artifact to carry the wheel")
        text = dump_recipe(recipe)
        if len(text.encode()) > MAX_RECIPE_BYTES:
            raise BuildError(f"built recipe is {len(text.encode())} bytes; Greengrass/GDK allow {MAX_RECIPE_BYTES}")

        if output.exists():
            shutil.rmtree(output)
        artifacts = output / "artifacts" / name / version
        recipes = output / "recipes"
        artifacts.mkdir(parents=True)
        recipes.mkdir(parents=True)
        target = artifacts / built.name
        shutil.copy2(built, target)
        built_recipe = recipes / ("recipe.json" if recipe_path.suffix == ".json" else "recipe.yaml")
        built_recipe.write_text(json.dumps(recipe, indent=2) if built_recipe.suffix == ".json" else text,
                                encoding="utf-8")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    return {"component": name, "version": version, "wheel": str(target), "sha256": digest,
            "recipe": str(built_recipe), "stream_manager": stream_manager}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the yolo-edge Greengrass component (wheel + recipe) into greengrass-build/.",
        epilog="Runs as gdk-config.json's custom build command; works on its own too.")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR,
                        help="folder with gdk-config.json, recipe.yaml and pyproject.toml (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="build output folder, recreated (default: <project-dir>/greengrass-build)")
    parser.add_argument("--version", default=None,
                        help="component version instead of gdk-config.json's (semver or NEXT_PATCH)")
    parser.add_argument("--model-component", default=os.environ.get("YOLO_EDGE_MODEL_COMPONENT") or None,
                        metavar="REQUIREMENT",
                        help=f"depend on {MODEL_COMPONENT} with this version requirement, e.g. '>=1.0.0'; "
                             f"YOLO_EDGE_MODEL_DIR is then {MODEL_DIR_VALUE} and model_loc "
                             "<model version>/<file> (default: $YOLO_EDGE_MODEL_COMPONENT; none)")
    parser.add_argument("--stream-manager", action="store_true",
                        help=f"depend on {STREAM_MANAGER_COMPONENT} ({STREAM_MANAGER_REQUIREMENT}) and add the "
                             f"'{S3_EXTRA}' extra to install_extras, for snapshots exported to S3 (config key "
                             "snapshots.s3_bucket) set by a deployment; automatic when the recipe's default "
                             "configuration names a bucket")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="use this already built wheel instead of building one")
    parser.add_argument("--no-build-isolation", action="store_true",
                        help="build the wheel with the installed setuptools (offline builds)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    project = args.project_dir.resolve()
    output = (args.output_dir or project / "greengrass-build").resolve()
    try:
        summary = build(project, output, version=args.version, model_requirement=args.model_component,
                        wheel=args.wheel, isolation=not args.no_build_isolation,
                        stream_manager=args.stream_manager)
    except BuildError as exc:
        print(f"build_component: error: {exc}", file=sys.stderr)
        return 1
    print(f"built {summary['component']} {summary['version']}")
    print(f"  wheel:  {summary['wheel']} (sha256 {summary['sha256']})")
    print(f"  recipe: {summary['recipe']}")
    if summary["stream_manager"]:
        print(f"  depends on {STREAM_MANAGER_COMPONENT} {STREAM_MANAGER_REQUIREMENT} (snapshots to S3)")
    if summary["version"] == NEXT_PATCH:
        print("  note: NEXT_PATCH is resolved only by `gdk component publish`; set a semver version in "
              "gdk-config.json (or --version) for local deployments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
