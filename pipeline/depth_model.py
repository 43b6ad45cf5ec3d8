"""A depth network file the user supplies, run on backgrounds (composite mode) or on every composite
(per-sample mode).

Formats: TorchScript (torch.jit.save; any extension but .onnx/.pt2), torch.export (.pt2) and ONNX
(.onnx, through the optional onnxruntime). A model file is a program: load only files you trust.
Contract: input (N, 3, S, S) float32 RGB, (pixel / 255 - mean) / std; output (N, 1, H, W) or
(N, H, W) of depth or inverse depth at any resolution, resized to the dataset's size.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import images
from .errors import DepthmaskError
from .quiet import first_sentence, quiet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEVICES = ("auto", "cpu", "cuda")
# A network exported by dm-export-model says so in its metadata (ONNX metadata_props key / TorchScript extra file).
# As a depth teacher it is fed the image as both of its inputs (bg and fg_bg: a scene with no object added), on
# its own input scale (pixel / 255: the normalisation is in its graph), and its "depth" output is used.
EXPORT_METADATA_KEY = "depthmask"
EXPORT_METADATA_FILE = "depthmask.json"


@dataclass(frozen=True)
class DepthModelSpec:
    """Everything that decides a model's depth maps (picklable: per-sample workers load it again)."""

    path: Path
    input_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    output: str = "inverse"  # "depth" or "inverse"
    far: float | None = None  # None: per-map scale (the farthest pixel is 1.0)
    batch_size: int = 16
    device: str = "auto"

    def fmt(self) -> str:
        suffix = self.path.suffix.lower()
        return "onnx" if suffix == ".onnx" else "torch.export" if suffix == ".pt2" else "torchscript"

    def describe(self) -> dict[str, Any]:
        """For the manifest: what the model was and how it was run (not where it lay)."""
        return {"file": self.path.name, "sha256": file_sha256(self.path), "format": self.fmt(),
                "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "output": self.output, "far": self.far}


def file_sha256(path: Path) -> str:
    """Streamed, and remembered while the file is unchanged: a model is described several times."""
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_spec(spec: DepthModelSpec) -> None:
    checks = [
        ("--depth-model", spec.path.is_file(), f"{spec.path} is not a file"),
        ("--depth-model-input-size", isinstance(spec.input_size, int) and 16 <= spec.input_size <= 4096,
         f"expected 16 to 4096 pixels, got {spec.input_size!r}"),
        ("--depth-model-mean", len(spec.mean) == 3, f"expected three numbers R,G,B, got {spec.mean!r}"),
        ("--depth-model-std", len(spec.std) == 3 and all(s > 0 for s in spec.std),
         f"expected three positive numbers R,G,B, got {spec.std!r}"),
        ("--depth-model-output", spec.output in images.DEPTH_KINDS, f"expected depth or inverse, got {spec.output!r}"),
        ("--depth-far", spec.far is None or spec.far > 0, f"expected a positive number, got {spec.far!r}"),
        ("--depth-batch-size", isinstance(spec.batch_size, int) and spec.batch_size >= 1,
         f"expected a whole number >= 1, got {spec.batch_size!r}"),
        ("--depth-device", spec.device in DEVICES, f"expected one of {', '.join(DEVICES)}, got {spec.device!r}"),
    ]
    for option, ok, problem in checks:
        if not ok:
            raise DepthmaskError(f"{option}: {problem}")


class DepthModel:
    """A loaded model: `predict(images)` turns BGR uint8 images into uint16 normalised depth maps."""

    def __init__(self, spec: DepthModelSpec, run: Callable[[np.ndarray], np.ndarray], device: str):
        self.spec = spec
        self.device = device
        self._run = run

    def raw(self, batch_bgr: list[np.ndarray]) -> np.ndarray:
        """The model's output for a batch, checked: (N, H, W) float32, finite."""
        inputs = self.preprocess(batch_bgr)
        try:
            out = self._run(inputs)
        except Exception as exc:  # noqa: BLE001 - any failure inside the user's model is one line
            raise DepthmaskError(f"{self.spec.path}: the model failed on a batch of shape {tuple(inputs.shape)}: "
                                 f"{type(exc).__name__}: {first_sentence(exc)}") from None
        return self._check_output(out, inputs.shape)

    def predict(self, batch_bgr: list[np.ndarray]) -> list[np.ndarray]:
        out = self.raw(batch_bgr)
        maps = []
        for image, values in zip(batch_bgr, out):
            values = images.resize(values, *image.shape[:2])
            try:
                maps.append(images.depth_map_to_uint16(values, self.spec.output, self.spec.far))
            except ValueError as exc:
                raise DepthmaskError(f"{self.spec.path}: model output unusable: {exc}") from None
        return maps

    def preprocess(self, batch_bgr: list[np.ndarray]) -> np.ndarray:
        s = self.spec.input_size
        mean = np.asarray(self.spec.mean, np.float32) * 255.0
        scale = 1.0 / (np.asarray(self.spec.std, np.float32) * 255.0)
        out = np.empty((len(batch_bgr), 3, s, s), np.float32)
        for j, image in enumerate(batch_bgr):
            image = images.resize(image, s, s)
            rgb = image[:, :, ::-1].astype(np.float32)
            out[j] = ((rgb - mean) * scale).transpose(2, 0, 1)
        return out

    def _check_output(self, out: Any, input_shape: tuple[int, ...]) -> np.ndarray:
        values = _to_numpy(out)
        n = input_shape[0]
        expected = f"(N, 1, H, W) or (N, H, W) with N = {n}"
        if values is None:
            raise DepthmaskError(f"{self.spec.path}: the model returned {type(out).__name__}, expected one tensor "
                                 f"{expected}")
        if values.ndim == 4 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 3 or values.shape[0] != n or min(values.shape[1:]) < 1:
            raise DepthmaskError(f"{self.spec.path}: the model returned shape {tuple(values.shape)} for an input of "
                                 f"shape {tuple(input_shape)}; expected {expected}")
        values = values.astype(np.float32, copy=False)
        if not np.isfinite(values).all():
            raise DepthmaskError(f"{self.spec.path}: the model returned NaN or infinite values")
        return values


def _to_numpy(out: Any) -> np.ndarray | None:
    if isinstance(out, (list, tuple)) and len(out) == 1:
        out = out[0]
    if isinstance(out, np.ndarray):
        return out
    if hasattr(out, "detach") and hasattr(out, "cpu"):
        return out.detach().float().cpu().numpy()
    return None


def pick_device(requested: str) -> str:
    if requested != "auto":
        if requested == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise DepthmaskError("--depth-device: cuda was asked for but no CUDA GPU is available")
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_depth_model(spec: DepthModelSpec, *, threads: int | None = None) -> DepthModel:
    """Load and probe the model once (a batch of one grey image), so a file that does not load or
    returns the wrong shape is reported before anything is built."""
    validate_spec(spec)
    device = pick_device(spec.device)
    loader = {"onnx": _load_onnx, "torch.export": _load_torch_export, "torchscript": _load_torchscript}[spec.fmt()]
    run = loader(spec, device, threads)
    model = DepthModel(spec, run, device)
    model.raw([np.full((spec.input_size, spec.input_size, 3), 128, np.uint8)])
    return model


def _load_failure(spec: DepthModelSpec, exc: BaseException) -> DepthmaskError:
    return DepthmaskError(f"{spec.path}: not a loadable {spec.fmt()} model: {type(exc).__name__}: {first_sentence(exc)}")


def _torch_runner(module: Any, device: str, threads: int | None) -> Callable[[np.ndarray], Any]:
    import torch

    def run(batch: np.ndarray) -> Any:
        before = torch.get_num_threads()
        if threads is not None:  # only while the model runs: the caller's process keeps its setting
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return module(torch.from_numpy(batch).to(device))
        finally:
            torch.set_num_threads(before)

    return run


def _load_torchscript(spec: DepthModelSpec, device: str, threads: int | None) -> Callable[[np.ndarray], Any]:
    import torch

    try:
        with quiet():  # torch.jit.load warns that TorchScript is deprecated (users still bring it); a bad file, more
            extra = {EXPORT_METADATA_FILE: ""}
            module = torch.jit.load(str(spec.path), map_location=device, _extra_files=extra)
        module.eval()
    except Exception as exc:  # noqa: BLE001
        raise _load_failure(spec, exc) from None
    if extra[EXPORT_METADATA_FILE]:
        to_unit = _unit_scale(spec)
        return _torch_runner(lambda x: module(to_unit(x), to_unit(x))[0], device, threads)
    return _torch_runner(module, device, threads)


def _unit_scale(spec: DepthModelSpec) -> Callable[[Any], Any]:
    """The teacher's input (pixel / 255 - mean) / std back to pixel / 255, what an exported depthmask network takes."""
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)

    def to_unit(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return x * std + mean
        import torch

        return x * torch.from_numpy(std).to(x.device) + torch.from_numpy(mean).to(x.device)

    return to_unit


def _load_torch_export(spec: DepthModelSpec, device: str, threads: int | None) -> Callable[[np.ndarray], Any]:
    import torch

    try:
        with quiet():  # a damaged file makes torch.export log a whole traceback before raising
            module = torch.export.load(str(spec.path)).module()
        module = module.to(device)
    except Exception as exc:  # noqa: BLE001
        raise _load_failure(spec, exc) from None
    return _torch_runner(module, device, threads)


def onnx_session(path: Path, device: str, threads: int | None, *, missing: str,
                 failure: Callable[[BaseException], DepthmaskError]) -> Any:
    """An ONNX Runtime session (CUDA first when asked for and available; `threads` intra-op threads), for depth
    teachers and dm-predict alike. `missing`: the error when onnxruntime is not installed; `failure` words a file
    it cannot load."""
    try:
        import onnxruntime
    except ImportError:
        raise DepthmaskError(missing) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        with quiet():
            return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in onnxruntime's own ways
        raise failure(exc) from None


def _load_onnx(spec: DepthModelSpec, device: str, threads: int | None) -> Callable[[np.ndarray], Any]:
    session = onnx_session(spec.path, device, threads,
                           missing=f"--depth-model: {spec.path.name} is an ONNX model, which needs onnxruntime: "
                                   "pip install 'depthmask[onnx]'",
                           failure=lambda exc: _load_failure(spec, exc))
    input_name = session.get_inputs()[0].name
    if EXPORT_METADATA_KEY in session.get_modelmeta().custom_metadata_map:
        names, to_unit = [i.name for i in session.get_inputs()], _unit_scale(spec)

        def run_export(batch: np.ndarray) -> Any:
            unit = to_unit(batch)
            return session.run(["depth"], {name: unit for name in names})

        return run_export

    def run(batch: np.ndarray) -> Any:
        return session.run(None, {input_name: batch})

    return run
