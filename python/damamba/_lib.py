"""ctypes declarations of libdamamba (include/damamba.h) and its errors.

The shared library is the one built into this package; DAMAMBA_LIBRARY
names another build of it instead.  ctypes releases the GIL for every
foreign call, so forward passes of several Python threads run in parallel.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char, c_char_p, c_float, c_int, c_int64, c_size_t, c_uint8, c_uint64, c_void_p
from pathlib import Path

NUM_STAGES = 4

# dm_status
OK, ERR_ARGUMENT, ERR_IO, ERR_FORMAT, ERR_MODEL, ERR_NOMEM, ERR_UNSUPPORTED, ERR_DEVICE = range(8)


class DamambaError(Exception):
    """A libdamamba call failed; the message is the library's own.

    ``status`` is the dm_status code.  Subclasses also derive from the
    matching built-in exception, so ``except OSError`` catches a missing file.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ArgumentError(DamambaError, ValueError):
    """A bad argument (size, range, shape)."""


class FileError(DamambaError, OSError):
    """A file could not be opened, read or written."""


class FormatError(DamambaError, ValueError):
    """A file is not a valid safetensors, .pth or image file."""


class ModelError(DamambaError, ValueError):
    """A valid file that is not a DAMamba model the library can run."""


class OutOfMemoryError(DamambaError, MemoryError):
    """An allocation failed or a size would overflow."""


class UnsupportedError(DamambaError, RuntimeError):
    """A valid request that this build or machine cannot do."""


class DeviceError(DamambaError, RuntimeError):
    """The GPU or its runtime failed."""


_ERRORS = {
    ERR_ARGUMENT: ArgumentError,
    ERR_IO: FileError,
    ERR_FORMAT: FormatError,
    ERR_MODEL: ModelError,
    ERR_NOMEM: OutOfMemoryError,
    ERR_UNSUPPORTED: UnsupportedError,
    ERR_DEVICE: DeviceError,
}


class Config(ctypes.Structure):
    _fields_ = [
        ("depths", c_int * NUM_STAGES),
        ("dims", c_int * NUM_STAGES),
        ("mlp_hidden", c_int * NUM_STAGES),
        ("groups", c_int * NUM_STAGES),
        ("dt_rank", c_int * NUM_STAGES),
        ("layer_scale", c_int * NUM_STAGES),
        ("in_chans", c_int),
        ("num_classes", c_int),
        ("num_params", c_int64),
        ("seg_classes", c_int),
        ("seg_channels", c_int),
        ("det_classes", c_int),
    ]


# The structs with a size member are initialised with their size, as the
# header's DM_*_INIT macros do.
class _Sized(ctypes.Structure):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(ctypes.sizeof(self), *args, **kwargs)


class LoadOptions(_Sized):
    _fields_ = [("size", c_size_t), ("use_ema", c_int)]


class Outputs(_Sized):
    _fields_ = [
        ("size", c_size_t),
        ("logits", POINTER(c_float)),
        ("stages", POINTER(c_float) * NUM_STAGES),
        ("offsets", POINTER(c_float)),
        ("offsets_stage", c_int),
        ("offsets_block", c_int),
    ]


class Image(ctypes.Structure):
    _fields_ = [
        ("width", c_int),
        ("height", c_int),
        ("channels", c_int),
        ("pixels", POINTER(c_uint8)),
    ]


class Preprocess(_Sized):
    _fields_ = [
        ("size", c_size_t),
        ("resize", c_int),
        ("resize_h", c_int),
        ("resize_w", c_int),
        ("crop", c_int),
        ("interpolation", c_int),
        ("channels", c_int),
        ("mean", c_float * 3),
        ("std", c_float * 3),
    ]


def _library_path() -> str:
    override = os.environ.get("DAMAMBA_LIBRARY")
    if override:
        return override
    return str(Path(__file__).with_name("libdamamba.so"))


def _declare(lib: ctypes.CDLL) -> None:
    model_p, ws_p = c_void_p, c_void_p
    status = c_int
    signatures = {
        "dm_last_error": (c_char_p, []),
        "dm_model_load": (status, [c_char_p, POINTER(LoadOptions), POINTER(model_p)]),
        "dm_model_load_buffer": (status, [c_void_p, c_size_t, POINTER(LoadOptions), POINTER(model_p)]),
        "dm_model_load_default": (status, [POINTER(model_p)]),
        "dm_model_synthetic": (status, [c_char, c_int, c_int, c_uint64, POINTER(model_p)]),
        "dm_model_free": (None, [model_p]),
        "dm_model_config": (POINTER(Config), [model_p]),
        "dm_model_metadata": (c_char_p, [model_p, c_char_p]),
        "dm_model_class_names": (POINTER(c_char_p), [model_p]),
        "dm_stage_shape": (status, [model_p, c_int, c_int, c_int, POINTER(c_int), POINTER(c_int), POINTER(c_int)]),
        "dm_workspace_create": (status, [model_p, c_int, c_int, c_int, POINTER(ws_p)]),
        "dm_workspace_free": (None, [ws_p]),
        "dm_workspace_set_threads": (status, [ws_p, c_int]),
        "dm_workspace_set_precision": (status, [ws_p, c_int]),
        "dm_precision_kernel": (c_char_p, [c_int]),
        "dm_forward": (status, [model_p, ws_p, POINTER(c_float), c_int, c_int, c_int, POINTER(Outputs)]),
        "dm_softmax": (status, [POINTER(c_float), c_int, POINTER(c_float)]),
        "dm_top_k": (status, [POINTER(c_float), c_int, c_int, POINTER(c_int)]),
        "dm_image_load": (status, [c_char_p, c_int, POINTER(Image)]),
        "dm_image_load_as": (status, [c_char_p, c_int, c_int, POINTER(Image)]),
        "dm_image_free": (None, [POINTER(Image)]),
        "dm_preprocess_default": (status, [model_p, POINTER(Preprocess)]),
        "dm_preprocess_output_size": (status, [POINTER(Preprocess), c_int, c_int, POINTER(c_int), POINTER(c_int)]),
        "dm_image_preprocess": (status, [POINTER(Image), POINTER(Preprocess), POINTER(c_float)]),
        "dm_version_string": (c_char_p, []),
        "dm_isa": (c_char_p, []),
        "dm_threads": (c_int, []),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


lib = ctypes.CDLL(_library_path())
_declare(lib)


def check(status: int) -> None:
    """Raise the exception for a failed call, with dm_last_error()'s text.

    Must run on the thread that made the call: the library keeps the last
    error per thread.
    """
    if status != OK:
        message = lib.dm_last_error().decode("utf-8", "replace")
        raise _ERRORS.get(status, DamambaError)(message, status)


def as_float_pointer(array) -> "ctypes._Pointer[c_float]":
    return array.ctypes.data_as(POINTER(c_float))


__all__ = [
    "DamambaError", "ArgumentError", "FileError", "FormatError", "ModelError",
    "OutOfMemoryError", "UnsupportedError", "DeviceError",
    "Config", "LoadOptions", "Outputs", "Image", "Preprocess", "lib", "check", "as_float_pointer",
]
