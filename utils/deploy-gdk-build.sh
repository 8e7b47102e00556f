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

Environment (required):
  AWS_ACCOUNT_NUM       12-digit AWS account id
  AWS_REGION            region of the component and the devices, e.g. eu-west-1
  DEV_IOT_THING_GROUP   thing group to deploy to (the default target)
  DEV_IOT_THING         core device thing: the target with --thing; the device watched by --wait

Options:
  --thing               deploy to DEV_IOT_THING instead of DEV_IOT_THING_GROUP
  --merge JSON          configuration to merge into com.yoloedge.inference, e.g.
                        '{"model_loc": "yolov8s.onnx", "camera_id": "rtsp://cam/stream"}'
  --component NAME=VER  also deploy this component version (repeatable), e.g. com.yoloedge.model=1.0.2
  --bucket NAME         artifact bucket for `gdk component publish -b` (default: gdk-config's
                        publish.bucket prefix, which GDK turns into <prefix>-<region>-<account>)
  --skip-build          publish what greengrass-build/ holds (no `gdk component build`)
  --deployment-name N   deployment name (default: yolo-edge)
  --wait                poll until DEV_IOT_THING reports the deployment succeeded or failed
  --wait-timeout SECS   give up waiting after SECS (default: 900)
  -h, --help            show this help

Needs gdk (GDK CLI), aws (AWS CLI v2) and python3 on PATH and AWS credentials for the account.
Nothing in the project is edited.
EOF
}

die() { echo "deploy-gdk-build: error: $*" >&2; exit 2; }
note() { echo "deploy-gdk-build: $*" >&2; }

to_thing=0
merge=""
bucket=""
skip_build=0
deployment_name="yolo-edge"
wait_for_it=0
wait_timeout=900
extra_components=()
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
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
    || die "--merge '$merge' is not a JSON object, e.g. '{\"model_loc\": \"yolov8s.onnx\"}'"
fi
for spec in ${extra_components[@]+"${extra_components[@]}"}; do
  [[ "$spec" =~ ^[A-Za-z0-9._-]+=[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--component '$spec' is not NAME=x.y.z"
done

project_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$project_dir"
read -r component config_bucket < <(python3 -c 'import json
c = json.load(open("gdk-config.json"))["component"]
name, = c
print(name, c[name]["publish"]["bucket"])') || die "cannot read the component from $project_dir/gdk-config.json"
if [[ -z "$bucket" && "$config_bucket" == REPLACE* ]]; then
  die "no artifact bucket: pass --bucket NAME or set publish.bucket in gdk-config.json"
fi

if (( skip_build )); then
  note "skipping the build; publishing greengrass-build/"
else
  gdk component build
fi
publish_args=(component publish -r "$AWS_REGION")
if [[ -n "$bucket" ]]; then publish_args+=(-b "$bucket"); fi
gdk "${publish_args[@]}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The version just published: GDK's publish recipe greengrass-build/recipes/<name>-<version>.yaml,
# else the highest version in the cloud.
shopt -s nullglob
published=(greengrass-build/recipes/"$component"-*.yaml greengrass-build/recipes/"$component"-*.json)
shopt -u nullglob
if (( ${#published[@]} == 1 )); then
  version="$(basename "${published[0]}")"
  version="${version#"$component"-}"
  version="${version%.*}"
else
  component_arn="arn:aws:greengrass:$AWS_REGION:$AWS_ACCOUNT_NUM:components:$component"
  aws greengrassv2 list-component-versions --region "$AWS_REGION" --arn "$component_arn" --output json \
    >"$tmp/versions.json"
  version="$(python3 -c 'import json, sys
versions = json.load(open(sys.argv[1])).get("componentVersions", [])
print(versions[0]["componentVersion"] if versions else "")' "$tmp/versions.json")"
fi
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "could not find the published version of $component (got '$version')"
note "published $component $version"

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

python3 - "$tmp/current.json" recipes/deployment-template.json "$tmp/deployment.json" \
  "$target_arn" "$deployment_name" "$component" "$version" "$merge" ${extra_components[@]+"${extra_components[@]}"} <<'PY'
import json
import sys

current_path, template_path, out_path, target, name, component, version, merge, *extra = sys.argv[1:]
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
if merge:
    ours["configurationUpdate"] = {"merge": json.dumps(json.loads(merge))}
deployment.update(targetArn=target, deploymentName=name, components=components)
json.dump(deployment, open(out_path, "w"), indent=2)
carried = sorted(set(components) - {component})
print("deploy-gdk-build: components:", ", ".join(f"{n}={components[n]['componentVersion']}" for n in sorted(components)),
      f"(carried over: {', '.join(carried) or 'none'})", file=sys.stderr)
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
