#!/usr/bin/env bash
# Build and publish the component with GDK, then deploy the new version to a thing group or thing.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: utils/deploy-gdk-build.sh [options]

Runs `gdk component build` and `gdk component publish`, finds the published version and creates a
Greengrass deployment with it. A deployment replaces the target's previous one (components left out
are removed), so the components of the target's current deployment are carried over at their
versions; their configuration on the devices is kept.

Versions: gdk-config.json's "version" is NEXT_PATCH (publish creates the highest cloud version + 1,
1.0.0 first) or a fixed x.y.z. A fixed version that is already published is refused before
anything is built or uploaded: GDK uploads the artifacts before CreateComponentVersion, so
re-publishing would overwrite the wheel under the live version and break every later install of it.

Environment (required):
  AWS_ACCOUNT_NUM       12-digit AWS account id
  AWS_REGION            region of the component and the devices, e.g. eu-west-1
  DEV_IOT_THING_GROUP   thing group to deploy to (the default target)
  DEV_IOT_THING         core device thing: the target with --thing; the device watched by --wait

Options:
  --model FILE          publish FILE (.onnx, .pt, .engine, .trt; repeat for more files) as the model
                        component com.yoloedge.model, build the inference component with a dependency
                        on it and deploy both, with model_loc set to <model version>/<first FILE's name>.
                        An unchanged model reuses its published version. Without --model, model_loc
                        must name a file the device already has (an absolute path).
  --thing               deploy to DEV_IOT_THING instead of DEV_IOT_THING_GROUP
  --merge JSON          configuration to merge into com.yoloedge.inference, e.g.
                        '{"camera_id": "rtsp://cam/stream", "conf_threshold": "0.4"}'
  --component NAME=VER  also deploy this component version (repeatable), e.g. aws.greengrass.Cli=2.12.0
  --bucket NAME         artifact bucket for `gdk component publish -b` and the model files (default:
                        gdk-config's publish.bucket prefix, which GDK turns into <prefix>-<region>-<account>)
  --skip-build          do not run `gdk component build`: publish greengrass-build/ as it is. GDK still
                        builds when greengrass-build/artifacts/<name>/<gdk-config version>/ is missing,
                        and a fixed version must still be new (see Versions)
  --deployment-name N   deployment name (default: yolo-edge)
  --wait                poll until DEV_IOT_THING reports the deployment succeeded or failed
  --wait-timeout SECS   give up waiting after SECS (default: 900)
  -h, --help            show this help

Needs gdk (GDK CLI), aws (AWS CLI v2) and python3 (with PyYAML) on PATH and AWS credentials for the
account. Nothing in the project is edited.
EOF
}

die() { echo "deploy-gdk-build: error: $*" >&2; exit 2; }
note() { echo "deploy-gdk-build: $*" >&2; }

MODEL_COMPONENT="com.yoloedge.model"
to_thing=0
merge=""
bucket=""
skip_build=0
deployment_name="yolo-edge"
wait_for_it=0
wait_timeout=900
extra_components=()
models=()
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) need_value "$@"; models+=("$2"); shift 2 ;;
    --thing) to_thing=1; shift ;;
    --merge) need_value "$@"; merge="$2"; shift 2 ;;
    --component) need_value "$@"; extra_components+=("$2"); shift 2 ;;
    --bucket) need_value "$@"; bucket="$2"; shift 2 ;;
    --skip-build) skip_build=1; shift ;;
    --deployment-name) need_value "$@"; deployment_name="$2"; shift 2 ;;
    --wait) wait_for_it=1; shift ;;
    --wait-timeout) need_value "$@"; wait_timeout="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

missing=()
for var in AWS_ACCOUNT_NUM AWS_REGION; do
  [[ -n "${!var:-}" ]] || missing+=("$var")
done
if (( to_thing || wait_for_it )); then
  [[ -n "${DEV_IOT_THING:-}" ]] || missing+=("DEV_IOT_THING")
fi
if (( ! to_thing )); then
  [[ -n "${DEV_IOT_THING_GROUP:-}" ]] || missing+=("DEV_IOT_THING_GROUP")
fi
(( ${#missing[@]} == 0 )) || die "set ${missing[*]} (see --help)"
[[ "$AWS_ACCOUNT_NUM" =~ ^[0-9]{12}$ ]] || die "AWS_ACCOUNT_NUM '$AWS_ACCOUNT_NUM' is not a 12-digit account id"
[[ "$wait_timeout" =~ ^[0-9]+$ ]] || die "--wait-timeout '$wait_timeout' is not a number of seconds"
for tool in gdk aws python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH"
done
if [[ -n "$merge" ]]; then
  python3 -c 'import json, sys
value = json.loads(sys.argv[1])
if not isinstance(value, dict):
    raise SystemExit("not a JSON object")' "$merge" 2>/dev/null \
    || die "--merge '$merge' is not a JSON object, e.g. '{\"camera_id\": \"0\"}'"
fi
for spec in ${extra_components[@]+"${extra_components[@]}"}; do
  [[ "$spec" =~ ^[A-Za-z0-9._-]+=[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--component '$spec' is not NAME=x.y.z"
  if (( ${#models[@]} )) && [[ "${spec%%=*}" == "$MODEL_COMPONENT" ]]; then
    die "--component $spec and --model both set $MODEL_COMPONENT: use one of them"
  fi
done
for model in ${models[@]+"${models[@]}"}; do
  [[ -f "$model" ]] || die "--model '$model': no such file"
  [[ "$model" =~ \.(onnx|pt|engine|trt)$ ]] || die "--model '$model': not a .onnx, .pt, .engine or .trt file"
done
if (( ${#models[@]} )) && [[ -n "$merge" ]] && python3 -c 'import json, sys
sys.exit(0 if "model_loc" in json.loads(sys.argv[1]) else 1)' "$merge"; then
  die "--merge sets model_loc and --model sets it too (to <model version>/<first --model file>): drop one"
fi
# Absolute paths: the script changes to the project folder below.
resolved=()
for model in ${models[@]+"${models[@]}"}; do resolved+=("$(cd "$(dirname "$model")" && pwd)/$(basename "$model")"); done
models=(${resolved[@]+"${resolved[@]}"})

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$project_dir"
read -r component config_bucket config_version < <(python3 -c 'import json
c = json.load(open("gdk-config.json"))["component"]
name, = c
print(name, c[name]["publish"]["bucket"], c[name]["version"])') \
  || die "cannot read the component from $project_dir/gdk-config.json"
if [[ -z "$bucket" && "$config_bucket" == REPLACE* ]]; then
  die "no artifact bucket: pass --bucket NAME or set publish.bucket in gdk-config.json"
fi
[[ "$config_version" == NEXT_PATCH || "$config_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] \
  || die "gdk-config.json version '$config_version' is neither NEXT_PATCH nor x.y.z"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The versions of COMPONENT in the cloud, one a line (none when the component does not exist yet).
cloud_versions() {
  local arn="arn:aws:greengrass:$AWS_REGION:$AWS_ACCOUNT_NUM:components:$1"
  if ! aws greengrassv2 list-component-versions --region "$AWS_REGION" --arn "$arn" --output json \
      >"$tmp/versions.json" 2>"$tmp/versions.err"; then
    grep -q ResourceNotFoundException "$tmp/versions.err" && return 0
    die "listing the versions of $1 failed: $(cat "$tmp/versions.err")"
  fi
  python3 -c 'import json, sys
for v in json.load(open(sys.argv[1])).get("componentVersions", []):
    print(v["componentVersion"])' "$tmp/versions.json"
}

before="$(cloud_versions "$component")"
if [[ "$config_version" != NEXT_PATCH ]] && grep -qx "$config_version" <<<"$before"; then
  die "$component $config_version is already published in $AWS_REGION; publishing it again would overwrite its artifacts. Set \"version\" in gdk-config.json to a new x.y.z or to NEXT_PATCH"
fi

if (( skip_build )); then
  note "skipping the build; publishing greengrass-build/ (GDK builds if greengrass-build/artifacts/$component/$config_version/ is missing)"
elif (( ${#models[@]} )); then
  YOLO_EDGE_MODEL_COMPONENT="${YOLO_EDGE_MODEL_COMPONENT:->=1.0.0}" gdk component build
else
  gdk component build
fi
if (( ${#models[@]} )); then
  python3 - "$MODEL_COMPONENT" <<'PY' || die "greengrass-build/ was built without the $MODEL_COMPONENT dependency: run without --skip-build"
import json
import pathlib
import sys

import yaml

recipes = [p for p in pathlib.Path("greengrass-build/recipes").glob("recipe.*") if p.suffix in (".yaml", ".yml", ".json")]
recipe = (json.loads if recipes and recipes[0].suffix == ".json" else yaml.safe_load)(recipes[0].read_text()) if recipes else {}
sys.exit(0 if sys.argv[1] in (recipe.get("ComponentDependencies") or {}) else 1)
PY
fi

publish_recipes() {
  local f
  for f in greengrass-build/recipes/"$component"-*.yaml greengrass-build/recipes/"$component"-*.json; do
    if [[ -e "$f" ]]; then basename "$f"; fi
  done
}
recipes_before="$(publish_recipes)"
publish_args=(component publish -r "$AWS_REGION")
if [[ -n "$bucket" ]]; then publish_args+=(-b "$bucket"); fi
gdk "${publish_args[@]}"

# The version just published: the fixed version, else the publish recipe GDK just wrote
# (greengrass-build/recipes/<name>-<version>.yaml), else the version that is new in the cloud.
if [[ "$config_version" != NEXT_PATCH ]]; then
  version="$config_version"
else
  version="$(comm -13 <(sort <<<"$recipes_before") <(publish_recipes | sort) | sed -n 's/^.*-\([0-9][0-9.]*\)\.[a-z]*$/\1/p')"
  if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    version="$(comm -13 <(sort <<<"$before") <(cloud_versions "$component" | sort))"
  fi
fi
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "could not find the version of $component just published (got '$version')"
note "published $component $version"

model_loc=""
if (( ${#models[@]} )); then
  model_bucket="${bucket:-$config_bucket-$AWS_REGION-$AWS_ACCOUNT_NUM}"
  python3 utils/publish_model_component.py "${models[@]}" --bucket "$model_bucket" --region "$AWS_REGION" \
    --reuse-existing --json >"$tmp/model.out" || die "publishing the model component failed (see above)"
  model_version="$(python3 -c 'import json, sys
print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["version"])' "$tmp/model.out")" \
    || die "utils/publish_model_component.py did not report the model version: $(cat "$tmp/model.out")"
  extra_components+=("$MODEL_COMPONENT=$model_version")
  model_loc="$model_version/$(basename "${models[0]}")"
  note "model component $MODEL_COMPONENT $model_version; model_loc $model_loc"
fi

if (( to_thing )); then
  target_arn="arn:aws:iot:$AWS_REGION:$AWS_ACCOUNT_NUM:thing/$DEV_IOT_THING"
else
  target_arn="arn:aws:iot:$AWS_REGION:$AWS_ACCOUNT_NUM:thinggroup/$DEV_IOT_THING_GROUP"
fi

# Carry over the target's current deployment so this one does not remove its other components.
aws greengrassv2 list-deployments --region "$AWS_REGION" --target-arn "$target_arn" \
  --history-filter LATEST_ONLY --output json >"$tmp/deployments.json"
current_id="$(python3 -c 'import json, sys
deployments = json.load(open(sys.argv[1])).get("deployments", [])
print(deployments[0]["deploymentId"] if deployments else "")' "$tmp/deployments.json")"
echo '{}' >"$tmp/current.json"
if [[ -n "$current_id" ]]; then
  aws greengrassv2 get-deployment --region "$AWS_REGION" --deployment-id "$current_id" --output json \
    >"$tmp/current.json"
fi

python3 - "$tmp/current.json" recipes/deployment-template.json "$tmp/deployment.json" "$target_arn" \
  "$deployment_name" "$component" "$version" "$merge" "$model_loc" ${extra_components[@]+"${extra_components[@]}"} <<'PY'
import json
import sys

current_path, template_path, out_path, target, name, component, version, merge, model_loc, *extra = sys.argv[1:]
current = json.load(open(current_path))
deployment = json.load(open(template_path))
components = {}
for other, spec in (current.get("components") or {}).items():
    kept = {"componentVersion": spec["componentVersion"]}
    if spec.get("runWith"):
        kept["runWith"] = spec["runWith"]
    components[other] = kept  # no configurationUpdate: devices keep the configuration they have
for item in extra:
    other, other_version = item.split("=", 1)
    components.setdefault(other, {})["componentVersion"] = other_version
ours = components.setdefault(component, {})
ours["componentVersion"] = version
configuration = json.loads(merge) if merge else {}
if model_loc:
    configuration["model_loc"] = model_loc
if configuration:
    ours["configurationUpdate"] = {"merge": json.dumps(configuration)}
deployment.update(targetArn=target, deploymentName=name, components=components)
json.dump(deployment, open(out_path, "w"), indent=2)
carried = sorted(set(components) - {component} - {item.split("=", 1)[0] for item in extra})
print("deploy-gdk-build: components:", ", ".join(f"{n}={components[n]['componentVersion']}" for n in sorted(components)),
      f"(carried over: {', '.join(carried) or 'none'})", file=sys.stderr)
if "com.yoloedge.model" in carried:
    print("deploy-gdk-build: note: com.yoloedge.model is carried over from the current deployment; a model_loc "
          "'<model version>/<file>' resolves only in a build with the model dependency (--model)", file=sys.stderr)
PY

aws greengrassv2 create-deployment --region "$AWS_REGION" --cli-input-json "file://$tmp/deployment.json" \
  --output json >"$tmp/created.json"
deployment_id="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["deploymentId"])' "$tmp/created.json")"
echo "deployment $deployment_id: $component $version -> $target_arn"

if (( ! wait_for_it )); then
  exit 0
fi
poll_s="${YOLO_EDGE_POLL_S:-10}"
deadline=$(( SECONDS + wait_timeout ))
while :; do
  aws greengrassv2 list-effective-deployments --region "$AWS_REGION" \
    --core-device-thing-name "$DEV_IOT_THING" --output json >"$tmp/effective.json"
  read -r status reason < <(python3 -c 'import json, sys
for d in json.load(open(sys.argv[1])).get("effectiveDeployments", []):
    if d.get("deploymentId") == sys.argv[2]:
        print(d.get("coreDeviceExecutionStatus", "UNKNOWN"), d.get("reason") or "")
        break
else:
    print("PENDING")' "$tmp/effective.json" "$deployment_id")
  note "$DEV_IOT_THING: $status${reason:+ ($reason)}"
  case "$status" in
    SUCCEEDED|COMPLETED) echo "deployment $deployment_id succeeded on $DEV_IOT_THING"; exit 0 ;;
    FAILED|TIMED_OUT|CANCELED|REJECTED)
      echo "deployment $deployment_id $status on $DEV_IOT_THING${reason:+: $reason}" >&2
      echo "see /greengrass/v2/logs/greengrass.log and /greengrass/v2/logs/$component.log on the device" >&2
      exit 1 ;;
  esac
  if (( SECONDS >= deadline )); then
    echo "deployment $deployment_id still $status on $DEV_IOT_THING after ${wait_timeout}s" >&2
    exit 1
  fi
  sleep "$poll_s"
done
