#!/usr/bin/env bash
# Install the AWS IoT Greengrass v2 nucleus on this device with automatic provisioning.
set -euo pipefail

NUCLEUS_URL="https://d2s8p88vqu9w66.cloudfront.net/releases/greengrass-nucleus-latest.zip"
DEFAULT_THING="GreengrassThing"
DEFAULT_GROUP="GreengrassThingGroup"

usage() {
  cat <<'EOF'
Usage: utils/provisioning.sh [options]

Installs Java if needed, creates ggc_user/ggc_group (ggc_user joins the video/render groups for the
GPU and cameras), downloads the Greengrass nucleus installer and runs it with automatic provisioning
(creates the IoT thing, thing group, policy, token exchange role; installs the systemd service and
the Greengrass CLI). Needs root through sudo, and AWS credentials in the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN]) allowed to provision.

  --region REGION        AWS region (default: $AWS_REGION, then $AWS_DEFAULT_REGION; required)
  --thing-name NAME      IoT thing (default: $DEV_IOT_THING, else GreengrassThing)
  --thing-group NAME     IoT thing group (default: $DEV_IOT_THING_GROUP, else GreengrassThingGroup)
  --gg-root DIR          nucleus root folder (default: /greengrass/v2)
  --installer-dir DIR    where the installer is downloaded and unzipped (default: ./GreengrassInstaller)
  --artifact-bucket NAME bucket named in the printed IAM policy (default: a placeholder)
  --force                run the installer even if a nucleus is already installed in --gg-root
  --yes                  non-interactive: take flags/env/defaults, do not prompt or ask to confirm
  -h, --help             show this help

Interactive runs prompt for values not given (defaults in brackets) and ask before installing.
EOF
}

die() { echo "provisioning: error: $*" >&2; exit 2; }
note() { echo "provisioning: $*"; }

region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
thing="${DEV_IOT_THING:-}"
group="${DEV_IOT_THING_GROUP:-}"
gg_root="/greengrass/v2"
installer_dir="$PWD/GreengrassInstaller"
bucket="<your-artifact-bucket>"
force=0
assume_yes=0

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --region) need_value "$@"; region="$2"; shift 2 ;;
    --thing-name) need_value "$@"; thing="$2"; shift 2 ;;
    --thing-group) need_value "$@"; group="$2"; shift 2 ;;
    --gg-root) need_value "$@"; gg_root="$2"; shift 2 ;;
    --installer-dir) need_value "$@"; installer_dir="$2"; shift 2 ;;
    --artifact-bucket) need_value "$@"; bucket="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --yes|-y) assume_yes=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

interactive=0
if (( ! assume_yes )); then
  [[ -t 0 ]] || die "stdin is not a terminal: pass --yes to run non-interactively"
  interactive=1
fi

ask() {  # ask VAR "question" DEFAULT
  local answer
  read -r -p "$2 [${3:-none}]: " answer
  printf -v "$1" '%s' "${answer:-$3}"
}
if (( interactive )); then
  [[ -n "$region" ]] || ask region "AWS region" ""
  [[ -n "$thing" ]] || ask thing "IoT thing name" "$DEFAULT_THING"
  [[ -n "$group" ]] || ask group "IoT thing group" "$DEFAULT_GROUP"
fi
thing="${thing:-$DEFAULT_THING}"
group="${group:-$DEFAULT_GROUP}"
[[ -n "$region" ]] || die "no AWS region: pass --region or set AWS_REGION"
[[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "--region '$region' does not look like an AWS region (e.g. eu-west-1)"
[[ "$thing" =~ ^[A-Za-z0-9:_-]{1,128}$ ]] || die "--thing-name '$thing': use letters, digits, ':', '_' and '-'"
[[ "$group" =~ ^[A-Za-z0-9:_-]{1,128}$ ]] || die "--thing-group '$group': use letters, digits, ':', '_' and '-'"
if [[ -z "${AWS_ACCESS_KEY_ID:-}" || -z "${AWS_SECRET_ACCESS_KEY:-}" ]]; then
  note "warning: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set; the installer needs credentials that can provision (unless an instance role provides them)"
fi

sudo_cmd=()
if [[ "$(id -u)" != "0" ]]; then sudo_cmd=(sudo -E); fi
as_root() { "${sudo_cmd[@]}" "$@"; }

if [[ -e "$gg_root/alts/current" && "$force" == 0 ]]; then
  note "a Greengrass nucleus is already installed in $gg_root; nothing to do (use --force to re-run the installer)"
  exit 0
fi

note "region=$region thing=$thing thing-group=$group root=$gg_root"
if (( interactive )); then
  read -r -p "Install and provision Greengrass with these settings? [y/N] " reply
  [[ "$reply" =~ ^[Yy] ]] || { note "cancelled"; exit 1; }
fi

# Java 11+ (the nucleus runs on Java 8+, 11 recommended).
java_major() {
  local line
  line="$(java -version 2>&1 | head -n 1)" || return 1
  # openjdk version "11.0.22" / "1.8.0_392" / "17" ...
  line="${line#*\"}"; line="${line%%\"*}"
  if [[ "$line" == 1.* ]]; then line="${line#1.}"; fi
  echo "${line%%[.+_-]*}"
}
major="$(java_major 2>/dev/null || true)"
if [[ "$major" =~ ^[0-9]+$ ]] && (( major >= 11 )); then
  note "java $major found"
else
  note "installing Java (default-jre-headless: OpenJDK 11 or newer on Ubuntu 18.04+/Debian 11+)"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends default-jre-headless
fi

# Component user and group; the installer creates them too, but we need them for the video group.
if getent group ggc_group >/dev/null 2>&1; then
  note "group ggc_group exists"
else
  as_root groupadd --system ggc_group
fi
if id ggc_user >/dev/null 2>&1; then
  note "user ggc_user exists"
else
  as_root useradd --system --create-home --gid ggc_group ggc_user
fi
# Cameras (/dev/video*) and the Jetson GPU (/dev/nvhost-*) belong to 'video'; desktop GPUs to 'render'.
for device_group in video render; do
  if getent group "$device_group" >/dev/null 2>&1; then
    if id -nG ggc_user | tr ' ' '\n' | grep -qx "$device_group"; then
      note "ggc_user is already in $device_group"
    else
      as_root usermod -a -G "$device_group" ggc_user
    fi
  fi
done

zip_file="$installer_dir.zip"
if [[ -f "$installer_dir/lib/Greengrass.jar" ]]; then
  note "installer already unpacked in $installer_dir"
else
  curl -fsSL --retry 3 -o "$zip_file" "$NUCLEUS_URL"
  unzip -q -o "$zip_file" -d "$installer_dir"
fi

as_root java -Droot="$gg_root" -Dlog.store=FILE -jar "$installer_dir/lib/Greengrass.jar" \
  --aws-region "$region" \
  --thing-name "$thing" \
  --thing-group-name "$group" \
  --thing-policy-name GreengrassV2IoTThingPolicy \
  --tes-role-name GreengrassV2TokenExchangeRole \
  --tes-role-alias-name GreengrassCoreTokenExchangeRoleAlias \
  --component-default-user ggc_user:ggc_group \
  --provision true \
  --setup-system-service true \
  --deploy-dev-tools true

cat <<EOF

provisioning: done. Greengrass runs as the systemd service 'greengrass' (logs: $gg_root/logs/).
Next, let the device download component artifacts: the token exchange role may read only
CloudWatch Logs and the bucket location. Run this once from a workstation with IAM rights:

  aws iam put-role-policy --role-name GreengrassV2TokenExchangeRole \\
    --policy-name YoloEdgeArtifactAccess \\
    --policy-document '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":"arn:aws:s3:::$bucket/*"}]}'

The Greengrass CLI is deployed only when the thing group is new; if '$group' existed before,
deploy aws.greengrass.Cli to it yourself for utils/local_deploy.sh.
EOF
