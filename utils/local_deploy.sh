#!/usr/bin/env bash
# Deploy the local build output to this Greengrass core device with the Greengrass CLI.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: utils/local_deploy.sh [options]

On the device: deploys greengrass-build/ (from `gdk component build` or utils/build_component.py)
with `greengrass-cli deployment create`, then waits until the nucleus reports the deployment
SUCCEEDED, FAILED or CANCELED. The nucleus reads the recipe and artifact folders only after the
command has returned (it picks queued deployments up every few seconds), so they must stay in place
until then. Name and version come from the built recipe; the version must be x.y.z, not NEXT_PATCH
(build with `python3 utils/build_component.py --version x.y.z`). Local deployments need the
aws.greengrass.Cli component.

  --build-dir DIR        build output with recipes/ and artifacts/ (default: greengrass-build)
  --model-dir DIR        also deploy a model component written by
                         `utils/publish_model_component.py --local DIR`. Both builds are staged in a
                         temporary folder (the CLI takes one recipe and one artifact folder), removed
                         once the deployment has finished. Unless --merge/--update-config sets
                         model_loc, it is merged as <model version>/<first model file>, which needs an
                         inference build with the model dependency (build_component.py --model-component)
  --update-config JSON   passed to --update-config: '{"<component>": {"MERGE": {...}, "RESET": [...]}}'
                         or a JSON file (see recipes/local-update-config.json)
  --merge JSON           shortcut: configuration to MERGE into the inference component,
                         e.g. '{"camera_id": "/home/ggc_user/videos/street.mp4"}'
  --timeout SECS         wait at most SECS for a final state (default: 600). On timeout the script
                         exits 1 and keeps the staged folder, whose path it prints: remove it once
                         `sudo greengrass-cli deployment status -i ID` reports SUCCEEDED, FAILED or CANCELED
  --no-wait              return once the deployment is queued; a staged folder is kept (path printed)
  -h, --help             show this help

Exit status: 0 when the deployment SUCCEEDED (or was queued, with --no-wait); 1 when it FAILED, was
CANCELED or did not finish in time; 2 for bad input.

Environment: GREENGRASS_CLI  path of greengrass-cli (default: on PATH, else /greengrass/v2/bin/greengrass-cli)
             YOLO_EDGE_POLL_S seconds between status checks (default: 5)
EOF
}

die() { echo "local_deploy: error: $*" >&2; exit 2; }
note() { echo "local_deploy: $*"; }

build_dir="greengrass-build"
model_dir=""
update_config=""
merge=""
timeout_s=600
wait_for_it=1
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) need_value "$@"; build_dir="$2"; shift 2 ;;
    --model-dir) need_value "$@"; model_dir="$2"; shift 2 ;;
    --update-config) need_value "$@"; update_config="$2"; shift 2 ;;
    --merge) need_value "$@"; merge="$2"; shift 2 ;;
    --timeout) need_value "$@"; timeout_s="$2"; shift 2 ;;
    --no-wait) wait_for_it=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -z "$update_config" || -z "$merge" ]] || die "use either --update-config or --merge, not both"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout '$timeout_s' is not a number of seconds"
poll_s="${YOLO_EDGE_POLL_S:-5}"
[[ "$poll_s" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "YOLO_EDGE_POLL_S '$poll_s' is not a number of seconds"

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
    sys.exit(f"{recipes[0]}: ComponentVersion {version!r} is not x.y.z (NEXT_PATCH cannot be deployed locally: "
             "build with `python3 utils/build_component.py --version x.y.z`)")
if not (root / "artifacts" / name / version).is_dir():
    sys.exit(f"{root}/artifacts/{name}/{version}: missing; build first")
print(f"{name}={version}")
PY
}

# The --update-config value: --merge or --update-config, plus model_loc when MODEL_LOC is given and
# the user's configuration does not set it (which needs a build with the model dependency, checked in
# RECIPES). Prints nothing when there is nothing to update; passes a file path through unchanged
# when nothing is added to it.
configuration_update() {
  python3 - "$@" <<'PY'
import json
import os
import pathlib
import sys

component, merge, update_config, model_loc, recipes = sys.argv[1:]


def fail(message):
    sys.exit(f"local_deploy: error: {message}")


if merge:
    try:
        value = json.loads(merge)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        fail(f"--merge '{merge}' is not a JSON object")
    update = {component: {"MERGE": value}}
elif update_config:
    try:
        if os.path.isfile(update_config):
            with open(update_config, encoding="utf-8") as handle:
                update = json.load(handle)
        else:
            update = json.loads(update_config)
    except (OSError, ValueError):
        fail(f"--update-config is neither a JSON file nor valid JSON: '{update_config}'")
    if not isinstance(update, dict):
        fail(f"--update-config '{update_config}' is not a JSON object")
else:
    update = {}
if model_loc and "model_loc" not in ((update.get(component) or {}).get("MERGE") or {}):
    if not any("YOLO_EDGE_MODEL_DIR" in p.read_text() for p in pathlib.Path(recipes).glob("*") if p.is_file()):
        fail(f"{recipes} has no dependency on the model component, so model_loc '{model_loc}' would not resolve: "
             "build with `python3 utils/build_component.py --version x.y.z --model-component '>=1.0.0'`, or set "
             "an absolute model_loc with --merge")
    update.setdefault(component, {}).setdefault("MERGE", {})["model_loc"] = model_loc
    print(json.dumps(update))
elif merge:
    print(json.dumps(update))
elif update_config:
    print(update_config)
PY
}

# <model version>/<first artifact file> of the model component in DIR (the recipe lists the files in order).
first_model_file() {
  python3 - "$1" <<'PY'
import pathlib
import re
import sys

text = next(p for p in (pathlib.Path(sys.argv[1]) / "recipes").glob("*") if p.suffix in (".yaml", ".yml", ".json")).read_text()
match = re.search(r"""["']?URI["']?\s*:\s*["']?\S+/([^/"'\s]+?)["']?\s*[,}]?\s*$""", text, re.MULTILINE | re.IGNORECASE)
if not match:
    sys.exit(f"{sys.argv[1]}: the model recipe lists no artifact")
print(match.group(1))
PY
}

[[ -d "$build_dir/recipes" ]] || die "$build_dir/recipes not found: run 'gdk component build' or utils/build_component.py first"
main_component="$(component_of "$build_dir")" || die "cannot deploy $build_dir"
main_name="${main_component%%=*}"
merges=("$main_component")
recipe_dir="$build_dir/recipes"
artifact_dir="$build_dir/artifacts"

stage=""
keep_stage=0
cleanup() {
  if [[ -n "$stage" ]] && (( ! keep_stage )); then rm -rf "$stage"; fi
  if [[ -n "$stage" ]] && (( keep_stage )); then
    echo "local_deploy: kept $stage for the nucleus; remove it once the deployment reports SUCCEEDED, FAILED or CANCELED" >&2
  fi
}
trap cleanup EXIT

model_loc=""
if [[ -n "$model_dir" ]]; then
  [[ -d "$model_dir/recipes" ]] || die "$model_dir/recipes not found: run utils/publish_model_component.py --local $model_dir first"
  model_component="$(component_of "$model_dir")" || die "cannot deploy $model_dir"
  merges+=("$model_component")
  model_file="$(first_model_file "$model_dir")" || die "cannot read the model files of $model_dir"
  model_loc="${model_component#*=}/$model_file"
  # greengrass-cli takes one recipe and one artifact folder: stage both builds into one.
  stage="$(mktemp -d "${TMPDIR:-/tmp}/yolo-edge-local-deploy.XXXXXX")"
  mkdir -p "$stage/recipes" "$stage/artifacts"
  cp "$build_dir"/recipes/* "$model_dir"/recipes/* "$stage/recipes/"
  cp -R "$build_dir"/artifacts/. "$model_dir"/artifacts/. "$stage/artifacts/"
  recipe_dir="$stage/recipes"
  artifact_dir="$stage/artifacts"
fi

update_config="$(configuration_update "$main_name" "$merge" "$update_config" "$model_loc" "$build_dir/recipes")" \
  || exit 2

sudo_cmd=()
if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo); fi
args=(deployment create --recipeDir "$(cd "$recipe_dir" && pwd)" --artifactDir "$(cd "$artifact_dir" && pwd)")
for item in "${merges[@]}"; do args+=(--merge "$item"); done
if [[ -n "$update_config" ]]; then args+=(--update-config "$update_config"); fi

output="$("${sudo_cmd[@]}" "$cli" "${args[@]}")"
# From here the nucleus owns the deployment: the staged files stay until it reports a final state.
keep_stage=1
echo "$output"
deployment_id="$(sed -n 's/.*Deployment Id: *\([0-9a-fA-F-]*\).*/\1/p' <<<"$output" | head -n 1)"
logs="sudo tail -f /greengrass/v2/logs/greengrass.log /greengrass/v2/logs/$main_name.log"
if [[ -z "$deployment_id" ]]; then
  echo "local_deploy: greengrass-cli printed no deployment id; check with: sudo $cli deployment list" >&2
  exit 1
fi
if (( ! wait_for_it )); then
  note "queued ${merges[*]} as deployment $deployment_id; follow it with: sudo $cli deployment status -i $deployment_id"
  exit 0
fi

# `deployment status -i ID` prints "<id>: <STATUS>" (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED).
deadline=$(( SECONDS + timeout_s ))
last=""
while :; do
  status=""
  if reply="$("${sudo_cmd[@]}" "$cli" deployment status -i "$deployment_id" 2>&1)"; then
    status="$(grep -oE '\b(QUEUED|IN_PROGRESS|SUCCEEDED|FAILED|CANCELED)\b' <<<"$reply" | head -n 1 || true)"
  fi
  if [[ -z "$status" ]]; then status="UNKNOWN"; fi
  if [[ "$status" != "$last" ]]; then
    if [[ "$status" == UNKNOWN ]]; then
      note "deployment $deployment_id: no status yet (${reply//$'\n'/ })"
    else
      note "deployment $deployment_id: $status"
    fi
    last="$status"
  fi
  case "$status" in
    SUCCEEDED)
      keep_stage=0
      note "deployed ${merges[*]}; follow the component with: $logs"
      exit 0 ;;
    FAILED|CANCELED)
      keep_stage=0
      echo "local_deploy: deployment $deployment_id $status; see: $logs" >&2
      exit 1 ;;
  esac
  if (( SECONDS >= deadline )); then
    echo "local_deploy: deployment $deployment_id still ${status:-UNKNOWN} after ${timeout_s}s; it may still finish:" \
      "sudo $cli deployment status -i $deployment_id" >&2
    exit 1
  fi
  sleep "$poll_s"
done
