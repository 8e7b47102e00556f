#!/usr/bin/env bash
# Deploy the local build output to this Greengrass core device with the Greengrass CLI.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: utils/local_deploy.sh [options]

On the device: deploys greengrass-build/ (from `gdk component build` or utils/build_component.py)
with `greengrass-cli deployment create`. Name and version come from the built recipe; the version
must be semver (not NEXT_PATCH). Local deployments need the aws.greengrass.Cli component.

  --build-dir DIR        build output with recipes/ and artifacts/ (default: greengrass-build)
  --model-dir DIR        also deploy a model component written by
                         `utils/publish_model_component.py --local DIR`
  --update-config JSON   passed to --update-config: '{"<component>": {"MERGE": {...}, "RESET": [...]}}'
                         or a JSON file (see recipes/local-update-config.json)
  --merge JSON           shortcut: configuration to MERGE into the inference component,
                         e.g. '{"model_loc": "/home/ggc_user/yolov8n.onnx"}'
  --status               after creating, print `greengrass-cli deployment status` for it
  -h, --help             show this help

Environment: GREENGRASS_CLI  path of greengrass-cli (default: on PATH, else /greengrass/v2/bin/greengrass-cli)
EOF
}

die() { echo "local_deploy: error: $*" >&2; exit 2; }

build_dir="greengrass-build"
model_dir=""
update_config=""
merge=""
show_status=0
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) need_value "$@"; build_dir="$2"; shift 2 ;;
    --model-dir) need_value "$@"; model_dir="$2"; shift 2 ;;
    --update-config) need_value "$@"; update_config="$2"; shift 2 ;;
    --merge) need_value "$@"; merge="$2"; shift 2 ;;
    --status) show_status=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -z "$update_config" || -z "$merge" ]] || die "use either --update-config or --merge, not both"

cli="${GREENGRASS_CLI:-}"
if [[ -z "$cli" ]]; then
  cli="$(command -v greengrass-cli 2>/dev/null || echo /greengrass/v2/bin/greengrass-cli)"
fi
[[ -x "$cli" ]] || die "greengrass-cli not found at '$cli': deploy aws.greengrass.Cli to this device or set GREENGRASS_CLI"
command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH"

# name=version of the single recipe in DIR/recipes, checked against DIR/artifacts/<name>/<version>/.
component_of() {
  python3 - "$1" <<'PY'
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
recipes = sorted(p for p in (root / "recipes").glob("*") if p.suffix in (".yaml", ".yml", ".json"))
if len(recipes) != 1:
    sys.exit(f"{root}/recipes: expected one recipe, found {[p.name for p in recipes] or 'none'}")
text = recipes[0].read_text()


def top_level(key):  # YAML or JSON, without needing PyYAML on the device
    match = re.search(rf"""^\s{{0,2}}["']?{key}["']?\s*:\s*["']?([^"',\s]+)""", text, re.MULTILINE)
    return match.group(1) if match else None


name, version = top_level("ComponentName"), top_level("ComponentVersion")
if not name:
    sys.exit(f"{recipes[0]}: no ComponentName")
if not re.fullmatch(r"\d+\.\d+\.\d+", version or ""):
    sys.exit(f"{recipes[0]}: ComponentVersion {version!r} is not x.y.z (NEXT_PATCH cannot be deployed locally)")
if not (root / "artifacts" / name / version).is_dir():
    sys.exit(f"{root}/artifacts/{name}/{version}: missing; build first")
print(f"{name}={version}")
PY
}

[[ -d "$build_dir/recipes" ]] || die "$build_dir/recipes not found: run 'gdk component build' or utils/build_component.py first"
main_component="$(component_of "$build_dir")" || die "cannot deploy $build_dir"
main_name="${main_component%%=*}"
merges=("$main_component")
recipe_dir="$build_dir/recipes"
artifact_dir="$build_dir/artifacts"

stage=""
cleanup() { if [[ -n "$stage" ]]; then rm -rf "$stage"; fi; }
trap cleanup EXIT
if [[ -n "$model_dir" ]]; then
  [[ -d "$model_dir/recipes" ]] || die "$model_dir/recipes not found: run utils/publish_model_component.py --local $model_dir first"
  model_component="$(component_of "$model_dir")" || die "cannot deploy $model_dir"
  merges+=("$model_component")
  # greengrass-cli takes one recipe and one artifact folder: stage both builds into one.
  stage="$(mktemp -d)"
  mkdir -p "$stage/recipes" "$stage/artifacts"
  cp "$build_dir"/recipes/* "$model_dir"/recipes/* "$stage/recipes/"
  cp -R "$build_dir"/artifacts/. "$model_dir"/artifacts/. "$stage/artifacts/"
  recipe_dir="$stage/recipes"
  artifact_dir="$stage/artifacts"
fi

if [[ -n "$merge" ]]; then
  update_config="$(python3 -c 'import json, sys
merge = json.loads(sys.argv[2])
if not isinstance(merge, dict):
    raise SystemExit("not an object")
print(json.dumps({sys.argv[1]: {"MERGE": merge}}))' "$main_name" "$merge" 2>/dev/null)" \
    || die "--merge '$merge' is not a JSON object"
elif [[ -n "$update_config" && ! -f "$update_config" ]]; then
  python3 -c 'import json, sys; json.loads(sys.argv[1])' "$update_config" 2>/dev/null \
    || die "--update-config is neither a JSON file nor valid JSON: '$update_config'"
fi

sudo_cmd=()
if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo); fi
args=(deployment create --recipeDir "$(cd "$recipe_dir" && pwd)" --artifactDir "$(cd "$artifact_dir" && pwd)")
for item in "${merges[@]}"; do args+=(--merge "$item"); done
if [[ -n "$update_config" ]]; then args+=(--update-config "$update_config"); fi

output="$("${sudo_cmd[@]}" "$cli" "${args[@]}")"
echo "$output"
deployment_id="$(sed -n 's/.*Deployment Id: *\([0-9a-fA-F-]*\).*/\1/p' <<<"$output" | head -n 1)"
if (( show_status )) && [[ -n "$deployment_id" ]]; then
  "${sudo_cmd[@]}" "$cli" deployment status -i "$deployment_id"
fi
echo "local_deploy: deployed ${merges[*]}; follow it with: sudo tail -f /greengrass/v2/logs/greengrass.log /greengrass/v2/logs/$main_name.log"
