"""The package against the golden vectors, numpy edge cases, threads,
state dicts and the library's errors."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

import damamba
from conftest import GOLDEN, read_safetensors, sample_paths


def max_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference relative to the largest expected magnitude
    (the golden suite's measure)."""
    return float(np.max(np.abs(got.astype(np.float64) - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def micro() -> damamba.Model:
    return damamba.Model(GOLDEN / "micro.safetensors")


@pytest.fixture(scope="module")
def micro_io() -> dict[str, np.ndarray]:
    return read_safetensors(GOLDEN / "micro.io.safetensors")[0]


@pytest.mark.parametrize("name", ["micro", "damamba_f"])
def test_golden_logits_and_stages(name: str) -> None:
    model = damamba.Model(GOLDEN / f"{name}.safetensors")
    io = read_safetensors(GOLDEN / f"{name}.io.safetensors")[0]
    logits = model.forward(io["input"])
    assert logits.dtype == np.float32 and logits.shape == io["logits.expected"].shape
    error = max_error(logits, io["logits.expected"])
    print(f"{name}: logits max error {error:.2e} of the largest magnitude")
    assert error <= 1e-4
    for s, stage in enumerate(model.features(io["input"])):
        assert max_error(stage, io[f"stage{s}.expected"]) <= 1e-4


# The kernels that may run each precision: a native one, or float32
# products of the rounded values ("widened").
HALF_KERNELS = {"bf16": ("widened", "avx512-amx-bf16", "avx512-bf16", "neon-bf16"), "f16": ("widened", "neon-fp16")}


@pytest.mark.parametrize("precision, bound", [("bf16", 5e-2), ("f16", 6e-3)])
def test_half_precision(precision: str, bound: float) -> None:
    model = damamba.Model(GOLDEN / "damamba_f.safetensors")
    io = read_safetensors(GOLDEN / "damamba_f.io.safetensors")[0]
    model.precision = precision
    assert damamba.precision_kernel(precision) in HALF_KERNELS[precision]
    error = max_error(model.forward(io["input"]), io["logits.expected"])
    print(f"{precision}: logits max error {error:.2e} of the largest magnitude")
    assert 0 < error <= bound
    with pytest.raises(ValueError, match="precision must be one of f32, bf16, f16"):
        model.precision = "f8"


def test_config(micro: damamba.Model) -> None:
    config = micro.config
    assert config.depths == (1, 1, 2, 1) and config.dims == (32, 64, 96, 128)
    assert config.layer_scale == (False, True, False, True)
    assert config.in_chans == 3 and config.num_classes == 10
    assert micro.classes == [f"class {i}" for i in range(10)]
    assert config.seg_classes == config.det_classes == 0
    # the heads' classes, which the package does not run, are named too
    segmenter = damamba.Model(GOLDEN / "upernet_micro.pth")
    assert segmenter.config.seg_classes == 11 and segmenter.classes[:2] == ["wall", "building"]
    detector = damamba.Model(GOLDEN / "maskrcnn_micro.pth")
    assert detector.config.det_classes == len(detector.classes) and detector.classes[0] == "person"


def test_synthetic_variants_have_the_papers_sizes() -> None:
    for variant, params in [("F", 5_518_644), ("T", 25_439_870)]:
        config = damamba.Model.synthetic(variant).config
        assert config.num_params == params and config.num_classes == 1000
    with pytest.raises(damamba.ArgumentError, match="X"):
        damamba.Model.synthetic("X")


def test_float64_and_integer_inputs_are_converted(micro: damamba.Model, micro_io: dict) -> None:
    x = micro_io["input"]
    expected = micro.forward(x)
    np.testing.assert_array_equal(micro.forward(x.astype(np.float64)), expected)
    rounded = np.round(x * 4)
    np.testing.assert_array_equal(micro.forward(rounded.astype(np.int32)), micro.forward(rounded.astype(np.float32)))


def test_non_contiguous_inputs(micro: damamba.Model, micro_io: dict) -> None:
    x = micro_io["input"]
    flipped = x[:, :, :, ::-1]
    assert not flipped.flags.c_contiguous
    np.testing.assert_array_equal(micro.forward(flipped), micro.forward(flipped.copy()))
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(micro.forward(nhwc.transpose(0, 3, 1, 2)), micro.forward(x))


def test_wrong_inputs_are_refused(micro: damamba.Model, micro_io: dict) -> None:
    x = micro_io["input"]
    with pytest.raises(ValueError, match=r"N x C x H x W \(4 dimensions\), got shape \(3, 64, 96\)"):
        micro.forward(x[0])
    with pytest.raises(ValueError, match="has 1 channels, the model takes 3"):
        micro.forward(x[:, :1])
    with pytest.raises(TypeError, match="complex"):
        micro.forward(x.astype(np.complex64))
    with pytest.raises(ValueError, match="no block 2 in stage 0"):
        micro.offsets(x, 0, 2)
    # numpy integers are integers; a float is no stage
    assert micro.offsets(x, np.int64(1), np.int32(0)).shape[0] == x.shape[0]
    with pytest.raises(ValueError, match="stage must be an integer from 0 to 3, got 0.0"):
        micro.offsets(x, 0.0, 0)
    # Thread counts past the library's limit, or past a C int, are refused
    # before any thread starts; the limit is the library's own.
    for threads in (-1, damamba.MAX_THREADS + 1, 2**32, 2**40, True, 1.5):
        with pytest.raises(ValueError, match=f"threads must be an integer from 0 to {damamba.MAX_THREADS}"):
            micro.forward(x, threads=threads)
        with pytest.raises(ValueError, match="threads must be an integer"):
            damamba.set_threads(threads)
    # Counts of files per batch and of classes are checked before any work.
    paths = sample_paths()[:1]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"batch must be an integer of at least 1, got {bad!r}"):
            micro.classify(paths, batch=bad)
        with pytest.raises(ValueError, match=f"k must be an integer of at least 1, got {bad!r}"):
            micro.classify(paths, k=bad)
        with pytest.raises(ValueError, match=f"k must be an integer of at least 1, got {bad!r}"):
            damamba.top_k(np.zeros(10, np.float32), bad)
    with pytest.raises(ValueError, match="k must be at most the 10 classes, got 11"):
        damamba.top_k(np.zeros(10, np.float32), 11)
    from damamba._lib import lib
    ws = micro._workspace(1, 64, 96)
    assert lib.dm_workspace_set_threads(ws.handle, damamba.MAX_THREADS + 1) != 0
    assert f"1 to {damamba.MAX_THREADS} threads" in lib.dm_last_error().decode()


def test_numpy_integers_are_integers(micro: damamba.Model, micro_io: dict) -> None:
    """What indexing an integer array gives is taken wherever an integer
    is, with the same results as a Python int; numpy's bool is not."""
    x = micro_io["input"]
    np.testing.assert_array_equal(micro.forward(x, threads=np.int64(2)), micro.forward(x, threads=2))
    damamba.set_threads(np.int32(1))
    damamba.set_threads(np.uint8(0))
    assert micro.stage_shape(np.int64(1), np.int32(64), np.uint16(96)) == (64, 8, 12)
    logits = micro.forward(x)[0]
    index, probs = damamba.top_k(logits, np.int64(3))
    assert index.tolist() == damamba.top_k(logits, 3)[0].tolist() and probs.shape == (3,)
    paths = sample_paths()[:3]
    assert micro.classify(paths, k=np.int64(2), batch=np.int16(2)) == micro.classify(paths, k=2, batch=2)
    path = sample_paths()[0]
    assert damamba.load_image(path, channels=np.int64(1)).shape[2] == 1
    settings = dataclasses.replace(damamba.PreprocessSettings.imagenet(), resize=np.int64(40), crop=np.int32(32))
    assert damamba.preprocess(path, settings).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="threads must be an integer from 0 to 1024"):
        micro.forward(x, threads=np.bool_(True))
    with pytest.raises(ValueError, match="k must be an integer of at least 1, got 0"):
        damamba.top_k(logits, np.int64(0))


def test_arguments_a_c_call_cannot_hold_are_refused(micro: damamba.Model, tmp_path) -> None:
    """ctypes would cut an int to 32 bits and a string at its first NUL,
    silently: such arguments raise ValueError before any call."""
    path = sample_paths()[0]
    for bad in (2**32 + 28, 2**70, -1):
        with pytest.raises(ValueError, match=f"h must be an integer from 0 to {2**31 - 1}, got {bad}"):
            micro.stage_shape(0, bad, 28)
    with pytest.raises(ValueError, match="stage must be an integer from 0 to 3, got 4"):
        micro.stage_shape(4, 28, 28)
    with pytest.raises(ValueError, match="channels must be an integer"):
        damamba.load_image(path, channels=2**32 + 3)
    with pytest.raises(ValueError, match="num_classes must be an integer"):
        damamba.Model.synthetic(num_classes=2**32 + 10)
    with pytest.raises(ValueError, match=r"variant must be one letter \('F', 'T', 'S' or 'B'\), got ''"):
        damamba.Model.synthetic("")
    settings = damamba.PreprocessSettings.imagenet()
    with pytest.raises(ValueError, match="resize must be an integer"):
        damamba.preprocess(path, dataclasses.replace(settings, resize=2**40))
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 5"):
        damamba.preprocess(damamba.load_image(path), dataclasses.replace(settings, channels=5, mean=(0.5,) * 5,
                                                                         std=(0.5,) * 5))
    with pytest.raises(ValueError, match="input shape .* has a size over"):
        micro.forward(np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (1, 3, 2**31, 0), (0, 0, 0, 0)))
    # views of one element repeated: nothing that size is ever allocated
    for shape in ((1, 2**32 + 30), (2**32 + 20, 1)):
        wide = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape, (0, 0))
        with pytest.raises(ValueError, match="image shape .* has a size over"):
            damamba.preprocess(wide, settings)
    many = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (2**32 + 3,), (0,))
    with pytest.raises(ValueError, match=f"softmax takes at most {2**31 - 1} logits, got {2**32 + 3}"):
        damamba.softmax(many)
    with pytest.raises(ValueError, match="softmax takes at most"):
        damamba.top_k(many, 2)
    # a NUL inside a path names another file, so nothing is opened
    with pytest.raises(ValueError, match="path contains a NUL character"):
        damamba.load_image(path + "\0.jpg")
    with pytest.raises(ValueError, match="path contains a NUL character"):
        damamba.Model(str(GOLDEN / "micro.safetensors") + "\0/x.pth")
    with pytest.raises(ValueError, match="key contains a NUL character"):
        micro.metadata("classes\0x")
    # any bytes-like object is a model file's bytes
    data = bytearray((GOLDEN / "micro.safetensors").read_bytes())
    assert damamba.Model.from_bytes(data).config == micro.config


def test_empty_batch(micro: damamba.Model) -> None:
    empty = np.zeros((0, 3, 64, 96), dtype=np.float32)
    assert micro.forward(empty).shape == (0, 10)
    assert [s.shape for s in micro.features(empty)] == [(0, 32, 16, 24), (0, 64, 8, 12), (0, 96, 4, 6),
                                                        (0, 128, 2, 3)]
    assert micro.offsets(empty, 1, 0).shape == (0, 8, 12, micro.config.groups[1], 2)


@pytest.mark.parametrize("shape", [(1, 3, 0, 28), (2, 3, 28, 0), (0, 3, 0, 28)])
def test_empty_images_are_refused(micro: damamba.Model, shape: tuple[int, ...]) -> None:
    """Images of no pixels have no stage shapes: every call refuses them
    alike, naming the shape, before anything runs."""
    x = np.zeros(shape, dtype=np.float32)
    message = f"^batch {shape[0]} of {shape[2]}x{shape[3]} images is empty$"
    for call in (micro.forward, micro.features, lambda x: micro.offsets(x, 0, 0)):
        with pytest.raises(damamba.ArgumentError, match=message):
            call(x)


def test_a_wide_batch_then_a_tall_one() -> None:
    """Each fits a workspace, both together do not (over the library's
    2^30 pixels): the second call runs in a workspace of its own size,
    with the results of a model that never ran the first."""
    rng = np.random.default_rng(3)
    wide = rng.normal(size=(1, 3, 4, 40000)).astype(np.float32)
    tall = rng.normal(size=(1, 3, 40000, 4)).astype(np.float32)
    model = damamba.Model(GOLDEN / "micro.safetensors")
    model.forward(wide, threads=1)
    got = model.forward(tall, threads=1)
    ws = model._local.workspace
    assert (ws.batch, ws.h, ws.w) == (1, 40000, 4)
    np.testing.assert_array_equal(got, damamba.Model(GOLDEN / "micro.safetensors").forward(tall, threads=1))
    # a smaller batch still fits the union where it can be made
    model.forward(wide[:, :, :, :20], threads=1)
    ws = model._local.workspace
    assert (ws.batch, ws.h, ws.w) == (1, 40000, 20)


_inherited: dict = {}  # what a forked child finds of its parent's


def _forward_in_child(threads: int) -> np.ndarray:
    return _inherited["model"].forward(_inherited["x"], threads=threads)


def test_forked_workers_after_the_parent_ran(micro: damamba.Model, micro_io: dict) -> None:
    """multiprocessing's fork start method after the parent has computed:
    the children compute on their own threads, other counts included (a
    child that changed the count of a workspace made before the fork hung,
    joining threads fork had not copied)."""
    import multiprocessing

    x = micro_io["input"]
    want = micro.forward(x, threads=2)
    _inherited.update(model=micro, x=x)
    # one child, first a count above the parent's: it starts threads, then
    # frees the parent's pool
    with multiprocessing.get_context("fork").Pool(1) as pool:
        results = pool.map_async(_forward_in_child, [3, 1, 2]).get(timeout=60)
    for got in results:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(results[2], want)  # the parent's count: the parent's bits


def test_threads_sharing_a_model(micro: damamba.Model, micro_io: dict) -> None:
    rng = np.random.default_rng(7)
    inputs = [micro_io["input"] + rng.normal(0, 0.1, micro_io["input"].shape).astype(np.float32) for _ in range(8)]
    expected = [micro.forward(x) for x in inputs]
    results: list[np.ndarray | None] = [None] * len(inputs)

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = micro.forward(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_forward_releases_the_gil(micro: damamba.Model, micro_io: dict) -> None:
    """Python code in another thread runs while a forward pass is under way.
    With a switch interval far longer than the test, a thread holding the GIL
    keeps it until it blocks: if the library call held it, the ticker could
    not take a single step between the pass's start and its end.  The pass
    runs on one thread and the ticker sleeps between steps, so each has a core
    and neither waits on the other's scheduling."""
    x = np.repeat(micro_io["input"], 16, axis=0)
    micro.forward(x, threads=1)  # the workspace exists before the timed pass
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0002)  # releases the GIL, so the pass can return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    try:
        thread = threading.Thread(target=ticker)
        thread.start()
        begin = time.perf_counter()
        micro.forward(x, threads=1)
        end = time.perf_counter()
        stop.set()
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    during = [t for t in ticks if begin < t < end]
    assert len(during) >= 3, f"{len(during)} ticker steps in a {1e3 * (end - begin):.1f} ms pass"


def test_from_state_dict_equals_the_file(micro: damamba.Model, micro_io: dict) -> None:
    tensors, _ = read_safetensors(GOLDEN / "micro.safetensors")
    classes = [f"c{i}" for i in range(10)]
    model = damamba.Model.from_state_dict(dict(tensors), metadata={"classes": json.dumps(classes)})
    assert model.config == micro.config
    np.testing.assert_array_equal(model.forward(micro_io["input"]), micro.forward(micro_io["input"]))
    assert model.classes == classes
    # The same weights in another dtype and byte order load to the same model.
    big_endian = {k: v.astype(">f8") if v.dtype.kind == "f" else v for k, v in tensors.items()}
    np.testing.assert_array_equal(damamba.Model.from_state_dict(big_endian).forward(micro_io["input"]),
                                  micro.forward(micro_io["input"]))


def test_checkpoint_and_ema(micro: damamba.Model, micro_io: dict) -> None:
    x = micro_io["input"]
    np.testing.assert_array_equal(damamba.Model(GOLDEN / "micro.pth").forward(x), micro.forward(x))
    in_memory = damamba.Model.from_bytes((GOLDEN / "micro.pth").read_bytes())
    np.testing.assert_array_equal(in_memory.forward(x), micro.forward(x))
    assert not np.array_equal(damamba.Model(GOLDEN / "micro.pth", ema=True).forward(x), micro.forward(x))
    # only a training checkpoint has EMA weights
    with pytest.raises(damamba.ArgumentError, match="the built-in model has no EMA weights"):
        damamba.Model(ema=True)
    with pytest.raises(damamba.ArgumentError, match="the EMA weights exist only in .pth training checkpoints"):
        damamba.Model(GOLDEN / "micro.safetensors", ema=True)


def test_offsets_layout(micro: damamba.Model, micro_io: dict) -> None:
    x = micro_io["input"]
    offsets = micro.offsets(x, 2, 1)
    assert offsets.shape == (2, 4, 6, 6, 2)
    assert np.all(np.isfinite(offsets)) and np.any(offsets != 0)
    # One image alone gives its row of the batch (up to float32 rounding: the
    # matrix products' blocking depends on the batch).
    alone = micro.offsets(x[1:], 2, 1)[0]
    assert max_error(alone, offsets[1]) <= 1e-5
    assert not np.array_equal(micro.offsets(x, 2, 0), offsets)


def test_softmax_is_what_its_docstring_says() -> None:
    """float32 probabilities of the float32 logits, computed in float64."""
    logits = np.array([3.25, -1.0, 0.1, 8.0, 7.5], dtype=np.float64)
    probs = damamba.softmax(logits)
    assert probs.dtype == np.float32 and f"({probs.dtype})" in damamba.softmax.__doc__
    x = logits.astype(np.float32).astype(np.float64)
    e = np.exp(x - x.max())
    np.testing.assert_allclose(probs, (e / e.sum()).astype(np.float32), rtol=1e-6, atol=0)


def test_a_model_is_neither_pickled_nor_copied() -> None:
    """A copy would free the C model twice, a pickle would mean nothing in
    another process: both raise TypeError saying what to do instead,
    nothing is reported at exit, and the model still runs."""
    script = """if True:
        import copy, pickle, numpy as np, damamba
        model = damamba.Model()
        for attempt in (pickle.dumps, copy.copy, copy.deepcopy, lambda m: copy.deepcopy([m._owner])):
            try:
                attempt(model)
            except TypeError as e:
                print(e)
        damamba._ModelHandle.__new__(damamba._ModelHandle)  # freed without its __init__ having run
        print(model.forward(np.zeros((1, 1, 28, 28))).shape)
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    refusal = "a damamba.Model cannot be pickled or copied: pass the path, or load the model in the worker"
    assert (done.stdout, done.stderr, done.returncode) == (f"{refusal}\n" * 4 + "(1, 10)\n", "", 0)


def test_errors_carry_the_library_message(tmp_path) -> None:
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(OSError, match="missing.safetensors") as caught:
        damamba.Model(missing)
    assert isinstance(caught.value, damamba.FileError)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((GOLDEN / "micro.safetensors").read_bytes()[:1000])
    with pytest.raises(damamba.FormatError):
        damamba.Model(truncated)
    with pytest.raises(damamba.ModelError, match="stem"):
        damamba.Model.from_state_dict({"head.fc.weight": np.zeros((10, 8), np.float32)})
    with pytest.raises(TypeError, match="complex"):
        damamba.Model.from_state_dict({"x": np.zeros(2, np.complex64)})
    with pytest.raises(ValueError, match="tensor name 'head.fc\\\\x00weight' contains a NUL character"):
        damamba.Model.from_state_dict({"head.fc\0weight": np.zeros((10, 8), np.float32)})
    with pytest.raises(ValueError, match="metadata 'classes' contains a NUL character"):
        damamba.Model.from_state_dict({"x": np.zeros(2, np.float32)}, metadata={"classes": "a\0b"})
    with pytest.raises(damamba.FormatError, match="micro.safetensors"):
        damamba.load_image(GOLDEN / "micro.safetensors")
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(damamba.FormatError, match="not-an-image.png"):
        damamba.load_image(bad)


def test_load_image_opencv(tmp_path) -> None:
    # chelsea.png with an eXIf chunk after IHDR saying "turn a quarter clockwise"
    png = (GOLDEN / "chelsea.png").read_bytes()
    tiff = b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + b"\0" * 4
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    tagged = tmp_path / "tagged.png"
    tagged.write_bytes(png[:33] + chunk + png[33:])
    stored = damamba.load_image(tagged)
    assert np.array_equal(stored, damamba.load_image(GOLDEN / "chelsea.png"))
    assert np.array_equal(damamba.load_image(tagged, convention="opencv"), np.rot90(stored, k=-1))
    with pytest.raises(ValueError, match="convention must be 'pil' or 'opencv', got 'cv2'"):
        damamba.load_image(tagged, convention="cv2")
    with pytest.raises(damamba.ArgumentError, match="3 channels in OpenCV's convention"):
        damamba.load_image(tagged, channels=1, convention="opencv")


def test_preprocess_matches_torchvision() -> None:
    golden = read_safetensors(GOLDEN / "preprocess.safetensors")[0]
    settings = damamba.PreprocessSettings.imagenet()
    for name in ("chelsea", "coffee"):
        got = damamba.preprocess(GOLDEN / f"{name}.png", settings)
        assert got.shape == (3, 224, 224)
        # In 8-bit levels: Pillow's integer resampling rounds a level either way.
        levels = np.abs(got - golden[name]) * np.array(settings.std)[:, None, None] * 255
        assert levels.max() <= 1 + 1e-3 and levels.mean() < 0.1


def test_load_image_and_preprocess_an_array() -> None:
    path = sample_paths()[0]
    grey = damamba.load_image(path, channels=1)
    rgb = damamba.load_image(path)
    assert grey.dtype == np.uint8 and grey.shape[2] == 1 and rgb.shape == grey.shape[:2] + (3,)
    model = damamba.Model()
    np.testing.assert_array_equal(model.preprocess(grey[:, :, 0]), model.preprocess(path))


def test_embeddings_are_what_the_head_takes(micro: damamba.Model) -> None:
    head = read_safetensors(GOLDEN / "micro.safetensors")[0]
    paths = sample_paths()[:3]
    rows = micro.embed(paths)
    assert [row["file"] for row in rows] == paths
    embeddings = np.stack([row["embedding"] for row in rows])
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32
    logits = micro.forward(np.stack([micro.preprocess(p) for p in paths]))
    through_head = embeddings.astype(np.float64) @ head["head.fc.weight"].T + head["head.fc.bias"]
    assert max_error(through_head, logits) <= 1e-5
