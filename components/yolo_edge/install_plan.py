"""What to pip-install into the component's venv on this device: JetPack-aware, standard library only.

The recipe's install step runs it from the wheel before the venv exists (`PYTHONPATH=<wheel> python3 -s -m
yolo_edge.install_plan --wheel <wheel> ...`), and utils/install_dependencies.sh runs this file directly to
show the same choices while provisioning. It must run on JetPack 5's Python 3.8 with nothing installed:
no third-party imports, no 3.9+ syntax at runtime.

It decides, and prints with the reason:
  * the platform: a Jetson is found by the L4T release file (/etc/nv_tegra_release, or
    $YOLO_EDGE_TEGRA_RELEASE): R34/R35 = JetPack 5, R36 = JetPack 6; R32 (JetPack 4) is refused;
  * the Python: JetPack 5 needs its system 3.8 and JetPack 6 its 3.10 (TensorRT's bindings and NVIDIA's
    torch wheels exist only for those); elsewhere 3.8 to 3.13;
  * numpy: below 1.24 on JetPack 5 (TensorRT 8.x bindings use np.bool), below 2 on JetPack 6;
  * OpenCV: on a Jetson whose system Python imports cv2 (JetPack's GStreamer build), pip's opencv-python
    is left out, and removed from the venv after the install (another package may pull it in);
  * cuda-python: bounded to the device's CUDA major version when the tensorrt extra is asked for;
and writes the pip requirement lines: the wheel's own requirements for the asked extras, markers
evaluated for this interpreter, one line per project with the pins merged in (pip 20's resolver,
JetPack 5's, refuses a project named twice).
"""

from __future__ import annotations

import argparse
import email.parser
import json
import os
import platform
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Tuple, TypeVar

TEGRA_RELEASE_ENV = "YOLO_EDGE_TEGRA_RELEASE"
DEFAULT_TEGRA_RELEASE = "/etc/nv_tegra_release"
PLAIN_LINUX_PYTHONS = ((3, 8), (3, 13))
OPENCV_WHEELS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                 "opencv-contrib-python-headless")
CUDA_PYTHON = "cuda-python"
PROBE_TIMEOUT_S = 120


class PlanError(ValueError):
    """The device, the interpreter or an argument rules the install out; the message says why."""


@dataclass(frozen=True)
class JetPack:
    major: int
    l4t_majors: tuple[int, ...]
    python: tuple[int, int]
    ubuntu: str
    cuda: str
    numpy_below: str
    numpy_reason: str
    cuda_python_below: str


JETPACKS = (
    JetPack(5, (34, 35), (3, 8), "20.04", "11.4", "1.24",
            "TensorRT 8's Python bindings use np.bool, removed in numpy 1.24", "12"),
    JetPack(6, (36,), (3, 10), "22.04", "12", "2",
            "JetPack 6's TensorRT and OpenCV bindings and NVIDIA's torch wheels are built against numpy 1.x", "13"),
)


@dataclass(frozen=True)
class Device:
    """The platform the venv is for: `jetpack` is None off a Jetson."""

    release_file: str
    l4t: str | None = None
    jetpack: JetPack | None = None

    def describe(self) -> str:
        if self.jetpack is None:
            return f"Linux {platform.machine()}, not a Jetson (no {self.release_file})"
        jp = self.jetpack
        return (f"NVIDIA Jetson, L4T R{self.l4t} = JetPack {jp.major} (Ubuntu {jp.ubuntu}, Python "
                f"{jp.python[0]}.{jp.python[1]}, CUDA {jp.cuda})")


# -- platform and interpreter ------------------------------------------------------------------------

_RELEASE_LINE = re.compile(r"^# R(\d+) \(release\), REVISION: (\d+(?:\.\d+)*)")


def tegra_release_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(TEGRA_RELEASE_ENV) or DEFAULT_TEGRA_RELEASE)


def detect_device(release_file: Path) -> Device:
    """Read the L4T release file ("# R35 (release), REVISION: 4.1, ..."); no file = not a Jetson."""
    if not release_file.is_file():
        return Device(str(release_file))
    text = release_file.read_text(encoding="utf-8", errors="replace")
    first_line = text.splitlines()[0] if text else ""
    match = _RELEASE_LINE.match(first_line)
    if not match:
        raise PlanError(f"{release_file}: not an L4T release line (expected '# R35 (release), REVISION: 4.1, "
                        f"...'), found {first_line!r}")
    major = int(match.group(1))
    l4t = f"{major}.{match.group(2)}"
    for jetpack in JETPACKS:
        if major in jetpack.l4t_majors:
            return Device(str(release_file), l4t, jetpack)
    supported = "; ".join(f"JetPack {jp.major} = L4T R{'/R'.join(map(str, jp.l4t_majors))}, Python "
                          f"{jp.python[0]}.{jp.python[1]}" for jp in JETPACKS)
    older = " (JetPack 4, Ubuntu 18.04, Python 3.6)" if major <= 32 else ""
    raise PlanError(f"{release_file}: L4T R{l4t}{older} is not supported; yolo-edge runs on {supported}")


def check_python(device: Device, version: Sequence[int], executable: str) -> str:
    """The interpreter that makes the venv must be the one the platform's native packages are built for."""
    found = ".".join(str(part) for part in version[:3])
    if device.jetpack is not None:
        want = device.jetpack.python
        if tuple(version[:2]) != want:
            raise PlanError(
                f"JetPack {device.jetpack.major} needs its system Python {want[0]}.{want[1]} (TensorRT's Python "
                f"bindings and NVIDIA's torch wheels are built only for it); {executable} is Python {found}. "
                f"Make python3 the system /usr/bin/python{want[0]}.{want[1]}")
        return f"{found} ({executable}): the system Python of JetPack {device.jetpack.major}"
    low, high = PLAIN_LINUX_PYTHONS
    if not low <= tuple(version[:2]) <= high:
        raise PlanError(f"{executable} is Python {found}; yolo-edge supports Python {low[0]}.{low[1]} to "
                        f"{high[0]}.{high[1]}")
    return f"{found} ({executable})"


# -- what the system Python already has ----------------------------------------------------------------

_PROBE = """
import json
out = {}
try:
    from importlib import metadata
    for name in ("numpy", "torch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
except ImportError:
    pass
try:
    import cv2
    line = [x for x in cv2.getBuildInformation().splitlines() if x.strip().startswith("GStreamer:")]
    out["cv2"] = {"version": cv2.__version__, "path": cv2.__file__,
                  "gstreamer": bool(line) and line[0].split(":", 1)[1].strip().startswith("YES")}
except Exception as exc:
    out["cv2_error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def probe_system(python: str) -> dict[str, object]:
    """numpy/torch versions and cv2 as the venv will see them from the system (isolated: no user site,
    no PYTHONPATH); in a child process, since a broken native cv2 can crash its importer."""
    try:
        done = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, check=False, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"cv2_error": f"probe of {python} failed: {exc}"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"cv2_error": f"probe of {python} exited {done.returncode}: {done.stderr.strip()[-300:]}"}
    facts: dict[str, object] = json.loads(lines[-1])  # _PROBE prints one JSON object
    return facts


# -- the wheel's requirements ------------------------------------------------------------------------


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Requirement:
    """One PEP 508 requirement, split just enough to merge specifiers: name[extras]spec; marker."""

    name: str
    extras: list[str] = field(default_factory=list)
    spec: str = ""
    marker: str = ""

    @property
    def key(self) -> str:
        return canonical(self.name)

    def line(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        spec = f" {self.spec}" if self.spec.startswith("@") else self.spec
        return f"{self.name}{extras}{spec}"


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[([^\]]*)\])?\s*(.*?)\s*$")


def parse_requirement(text: str) -> Requirement:
    head, _, marker = text.partition(";")
    match = _REQUIREMENT.match(head)
    if not match:
        raise PlanError(f"cannot read the requirement {text!r}")
    name, extras, spec = match.groups()
    spec = spec.strip()
    if spec.startswith("(") and spec.endswith(")"):
        spec = spec[1:-1].strip()
    if not spec.startswith("@"):
        spec = spec.replace(" ", "")
    return Requirement(name, [e.strip() for e in (extras or "").split(",") if e.strip()], spec, marker.strip())


# -- PEP 508 environment markers: a small evaluator (and/or, parentheses, comparisons) -----------------

_MARKER_TOKEN = re.compile(r"\s*(\(|\)|\"[^\"]*\"|'[^']*'|===|==|!=|<=|>=|~=|<|>|not\s+in\b|in\b|and\b|or\b|"
                           r"[A-Za-z_][A-Za-z0-9_.]*)")
_COMPARISONS = {"===", "==", "!=", "<=", ">=", "~=", "<", ">", "in", "not in"}


def marker_environment(extra: str = "") -> dict[str, str]:
    info = sys.implementation
    impl_version = ".".join(str(part) for part in info.version[:3])
    return {
        "os_name": os.name, "sys_platform": sys.platform, "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(), "platform_system": platform.system(),
        "platform_version": platform.version(), "python_version": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "python_full_version": platform.python_version(), "implementation_name": info.name,
        "implementation_version": impl_version, "extra": extra,
    }


def _version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else None


# A marker's two sides compare as versions (int tuples) or as strings, never one with the other.
_Comparable = TypeVar("_Comparable", str, Tuple[int, ...])


def _ordered(left: _Comparable, op: str, right: _Comparable) -> bool:
    if op in ("==", "==="):
        return left == right
    if op == "!=":
        return left != right
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _compare(left: str, op: str, right: str) -> bool:
    """One marker comparison: as versions when both sides are versions, else as strings (PEP 508)."""
    if op in ("in", "not in"):
        return (left in right) == (op == "in")
    lv, rv = _version_tuple(left), _version_tuple(right)
    if op == "===" or lv is None or rv is None:
        return _ordered(left, "==" if op in ("===", "~=") else op, right)
    width = max(len(lv), len(rv))
    padded_left, padded_right = lv + (0,) * (width - len(lv)), rv + (0,) * (width - len(rv))
    if op == "~=":  # compatible release: >= right, same leading parts but the last
        return padded_left >= padded_right and lv[: len(rv) - 1] == rv[:-1]
    return _ordered(padded_left, op, padded_right)


class _MarkerParser:
    def __init__(self, marker: str, env: dict[str, str]) -> None:
        self.marker, self.env, self.pos = marker, env, 0
        self.tokens: list[str] = []
        rest = marker
        while rest.strip():
            match = _MARKER_TOKEN.match(rest)
            if not match:
                raise PlanError(f"cannot read the environment marker {marker!r} at {rest.strip()!r}")
            self.tokens.append(re.sub(r"\s+", " ", match.group(1)))
            rest = rest[match.end():]

    def evaluate(self) -> bool:
        value = self._or()
        if self.pos != len(self.tokens):
            raise PlanError(f"cannot read the environment marker {self.marker!r}")
        return value

    def _next(self) -> str:
        if self.pos >= len(self.tokens):
            raise PlanError(f"environment marker {self.marker!r} ends too early")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def _peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ""

    def _or(self) -> bool:
        value = self._and()
        while self._peek() == "or":
            self._next()
            value = self._and() or value
        return value

    def _and(self) -> bool:
        value = self._atom()
        while self._peek() == "and":
            self._next()
            value = self._atom() and value
        return value

    def _atom(self) -> bool:
        if self._peek() == "(":
            self._next()
            value = self._or()
            if self._next() != ")":
                raise PlanError(f"unbalanced parentheses in environment marker {self.marker!r}")
            return value
        left_token, op, right_token = self._next(), self._next(), self._next()
        if op not in _COMPARISONS:
            raise PlanError(f"unknown comparison {op!r} in environment marker {self.marker!r}")
        is_extra = "extra" in (left_token, right_token)
        left, right = self._value(left_token, is_extra), self._value(right_token, is_extra)
        return _compare(left, op, right)

    def _value(self, token: str, is_extra: bool) -> str:
        if token[:1] in "\"'":
            value = token[1:-1]
        elif token in self.env:
            value = self.env[token]
        else:
            raise PlanError(f"unknown variable {token!r} in environment marker {self.marker!r}")
        return canonical(value) if is_extra else value


def marker_holds(marker: str, env: dict[str, str]) -> bool:
    return True if not marker else _MarkerParser(marker, env).evaluate()


@dataclass(frozen=True)
class WheelMetadata:
    name: str
    requires: tuple[str, ...]
    extras: tuple[str, ...]


def read_wheel_metadata(wheel: Path) -> WheelMetadata:
    try:
        with zipfile.ZipFile(wheel) as archive:
            found = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(found) != 1:
                raise PlanError(f"{wheel}: expected one *.dist-info/METADATA, found {found or 'none'}")
            text = archive.read(found[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile) as exc:
        raise PlanError(f"--wheel {wheel}: cannot read it as a wheel ({exc})") from None
    message = email.parser.Parser().parsestr(text, headersonly=True)
    return WheelMetadata(message.get("Name", ""), tuple(message.get_all("Requires-Dist") or ()),
                         tuple(canonical(e) for e in message.get_all("Provides-Extra") or ()))


def check_extras(asked: Sequence[str], metadata: WheelMetadata) -> list[str]:
    extras = [canonical(e) for e in asked]
    unknown = [e for e in extras if e not in metadata.extras]
    if unknown:
        raise PlanError(f"install_extras: unknown extra {', '.join(repr(e) for e in unknown)}; "
                        f"{metadata.name} provides: {', '.join(sorted(metadata.extras))}")
    return extras


def active_requirements(metadata: WheelMetadata, extras: Sequence[str],
                        env: dict[str, str] | None = None) -> list[Requirement]:
    """The wheel's requirements for these extras (its own extras, e.g. dev = [onnx, ...], expanded)."""
    base_env = env or marker_environment()
    parsed = [parse_requirement(text) for text in metadata.requires]
    wanted = {canonical(e) for e in extras}
    while True:
        active = [r for r in parsed if any(marker_holds(r.marker, {**base_env, "extra": e})
                                           for e in ["", *sorted(wanted)])]
        own = {canonical(e) for r in active if r.key == canonical(metadata.name) for e in r.extras}
        if own <= wanted:
            return [r for r in active if r.key != canonical(metadata.name)]
        wanted |= own


def _join_specs(*specs: str) -> str:
    parts: list[str] = []
    for spec in specs:
        parts += [part for part in spec.split(",") if part and part not in parts]
    return ",".join(parts)


def merge(requirements: Sequence[Requirement], pins: dict[str, str]) -> list[Requirement]:
    """One requirement per project, in first-seen order: specifiers joined, pins appended."""
    merged: dict[str, Requirement] = {}
    for requirement in requirements:
        current = merged.get(requirement.key)
        if current is None or current.spec.startswith("@") or requirement.spec.startswith("@"):
            merged.setdefault(requirement.key, Requirement(requirement.name, list(requirement.extras),
                                                           requirement.spec))
            continue
        current.extras += [e for e in requirement.extras if e not in current.extras]
        current.spec = _join_specs(current.spec, requirement.spec)
    for key, pin in pins.items():
        current = merged.setdefault(key, Requirement(key))
        if not current.spec.startswith("@"):
            current.spec = _join_specs(current.spec, pin)
    return list(merged.values())


# -- the plan ----------------------------------------------------------------------------------------


@dataclass
class Plan:
    choices: list[tuple[str, str]]
    requirements: list[str]
    remove: list[str]
    warnings: list[str]
    has_wheel: bool

    def report(self) -> str:
        width = max(len(label) for label, _ in self.choices)
        lines = ["install plan:"] + [f"  {label + ':':<{width + 1}} {text}" for label, text in self.choices]
        lines += [f"  warning: {text}" for text in self.warnings]
        if self.has_wheel:
            lines.append("pip requirements:")
            lines += [f"  {line}" for line in self.requirements] or ["  (none)"]
            if self.remove:
                lines.append(f"removed from the venv after the install: {' '.join(self.remove)}")
        return "\n".join(lines)


def _opencv_choice(device: Device, probe: dict[str, object], plan: Plan) -> bool:
    """Records the OpenCV choice; True when the system cv2 is kept (pip's opencv-python left out)."""
    if device.jetpack is None:
        plan.choices.append(("opencv", "opencv-python from PyPI (the wheel's dependency)"))
        return False
    cv2 = probe.get("cv2")
    if not isinstance(cv2, dict):
        plan.choices.append(("opencv", "no system cv2, so opencv-python from PyPI (built without GStreamer)"))
        plan.warnings.append("CSI cameras (csi://) need JetPack's GStreamer-enabled OpenCV: sudo apt-get install "
                             f"nvidia-opencv, then reinstall ({probe.get('cv2_error', 'cv2 not importable')})")
        return False
    gstreamer = "with GStreamer" if cv2.get("gstreamer") else "WITHOUT GStreamer"
    plan.choices.append(("opencv", f"system cv2 {cv2.get('version')} {gstreamer} ({cv2.get('path')}) kept: "
                                   f"pip's {', '.join(OPENCV_WHEELS[:2])} left out of the venv"))
    if not cv2.get("gstreamer"):
        plan.warnings.append("the system cv2 has no GStreamer, so CSI cameras (csi://) will not open; is pip's "
                             "opencv-python installed system-wide over JetPack's? (pip3 uninstall opencv-python)")
    return True


def _numpy_choice(device: Device, probe: dict[str, object], plan: Plan) -> dict[str, str]:
    if device.jetpack is None:
        plan.choices.append(("numpy", "no extra pin (not a Jetson)"))
        return {}
    jp = device.jetpack
    pin = f"<{jp.numpy_below}"
    plan.choices.append(("numpy", f"numpy{pin}: {jp.numpy_reason}"))
    system = probe.get("numpy")
    if isinstance(system, str) and not _compare(system, "<", jp.numpy_below):
        plan.warnings.append(f"the system numpy {system} is not numpy{pin}: the venv gets its own, but "
                             "TensorRT used outside the venv may fail")
    return {"numpy": pin}


def _cuda_choice(device: Device, requested: bool, plan: Plan) -> dict[str, str]:
    if not requested:
        plan.choices.append(("cuda-python", "not needed (no tensorrt extra)"))
        return {}
    if device.jetpack is None:
        plan.choices.append(("cuda-python", "the wheel's bound only (CUDA version unknown off a Jetson)"))
        return {}
    jp = device.jetpack
    bound = f"<{jp.cuda_python_below}"
    plan.choices.append(("cuda-python", f"{CUDA_PYTHON}{bound} (JetPack {jp.major} has CUDA {jp.cuda})"))
    return {CUDA_PYTHON: bound}


def _torch_warning(device: Device, wants_torch: bool, probe: dict[str, object], plan: Plan) -> None:
    if device.jetpack is not None and wants_torch and not probe.get("torch"):
        plan.warnings.append("no system torch: pip will install PyPI's torch, which has no CUDA on a Jetson; "
                             "install NVIDIA's torch wheel for this JetPack system-wide first")


def make_plan(device: Device, extras: Sequence[str], metadata: WheelMetadata | None,
              python_version: Sequence[int], executable: str,
              probe: Callable[[], dict[str, object]]) -> Plan:
    """Every choice for this device; raises PlanError when the install cannot work here."""
    plan = Plan([("platform", device.describe())], [], [], [], metadata is not None)
    plan.choices.append(("python", check_python(device, python_version, executable)))
    extras = check_extras(extras, metadata) if metadata else [canonical(e) for e in extras]
    plan.choices.append(("extras", ", ".join(extras) or "(none)"))
    facts = probe() if device.jetpack is not None else {}
    pins = _numpy_choice(device, facts, plan)
    keep_system_opencv = _opencv_choice(device, facts, plan)
    env = {**marker_environment(), "python_version": ".".join(map(str, python_version[:2])),
           "python_full_version": ".".join(map(str, python_version[:3]))}
    wanted = active_requirements(metadata, extras, env) if metadata else []

    def asks_for(projects: set[str], extra_names: set[str]) -> bool:  # without a wheel: by extra name
        return any(r.key in projects for r in wanted) if metadata else bool(extra_names & set(extras))

    pins.update(_cuda_choice(device, asks_for({CUDA_PYTHON}, {"tensorrt"}), plan))
    _torch_warning(device, asks_for({"torch", "ultralytics"}, {"torch", "export"}), facts, plan)
    if keep_system_opencv:
        wanted = [r for r in wanted if r.key not in OPENCV_WHEELS]
        plan.remove = list(OPENCV_WHEELS)
    if metadata:
        plan.requirements = [r.line() for r in merge(wanted, pins)]
    return plan


# -- command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m yolo_edge.install_plan",
        description="Print what the component's install puts in its venv on this device (JetPack version, "
                    "Python check, numpy pin, system OpenCV kept or not, cuda-python bound) and write the pip "
                    "requirement lines. Standard library only.",
        epilog=f"Environment: {TEGRA_RELEASE_ENV}  the L4T release file that identifies a Jetson (default "
               f"{DEFAULT_TEGRA_RELEASE}; a path that does not exist means 'not a Jetson'). Exit status 2 when "
               "the install cannot work here (unsupported JetPack, wrong Python, unknown extra).")
    parser.add_argument("--extras", default="onnx,greengrass",
                        help="comma-separated extras of the wheel to install (default: %(default)s)")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="the yolo_edge wheel whose requirements to install; without it only the choices "
                             "are printed")
    parser.add_argument("--tegra-release", default=None, metavar="FILE",
                        help=f"L4T release file (default: ${TEGRA_RELEASE_ENV} or {DEFAULT_TEGRA_RELEASE})")
    parser.add_argument("--requirements-out", type=Path, default=None, metavar="FILE",
                        help="write the pip requirement lines here (for `pip install -r`)")
    parser.add_argument("--remove-out", type=Path, default=None, metavar="FILE",
                        help="write the packages to uninstall from the venv after the install here (for `pip "
                             "uninstall -y -r`; empty when none)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    try:
        device = detect_device(tegra_release_path(args.tegra_release))
        metadata = read_wheel_metadata(args.wheel) if args.wheel else None
        plan = make_plan(device, extras, metadata, sys.version_info[:3], sys.executable,
                         lambda: probe_system(sys.executable))
    except PlanError as exc:
        print(f"install_plan: error: {exc}", file=sys.stderr)
        return 2
    print(plan.report(), flush=True)
    if args.requirements_out:
        args.requirements_out.write_text("".join(f"{line}\n" for line in plan.requirements), encoding="utf-8")
    if args.remove_out:
        args.remove_out.write_text("".join(f"{name}\n" for name in plan.remove), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
