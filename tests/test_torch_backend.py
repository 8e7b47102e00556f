"""The PyTorch backend: selection by extension, its model facts, outputs equal to the ONNX export's,
clear errors, and the guarantee that the ONNX path never imports torch or Ultralytics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import asset_images

from yolo_edge import processing
from yolo_edge.backends import BackendOptions, ModelLoadError, format_for, load_backend

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

COMPONENTS = Path(__file__).resolve().parents[1] / "components"
SIZE = 320


def first_frame_tensor(size: int = SIZE) -> np.ndarray:
    frame = processing.letterbox(__import__("cv2").imread(str(asset_images()[0])), (size, size))[0]
    return processing.to_tensor(frame)


def checkpoint_beside(exported: Path) -> Path:
    """The .pt the random_model fixture exported `exported` from (same weights)."""
    found = sorted(exported.parent.glob("*.pt"))
    assert found, f"no checkpoint beside {exported}"
    return found[0]


def test_pt_selects_the_torch_backend(random_model):
    path = random_model("detect", SIZE, "pt")
    assert format_for(path) == "pytorch"
    backend = load_backend(path, BackendOptions(device="cpu", input_size=(SIZE, SIZE)))
    assert type(backend).__module__ == "yolo_edge.backends.torch"
    info = backend.info
    assert info.format == "pytorch" and info.task == "detect" and info.device == "cpu"
    assert info.runtime == "torch " + ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert info.input_shape == (SIZE, SIZE) and info.dynamic and info.input_dtype == "float32"
    assert info.num_classes == 80 and info.stride == 32


@pytest.mark.parametrize(("task", "imgsz"), [("detect", SIZE), ("segment", SIZE), ("classify", 224)])
def test_outputs_equal_the_onnx_export(random_model, task, imgsz):
    """Same weights, same input: the torch forward returns what the exported ONNX graph returns."""
    exported = random_model(task, imgsz, "onnx")
    onnx_backend = load_backend(exported, BackendOptions(device="cpu"))
    torch_backend = load_backend(checkpoint_beside(exported), BackendOptions(device="cpu", input_size=(imgsz, imgsz)))
    assert torch_backend.info.task == task and torch_backend.info.names == onnx_backend.info.names
    tensor = first_frame_tensor(imgsz)
    ours, reference = torch_backend.infer(tensor), onnx_backend.infer(tensor)
    assert [o.shape for o in ours] == [r.shape for r in reference]
    assert all(o.dtype == np.float32 for o in ours)
    expected_first = {"detect": (1, 84, 2100), "segment": (1, 116, 2100), "classify": (1, 1000)}[task]
    assert ours[0].shape == expected_first
    if task == "classify":
        np.testing.assert_allclose(ours[0].sum(), 1.0, rtol=1e-5)  # already softmax probabilities
        np.testing.assert_allclose(ours[0], reference[0], atol=1e-6)
    else:  # box coordinates are in input pixels: allow a few thousandths of a pixel
        np.testing.assert_allclose(ours[0][:, :4], reference[0][:, :4], atol=5e-3)
        np.testing.assert_allclose(ours[0][:, 4:], reference[0][:, 4:], rtol=1e-3, atol=1e-4)
    if task == "segment":
        assert ours[1].shape == (1, 32, imgsz // 4, imgsz // 4)
        np.testing.assert_allclose(ours[1], reference[1], rtol=1e-3, atol=1e-4)


def test_the_onnx_path_imports_neither_torch_nor_ultralytics(random_model):
    exported = random_model("detect", SIZE, "onnx")
    script = (
        "import sys, numpy as np\n"
        "from yolo_edge.backends import load_backend, BackendOptions\n"
        f"backend = load_backend({str(exported)!r}, BackendOptions(device='cpu'))\n"
        f"backend.infer(np.zeros((1, 3, {SIZE}, {SIZE}), np.float32))\n"
        "import yolo_edge.predictor, yolo_edge.processing\n"
        "loaded = sorted(m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules)\n"
        "assert not loaded, f'the ONNX path imported {loaded}'\n"
        "print('ok', backend.info.format)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(COMPONENTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok onnx"


def test_loading_a_checkpoint_leaves_omp_num_threads_alone(random_model):
    """Importing Ultralytics sets OMP_NUM_THREADS=1 (for its training loaders); the backend undoes that
    so OpenMP users loaded later in the component keep their threads."""
    checkpoint = random_model("detect", SIZE, "pt")
    script = (
        "import os\n"
        "from yolo_edge.backends import load_backend, BackendOptions\n"
        f"load_backend({str(checkpoint)!r}, BackendOptions(device='cpu', input_size=({SIZE}, {SIZE})))\n"
        "import ultralytics\n"
        "assert 'OMP_NUM_THREADS' not in os.environ, os.environ['OMP_NUM_THREADS']\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join([str(COMPONENTS), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="file not found") as error:
        load_backend(tmp_path / "nothing.pt")
    assert str(tmp_path / "nothing.pt") in str(error.value)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(ModelLoadError, match="not a readable Ultralytics YOLO checkpoint") as error:
        load_backend(path, BackendOptions(device="cpu"))
    assert "broken.pt" in str(error.value)


def test_a_checkpoint_without_a_yolo_model_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelLoadError, match="weights.pt"):
        load_backend(path, BackendOptions(device="cpu"))


def test_unsupported_task_is_a_clear_error(tmp_path):
    from yolo_edge_tools.modelgen import build_model, save_checkpoint

    path = save_checkpoint(build_model("yolov8n-pose.yaml", calibrate=False), tmp_path / "pose.pt")
    with pytest.raises(ModelLoadError, match="task 'pose' is not supported"):
        load_backend(path, BackendOptions(device="cpu"))


def test_configured_task_must_match_the_model(random_model):
    with pytest.raises(ModelLoadError, match="'detect' model but config key 'task' asks for 'segment'"):
        load_backend(random_model("detect", SIZE, "pt"), BackendOptions(device="cpu", task="segment"))


def test_input_size_must_be_a_multiple_of_the_stride(random_model):
    with pytest.raises(ModelLoadError, match="MODEL_HEIGHT/MODEL_WIDTH are 300x320"):
        load_backend(random_model("detect", SIZE, "pt"), BackendOptions(device="cpu", input_size=(300, 320)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(random_model):
    with pytest.raises(ModelLoadError, match="config key 'device' is 'cuda' but torch .* sees no CUDA GPU"):
        load_backend(random_model("detect", SIZE, "pt"), BackendOptions(device="cuda"))


def test_unknown_device_is_a_clear_error(random_model):
    with pytest.raises(ModelLoadError, match="config key 'device' is 'tpu'"):
        load_backend(random_model("detect", SIZE, "pt"), BackendOptions(device="tpu"))


def test_threads_and_half_on_cpu(random_model):
    """threads sets torch's intra-op threads; half is ignored on CPU (FP16 needs CUDA)."""
    before = torch.get_num_threads()
    try:
        backend = load_backend(random_model("detect", SIZE, "pt"),
                               BackendOptions(device="cpu", threads=1, half=True, input_size=(SIZE, SIZE)))
        assert torch.get_num_threads() == 1
        assert backend.info.input_dtype == "float32" and not backend.half
        assert backend.infer(first_frame_tensor())[0].dtype == np.float32
    finally:
        torch.set_num_threads(before)
