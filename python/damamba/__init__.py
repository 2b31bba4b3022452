"""DAMamba (vision state-space model with Dynamic Adaptive Scan) on CPUs.

numpy in, numpy out, over libdamamba::

    import damamba
    model = damamba.Model()                      # the built-in Fashion-MNIST model
    logits = model.forward(x)                    # x: N x C x H x W
    model.classify(["sneaker.png"], k=3)

The GIL is released during forward passes: threads sharing one Model run in
parallel, each with its own workspace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np

from . import _safetensors
from ._lib import (
    NUM_STAGES,
    ArgumentError,
    DamambaError,
    DeviceError,
    FileError,
    FormatError,
    ModelError,
    OutOfMemoryError,
    UnsupportedError,
    as_float_pointer,
    check,
    lib,
)
from . import _lib

__version__ = "0.2.0"

PathLike = Union[str, "os.PathLike[str]"]

_INTERPOLATIONS = ("bicubic", "bilinear")  # dm_interpolation's order


@dataclass(frozen=True)
class Config:
    """A model's configuration, inferred from its weights (dm_config)."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    mlp_hidden: tuple[int, ...]
    groups: tuple[int, ...]
    dt_rank: tuple[int, ...]
    layer_scale: tuple[bool, ...]
    in_chans: int
    num_classes: int
    num_params: int
    seg_classes: int = 0  # a segmentation head's classes (the package runs the backbone only)
    det_classes: int = 0  # a detector's classes, background excluded


@dataclass(frozen=True)
class PreprocessSettings:
    """How an image becomes a model input (dm_preprocess): torchvision's
    Resize (PIL, 8-bit), CenterCrop, ToTensor, Normalize.

    resize > 0 scales the shorter side to it; otherwise resize_h and
    resize_w > 0 scale to exactly that; crop > 0 takes the center crop x crop.
    Change a field with dataclasses.replace().
    """

    resize: int = 256
    resize_h: int = 0
    resize_w: int = 0
    crop: int = 224
    interpolation: str = "bicubic"
    channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @classmethod
    def _from_c(cls, c: _lib.Preprocess) -> "PreprocessSettings":
        n = c.channels
        return cls(c.resize, c.resize_h, c.resize_w, c.crop, _INTERPOLATIONS[c.interpolation], n,
                   tuple(float(v) for v in c.mean[:n]), tuple(float(v) for v in c.std[:n]))

    def _to_c(self) -> _lib.Preprocess:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        sizes = [_checked_int(name, getattr(self, name)) for name in ("resize", "resize_h", "resize_w", "crop")]
        channels = _checked_int("channels", self.channels)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {self.mean} and {self.std}")
        c = _lib.Preprocess(*sizes, _INTERPOLATIONS.index(self.interpolation), channels)
        c.mean[:channels] = self.mean
        c.std[:channels] = self.std
        return c

    @classmethod
    def imagenet(cls) -> "PreprocessSettings":
        """ImageNet's evaluation transform: resize 256, crop 224, bicubic."""
        c = _lib.Preprocess()
        check(lib.dm_preprocess_default(None, ctypes.byref(c)))
        return cls._from_c(c)


_default_threads = 0
MAX_THREADS = 1024  # the library's DM_MAX_THREADS
_INT_MAX = 2**31 - 1  # what a C int argument holds; ctypes would wrap larger values silently


def _checked_int(name: str, n: Any, low: int = 0, high: int = _INT_MAX) -> int:
    """n as an int, when it is an integer from low to high: a Python or a
    numpy integer (what indexing an integer array gives), not a bool."""
    if isinstance(n, np.integer):
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool) or not low <= n <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {n!r}")
    return n


def _c_string(name: str, value: Any) -> bytes:
    """A path or string as the NUL-terminated bytes a C call takes; one
    with a NUL inside would name something else, so it is refused."""
    data = os.fsencode(value)
    if b"\0" in data:
        raise ValueError(f"{name} contains a NUL character: {value!r}")
    return data


def _checked_count(name: str, n: Any) -> int:
    """n as an int, when it is an integer of at least 1 (as _checked_int takes one)."""
    if isinstance(n, np.integer):
        n = int(n)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be an integer of at least 1, got {n!r}")
    return n


def _checked_threads(n: Any) -> int:
    return _checked_int("threads", n, 0, MAX_THREADS)


def set_threads(n: int) -> None:
    """Threads the forward passes of this module's models use when a call
    names none, at most MAX_THREADS; 0 restores the library's default:
    DAMAMBA_THREADS, OMP_NUM_THREADS, or all usable cores.  The count goes to each
    workspace; nothing outside this module changes."""
    global _default_threads
    _default_threads = _checked_threads(n)


PRECISIONS = ("f32", "bf16", "f16")  # dm_precision's order


def precision_kernel(precision: str) -> str:
    """How this CPU computes products in precision ("f32", "bf16" or "f16"):
    a native kernel's name, "widened" (the same rounded values multiplied in
    float32) or "float32"."""
    return lib.dm_precision_kernel(_precision_code(precision)).decode()


def _precision_code(precision: str) -> int:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS.index(precision)


def isa() -> str:
    """The instruction set the kernels use ("scalar", "sse2", "avx2", "avx512", "neon")."""
    return lib.dm_isa().decode()


_CONVENTIONS = {"pil": 0, "opencv": 1}


def load_image(path: PathLike, channels: int = 3, convention: str = "pil") -> np.ndarray:
    """Decode a PNG, JPEG, WebP, BMP, GIF, TGA or PNM file into an H x W x channels
    uint8 array (channels 1 or 3; alpha dropped, colour to grey as PIL does).

    convention "pil" (the default) decodes as PIL does, for the classifier's
    transform; "opencv" as OpenCV's imread does, as mmsegmentation and
    mmdetection load images: turned by the file's EXIF orientation, CMYK
    JPEGs converted with OpenCV's arithmetic, colour only."""
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be 'pil' or 'opencv', got {convention!r}")
    image = _lib.Image()
    check(lib.dm_image_load_as(_c_string("path", path), _checked_int("channels", channels),
                               _CONVENTIONS[convention], ctypes.byref(image)))
    try:
        shape = (image.height, image.width, image.channels)
        return np.ctypeslib.as_array(image.pixels, shape=shape).copy()
    finally:
        lib.dm_image_free(ctypes.byref(image))


def preprocess(image: PathLike | np.ndarray, settings: PreprocessSettings | None = None) -> np.ndarray:
    """An image (a file, or an H x W [x C] uint8 array) as a C x H x W
    float32 model input; settings default to ImageNet's transform."""
    settings = settings or PreprocessSettings.imagenet()
    if not isinstance(image, np.ndarray):
        image = load_image(image, settings.channels)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.dtype != np.uint8 or image.shape[2] not in (1, 3):
        raise ValueError(f"an image must be an H x W x 1 or 3 uint8 array, got {image.dtype} {image.shape}")
    if max(image.shape[:2]) > _INT_MAX:
        raise ValueError(f"image shape {image.shape} has a size over {_INT_MAX}")
    image = np.ascontiguousarray(image)
    height, width, channels = image.shape
    c_image = _lib.Image(width, height, channels, image.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
    c_settings = settings._to_c()
    out_h, out_w = ctypes.c_int(), ctypes.c_int()
    check(lib.dm_preprocess_output_size(ctypes.byref(c_settings), width, height,
                                        ctypes.byref(out_h), ctypes.byref(out_w)))
    out = np.empty((settings.channels, out_h.value, out_w.value), dtype=np.float32)
    check(lib.dm_image_preprocess(ctypes.byref(c_image), ctypes.byref(c_settings), as_float_pointer(out)))
    return out


def library_version() -> str:
    """The version of the libdamamba this package runs."""
    return lib.dm_version_string().decode()


def softmax(logits: Any) -> np.ndarray:
    """Probabilities (float32) of one image's logits (a vector): the logits
    taken as float32, the exponentials summed and divided in float64."""
    logits = np.asarray(logits)
    if logits.ndim != 1:
        raise ValueError(f"softmax takes one image's logits (a vector), got shape {logits.shape}")
    if logits.size > _INT_MAX:
        raise ValueError(f"softmax takes at most {_INT_MAX} logits, got {logits.size}")
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    probs = np.empty_like(logits)
    check(lib.dm_softmax(as_float_pointer(logits), logits.size, as_float_pointer(probs)))
    return probs


def top_k(logits: Any, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes of one image's logits and their softmax
    probabilities (float32), best first; equal scores in index order."""
    probs = softmax(logits)
    k = _checked_count("k", k)
    if k > probs.size:
        raise ValueError(f"k must be at most the {probs.size} classes, got {k}")
    index = np.empty(k, dtype=np.intc)
    check(lib.dm_top_k(as_float_pointer(probs), probs.size, k,
                       index.ctypes.data_as(ctypes.POINTER(ctypes.c_int))))
    return index, probs[index]


def _refuse_copy(self: Any) -> Any:
    """__reduce__ of what holds a C model: a copy would hold a pointer to
    the same model (freed twice), a pickle one that means nothing in
    another process."""
    raise TypeError("a damamba.Model cannot be pickled or copied: pass the path, or load the model in the worker")


class _ModelHandle:
    """Owns a dm_model.  Models and their workspaces hold it, so the C
    model outlives every workspace made for it."""

    def __init__(self) -> None:
        self.ptr = ctypes.c_void_p()

    __reduce__ = _refuse_copy

    def __del__(self) -> None:
        ptr = getattr(self, "ptr", None)  # None where __init__ never ran
        if ptr:
            lib.dm_model_free(ptr)


class _Workspace:
    """A dm_workspace of one thread, freed with it."""

    def __init__(self, model: _ModelHandle, batch: int, h: int, w: int) -> None:
        self.handle = ctypes.c_void_p()
        self.model = model
        check(lib.dm_workspace_create(model.ptr, batch, h, w, ctypes.byref(self.handle)))
        self.batch, self.h, self.w = batch, h, w

    def fits(self, batch: int, h: int, w: int) -> bool:
        return batch <= self.batch and h <= self.h and w <= self.w

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)  # None where __init__ never ran
        if handle:
            lib.dm_workspace_free(handle)


class Model:
    """A loaded DAMamba model.  Read-only: threads may share one.

    Model(path) loads a safetensors file (the official state-dict names) or a
    PyTorch .pth checkpoint ('model', or 'model_ema' with ema=True); Model()
    loads the built-in one, a small DAMamba trained on Fashion-MNIST (28 x 28
    grey images, 10 classes).  Errors raise DamambaError subclasses with the
    library's message (FileError is also an OSError).

    path is the file the model came from: None for the built-in model and
    for models made in memory; builtin says which.
    """

    def __init__(self, path: PathLike | None = None, ema: bool = False) -> None:
        self.path: str | None = None if path is None else os.fspath(path)
        self.builtin = path is None
        if ema and self.builtin:
            raise ArgumentError("ema=True takes a .pth training checkpoint; the built-in model has no EMA weights",
                                _lib.ERR_ARGUMENT)
        self.ema = bool(ema)
        self._owner = _ModelHandle()
        if self.builtin:
            check(lib.dm_model_load_default(ctypes.byref(self._owner.ptr)))
        else:
            options = _lib.LoadOptions(1 if ema else 0)
            check(lib.dm_model_load(_c_string("path", self.path), ctypes.byref(options),
                                    ctypes.byref(self._owner.ptr)))
        self._init()

    @classmethod
    def from_bytes(cls, data: bytes, ema: bool = False) -> "Model":
        """A model from the bytes of a safetensors file or a .pth checkpoint
        (bytes, or any object with the buffer protocol)."""
        if not isinstance(data, bytes):
            data = memoryview(data).tobytes()
        model = cls.__new__(cls)
        model.path, model.builtin, model.ema, model._owner = None, False, bool(ema), _ModelHandle()
        options = _lib.LoadOptions(1 if ema else 0)
        check(lib.dm_model_load_buffer(data, len(data), ctypes.byref(options), ctypes.byref(model._owner.ptr)))
        model._init()
        return model

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> "Model":
        """A model from a PyTorch state dict as numpy arrays, e.g.
        ``{k: v.numpy() for k, v in torch_model.state_dict().items()}``.

        metadata (string values) is stored as a safetensors file's would be:
        "classes" (a JSON list of names) and "preprocess" are read from it.
        """
        return cls.from_bytes(_safetensors.encode(state_dict, metadata))

    @classmethod
    def synthetic(cls, variant: str = "F", in_chans: int = 3, num_classes: int = 1000, seed: int = 0) -> "Model":
        """An official variant ('F', 'T', 'S' or 'B') with deterministic
        pseudo-random weights, for tests and benchmarks."""
        if not isinstance(variant, str) or len(variant.encode()) != 1:
            raise ValueError(f"variant must be one letter ('F', 'T', 'S' or 'B'), got {variant!r}")
        in_chans = _checked_int("in_chans", in_chans)
        num_classes = _checked_int("num_classes", num_classes)
        seed = _checked_int("seed", seed, 0, 2**64 - 1)
        model = cls.__new__(cls)
        model.path, model.builtin, model.ema, model._owner = None, False, False, _ModelHandle()
        check(lib.dm_model_synthetic(variant.encode(), in_chans, num_classes, seed, ctypes.byref(model._owner.ptr)))
        model._init()
        return model

    def _init(self) -> None:
        self._handle = self._owner.ptr
        c = lib.dm_model_config(self._handle).contents
        self.config = Config(tuple(c.depths), tuple(c.dims), tuple(c.mlp_hidden), tuple(c.groups),
                             tuple(c.dt_rank), tuple(bool(v) for v in c.layer_scale),
                             c.in_chans, c.num_classes, c.num_params, c.seg_classes, c.det_classes)
        self._local = threading.local()
        self._classes: list[str] | None = None
        self._precision = "f32"

    @property
    def precision(self) -> str:
        """The precision of the matrix products: "f32" (the default), "bf16"
        or "f16" (weights and inputs rounded, sums in float32; see the
        README's "Half precision")."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        _precision_code(value)
        self._precision = value

    __reduce__ = _refuse_copy

    def __repr__(self) -> str:
        source = "built-in" if self.builtin else self.path if self.path is not None else "in memory"
        return f"<damamba.Model {source}: dims {self.config.dims}, {self.config.num_classes} classes>"

    # ------------------------------------------------------------ metadata

    def metadata(self, key: str) -> str | None:
        """A metadata string of the model file, or None."""
        value = lib.dm_model_metadata(self._handle, _c_string("key", key))
        return value.decode() if value is not None else None

    @property
    def classes(self) -> list[str]:
        """Class names: the metadata 'classes', ImageNet's for a 1000-class
        model, else "class N" (as the command-line program labels them); a
        segmentation model's or a detector's (COCO's by default) when the
        model has no classification head."""
        if self._classes is None:
            n = self.config.num_classes or self.config.seg_classes or self.config.det_classes
            names = lib.dm_model_class_names(self._handle)
            self._classes = [names[i].decode() if names else f"class {i}" for i in range(n)]
        return list(self._classes)

    @property
    def preprocess_settings(self) -> PreprocessSettings:
        """The model's input transform: its metadata 'preprocess', else ImageNet's."""
        c = _lib.Preprocess()
        check(lib.dm_preprocess_default(self._handle, ctypes.byref(c)))
        return PreprocessSettings._from_c(c)

    def stage_shape(self, stage: int, h: int, w: int) -> tuple[int, int, int]:
        """(channels, height, width) of stage 0..3's output for h x w inputs."""
        c, oh, ow = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        check(lib.dm_stage_shape(self._handle, _checked_int("h", h), _checked_int("w", w),
                                 _checked_int("stage", stage, 0, NUM_STAGES - 1), ctypes.byref(c), ctypes.byref(oh),
                                 ctypes.byref(ow)))
        return c.value, oh.value, ow.value

    # ------------------------------------------------------------- forward

    def _input(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"input must be N x C x H x W (4 dimensions), got shape {x.shape}")
        if x.shape[1] != self.config.in_chans:
            raise ValueError(f"input has {x.shape[1]} channels, the model takes {self.config.in_chans}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"input must be a float array, got dtype {x.dtype}")
        n, _, h, w = x.shape
        if max(n, h, w) > _INT_MAX:
            raise ValueError(f"input shape {x.shape} has a size over {_INT_MAX}")
        if h == 0 or w == 0:  # no stage has a shape for them, so refused in any batch, an empty one too
            raise ArgumentError(f"batch {n} of {h}x{w} images is empty", _lib.ERR_ARGUMENT)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _workspace(self, n: int, h: int, w: int) -> _Workspace:
        """This thread's workspace, grown to fit n x h x w: to fit the
        earlier calls' sizes too where it can, else this call's alone (a
        wide batch, then a tall one, may each fit where both together do not)."""
        ws = getattr(self._local, "workspace", None)
        if ws is not None and ws.fits(n, h, w):
            return ws
        self._local.workspace = None  # the old one is freed first
        if ws is not None:
            union = max(n, ws.batch), max(h, ws.h), max(w, ws.w)
            del ws
            try:
                self._local.workspace = _Workspace(self._owner, *union)
                return self._local.workspace
            except DamambaError:
                pass  # too large (ArgumentError) or out of memory: this call's size alone
        self._local.workspace = _Workspace(self._owner, n, h, w)
        return self._local.workspace

    def _run(self, x: Any, threads: int | None, logits: bool = False, stages: bool = False,
             offsets: tuple[int, int] | None = None) -> dict[str, Any]:
        x = self._input(x)
        n, _, h, w = x.shape
        result: dict[str, Any] = {}
        out = _lib.Outputs()
        if logits:
            result["logits"] = np.empty((n, self.config.num_classes), dtype=np.float32)
            out.logits = as_float_pointer(result["logits"])
        if stages:
            result["stages"] = [np.empty((n, *self.stage_shape(s, h, w)), dtype=np.float32)
                                for s in range(NUM_STAGES)]
            for s, array in enumerate(result["stages"]):
                out.stages[s] = as_float_pointer(array)
        if offsets is not None:
            stage = _checked_int("stage", offsets[0], 0, NUM_STAGES - 1)
            block = _checked_int("block", offsets[1])
            if block >= self.config.depths[stage]:
                raise ValueError(f"no block {block} in stage {stage}: the stages have {self.config.depths} blocks")
            _, sh, sw = self.stage_shape(stage, h, w)
            result["offsets"] = np.empty((n, sh, sw, self.config.groups[stage], 2), dtype=np.float32)
            out.offsets = as_float_pointer(result["offsets"])
            out.offsets_stage, out.offsets_block = stage, block
        if n == 0:
            return result
        if threads is not None:
            threads = _checked_threads(threads)
        ws = self._workspace(n, h, w)
        check(lib.dm_workspace_set_threads(ws.handle, threads or _default_threads or lib.dm_threads()))
        check(lib.dm_workspace_set_precision(ws.handle, _precision_code(self._precision)))
        check(lib.dm_forward(self._handle, ws.handle, as_float_pointer(x), n, h, w, ctypes.byref(out)))
        return result

    def forward(self, x: Any, threads: int | None = None) -> np.ndarray:
        """Logits (N x num_classes, float32) of a batch x: N x C x H x W.

        x may be any float or integer array (converted to contiguous
        float32), a torch CPU tensor included.  threads: for this call, instead
        of set_threads's count (0: the default).
        """
        if self.config.num_classes == 0:
            raise ModelError("the model has no classification head; use features()", _lib.ERR_MODEL)
        return self._run(x, threads, logits=True)["logits"]

    __call__ = forward

    def features(self, x: Any, threads: int | None = None) -> list[np.ndarray]:
        """The four stage outputs (N x C_s x H_s x W_s at strides 4, 8, 16,
        32): what a detection or segmentation neck consumes."""
        return self._run(x, threads, stages=True)["stages"]

    def offsets(self, x: Any, stage: int, block: int, threads: int | None = None) -> np.ndarray:
        """The Dynamic Adaptive Scan's sampling offsets of one block:
        N x H_s x W_s x groups x 2, (dx, dy) in pixels of that stage's grid;
        pixel (y, x) of group g samples at (x + dx, y + dy)."""
        return self._run(x, threads, offsets=(stage, block))["offsets"]

    # ------------------------------------------------------------ images

    def preprocess(self, image: PathLike | np.ndarray) -> np.ndarray:
        """An image file or H x W [x C] uint8 array as this model's input (C x H x W)."""
        return preprocess(image, self.preprocess_settings)

    def classify(self, paths: PathLike | Iterable[PathLike], k: int = 5, batch: int = 32, threads: int | None = None,
                 errors: str = "raise") -> list[dict[str, Any]]:
        """The k most probable classes of each image file, as
        ``damamba classify --json`` prints them: one dict per file,
        ``{"file": path, "top": [{"index": i, "label": name, "prob": p}, ...]}``.

        errors="raise" raises for the first file that cannot be read;
        errors="record" gives ``{"file": path, "error": message}`` for it instead.
        """
        k = _checked_count("k", k)
        if self.config.num_classes == 0:  # before any file is decoded
            raise ModelError("the model has no classification head; use features() or embed()", _lib.ERR_MODEL)
        names = self.classes
        k = min(k, self.config.num_classes)

        def top(inputs: np.ndarray) -> list[dict[str, Any]]:
            tops = [top_k(row, k) for row in self.forward(inputs, threads)]
            return [{"top": [{"index": int(j), "label": names[j], "prob": float(p)} for j, p in zip(index, prob)]}
                    for index, prob in tops]

        return self._over_files(paths, batch, errors, top)

    def embed(self, paths: PathLike | Iterable[PathLike], batch: int = 32, threads: int | None = None,
              errors: str = "raise") -> list[dict[str, Any]]:
        """The features the classification head takes, per image file: the
        last stage's output averaged over its pixels.  One dict per file,
        ``{"file": path, "embedding": float32 array of dims[3]}``; errors
        as for classify()."""
        return self._over_files(paths, batch, errors, lambda inputs: [
            {"embedding": e} for e in self.features(inputs, threads)[3].mean(axis=(2, 3))])

    def _over_files(self, paths: PathLike | Iterable[PathLike], batch: int, errors: str,
                    run: Callable[[np.ndarray], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Preprocess image files batch by batch and add what run(batch) says
        of each image to its {"file": path}; a file that cannot be read
        raises, or (errors="record") gets {"file": path, "error": message}."""
        if errors not in ("raise", "record"):
            raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}")
        batch = _checked_count("batch", batch)
        settings = self.preprocess_settings
        size = _fixed_size(settings)
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        paths = [os.fspath(p) for p in paths]
        results: list[dict[str, Any]] = []
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            inputs = np.zeros((len(chunk), settings.channels, *size), dtype=np.float32)
            failed: dict[int, str] = {}
            for i, path in enumerate(chunk):
                try:
                    inputs[i] = preprocess(path, settings)
                except (DamambaError, ValueError) as e:  # ValueError: a path no file can have (a NUL)
                    if errors == "raise":
                        raise
                    failed[i] = str(e)
            # A failed file's zero input still goes through the pass; its result is dropped.
            for i, (path, result) in enumerate(zip(chunk, run(inputs))):
                results.append({"file": path, "error": failed[i]} if i in failed else {"file": path, **result})
        return results


def _fixed_size(settings: PreprocessSettings) -> tuple[int, int]:
    if settings.crop > 0:
        return settings.crop, settings.crop
    if settings.resize <= 0 and settings.resize_h > 0 and settings.resize_w > 0:
        return settings.resize_h, settings.resize_w
    raise ValueError("classifying needs a fixed input size: set a crop")


def _json_string(text: str) -> str:
    """text as a JSON string, byte for byte as the library writes one:
    UTF-8 as it is; '"', '\\' and control characters escaped; a byte that
    was not UTF-8 (a lone surrogate of os.fsdecode) as \\udcXX."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\udc{code - 0xDC00:02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _text(text: str) -> str:
    """text as the program prints it: control characters as \\xHH."""
    return "".join(f"\\x{ord(ch):02x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text)


def format_result(result: dict[str, Any], as_json: bool = False) -> str:
    """A classify() result as the command-line program prints it, with
    --json (one line) or without."""
    file = result["file"]
    if as_json:
        if "error" in result:
            return f'{{"file": {_json_string(file)}, "error": {_json_string(result["error"])}}}'
        top = ", ".join(f'{{"index": {t["index"]}, "label": {_json_string(t["label"])}, "prob": {t["prob"]:.6g}}}'
                        for t in result["top"])
        return f'{{"file": {_json_string(file)}, "top": [{top}]}}'
    # 100 * prob as the program computes it, in float32.
    return "\n".join([_text(file)] + [
        f'  {np.float32(100) * np.float32(t["prob"]):8.4f}%  {_text(t["label"])} ({t["index"]})' for t in result["top"]])


def classify(paths: PathLike | Iterable[PathLike], k: int = 5, model: Model | PathLike | None = None,
             **options: Any) -> list[dict[str, Any]]:
    """Model.classify with a model given as a Model, a path, or None for the built-in one."""
    if not isinstance(model, Model):
        model = Model(model)
    return model.classify(paths, k, **options)


__all__ = [
    "Model", "Config", "PreprocessSettings", "load_image", "preprocess", "classify", "top_k", "format_result",
    "softmax", "set_threads", "MAX_THREADS", "isa", "library_version", "precision_kernel", "PRECISIONS",
    "DamambaError", "ArgumentError", "FileError", "FormatError", "ModelError", "OutOfMemoryError",
    "UnsupportedError", "DeviceError",
]
