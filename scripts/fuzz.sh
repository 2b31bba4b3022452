#!/bin/sh
# fuzz.sh [SECONDS] - build the fuzz targets (fuzz/*.c) with clang's
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer, and run each
# for SECONDS (default 60) from seed corpora made of the test files.
#
# Needs clang and libFuzzer (Debian: clang, libclang-rt-14-dev or the
# matching version), libstb-dev, libjpeg62-turbo-dev and libwebp-dev.
# Work goes to build-fuzz/ (or $FUZZ_DIR): corpora grow there across runs;
# inputs that fail land in build-fuzz/artifacts/TARGET/, and a failure
# prints the end of the target's log and the failing input in base64.
# Exits non-zero when a target finds a crash, a leak, a hang (over 10 s)
# or an allocation over 512 MB.
set -eu
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_DIR:-$root/build-fuzz}
cc=${CC:-clang}
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
# FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION: a .pth member whose CRC-32 does
# not match is read anyway, so that mutated pickles reach the unpickler.
cflags="-std=c11 -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -g -O1 $sanitize -I$root/include -I$root/src -I$root/src/internal -I$root/src/io -I$root/src/image -I$root/simd $(pkg-config --cflags stb)"
# The file readers, the model loader (with the packing of its weights) and
# the image loader, without kernels.
lib="src/error.c src/host_memory.c src/backend/cpu/cgroup.c src/versioned.c src/classes.c src/io/json.c
  src/io/dtype.c src/io/safetensors.c src/io/files.c src/io/tensor_file.c src/io/zip.c src/io/unpickle.c src/io/pth.c
  src/io/model_file.c src/model.c simd/panels.c src/image/image_check.c src/image/image.c src/image/resample.c
  src/image/gif.c src/image/palette.c src/image/jpeg.c src/image/webp.c src/image/orientation.c"

mkdir -p "$out/obj"
objs=""
for f in $lib; do
    $cc $cflags -fsanitize=fuzzer-no-link -c "$root/$f" -o "$out/obj/$(basename "${f%.c}").o"
    objs="$objs $out/obj/$(basename "${f%.c}").o"
done
# The data built into the library, as src/meson.build generates it.
sed -e "s|@MODEL@|$root/data/damamba_fmnist.safetensors|" -e "s|@CLASSES@|$root/data/imagenet_classes.txt|" \
    -e "s|@ADE20K@|$root/data/ade20k_classes.txt|" -e "s|@COCO_CLASSES@|$root/data/coco_classes.txt|" \
    "$root/src/embed.S.in" >"$out/obj/embed.S"
$cc -c "$out/obj/embed.S" -o "$out/obj/embed.o"
objs="$objs $out/obj/embed.o"
for t in safetensors pth image; do
    $cc $cflags -fsanitize=fuzzer "$root/fuzz/fuzz_$t.c" $objs -ljpeg -lwebpdemux -lwebp -lz -lm -lpthread -o "$out/fuzz_$t"
done
# The server's request parser, on the same readers plus its own file.
$cc $cflags -I"$root/tools" -I"$root/tools/serve" -fsanitize=fuzzer "$root/fuzz/fuzz_infer.c" \
    "$root/tools/serve/infer.c" $objs -ljpeg -lwebpdemux -lwebp -lz -lm -lpthread -o "$out/fuzz_infer"
# COCO annotation files, as the detection evaluation reads them.
$cc $cflags -I"$root/tools" -fsanitize=fuzzer "$root/fuzz/fuzz_coco.c" "$root/tools/coco_annotations.c" \
    "$root/tools/coco_eval.c" $objs -ljpeg -lwebpdemux -lwebp -lz -lm -lpthread -o "$out/fuzz_coco"
$cc -std=c11 -O1 $(pkg-config --cflags stb) "$root/fuzz/make_image_seeds.c" -lz -lm -o "$out/make_image_seeds"
$cc -std=c11 -O1 "$root/fuzz/make_model_seeds.c" -o "$out/make_model_seeds"

# Seeds: the small test files, and images (whole and truncated) and
# hostile model files written here.
for t in safetensors pth image infer coco; do mkdir -p "$out/seeds/$t" "$out/corpus/$t" "$out/artifacts/$t"; done
for f in "$root"/tests/golden/*.safetensors "$root"/tests/fixtures/*.safetensors "$root"/data/*.safetensors; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] && cp "$f" "$out/seeds/safetensors/"
done
cp "$root"/tests/fixtures/*.pth "$out/seeds/pth/"
"$out/make_image_seeds" "$out/seeds/image"
"$out/make_model_seeds" "$out/seeds/safetensors" "$out/seeds/pth"
for f in "$root"/tests/golden/*.png "$root"/tests/golden/*.jpg "$root"/tests/fixtures/webp/*.webp; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] && cp "$f" "$out/seeds/image/"
done

# Inference requests: a 4-byte header length (0: JSON alone), then the body.
seed() { printf '%b' "$2" >"$out/seeds/infer/$1"; }
seed json '\0\0\0\0{"id": "a", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]]}], "outputs": [{"name": "logits"}, {"name": "stage1"}]}'
seed bytes '\0\0\0\0{"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": ["UDUKMiAyCjI1NQoAAQID"]}]}'
hdr='{"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 19}}], "parameters": {"binary_data_output": true}}'
seed binary "\\x$(printf '%02x' ${#hdr})\0\0\0$hdr\x0f\0\0\0P5\n2 2\n255\n\0\1\2\3"

# Annotation files: each mask form, crowd regions, an image without a size.
cseed() { printf '%s' "$2" >"$out/seeds/coco/$1"; }
cseed forms '{"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}, {"id": 2, "file_name": "b.png", "width": 4, "height": 4}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2], "area": 6, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3], [5, 2, 7, 2, 6, 5]]}, {"image_id": 2, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 1, "segmentation": {"counts": [0, 4, 12], "size": [4, 4]}}, {"image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 3, "segmentation": {"counts": "52203", "size": [4, 4]}}]}'
cseed nosize '{"images": [{"id": 7, "file_name": "c.png"}], "annotations": [{"image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "area": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}]}'

status=0
summary=""
for t in safetensors pth image infer coco; do
    dict=""
    [ -f "$root/fuzz/$t.dict" ] && dict="-dict=$root/fuzz/$t.dict"
    log="$out/fuzz_$t.log"
    stamp="$out/started-$t"
    : >"$stamp"
    if "$out/fuzz_$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 -malloc_limit_mb=512 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" $dict \
        "$out/corpus/$t" "$out/seeds/$t" >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log and $out/artifacts/$t/)"
        status=1
        # The reason and the failing input in base64: a CI log may be all
        # there is to reproduce it from.
        echo "fuzz_$t failed; the end of its log:"
        tail -n 40 "$log" | sed 's/^/    /'
        find "$out/artifacts/$t" -type f -newer "$stamp" | while read -r input; do
            echo "$input in base64:"
            base64 -w 0 "$input"
            echo
        done
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    summary="$summary
fuzz_$t: ${runs:-?} executions in ${seconds}s, $(ls "$out/corpus/$t" | wc -l) corpus files: $result"
done
echo "$summary"
exit $status
