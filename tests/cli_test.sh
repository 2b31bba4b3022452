#!/bin/sh
# cli_test.sh DAMAMBA SAMPLES_DIR FMNIST_TEST GOLDEN_DIR - the damamba
# command end to end: classify the bundled samples (each named after its
# class), JSON output, failure reporting and exit status, sharding, lists,
# eval over a folder and over the test set, preprocess and features, help
# and --ema (with GOLDEN_DIR/micro.pth), and segmentation (segment, run,
# eval --task seg and the ADE20K transform) with the UperNet micro
# checkpoint.
set -u
damamba=$1 samples=$2 fmnist=$3 golden=$4
micro_pth="$golden/micro.pth"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# safetensors FILE HEADER [DATA...]: a safetensors file from its JSON header
# (under 64 KiB) and the bytes of the DATA files.
safetensors() {
    out=$1 header=$2
    shift 2
    len=$(printf %s "$header" | wc -c)
    printf "\\$(printf %03o $((len % 256)))\\$(printf %03o $((len / 256)))\\0\\0\\0\\0\\0\\0" >"$out"
    printf %s "$header" >>"$out"
    [ $# -eq 0 ] || cat "$@" >>"$out"
}
# expect STATUS MESSAGE COMMAND...: COMMAND exits STATUS and says MESSAGE on stderr.
expect() {
    want=$1 message=$2
    shift 2
    "$@" >"$tmp/expect.out" 2>"$tmp/expect.err"
    got=$?
    [ "$got" -eq "$want" ] || fail "$* exited $got, not $want: $(cat "$tmp/expect.err")"
    grep -q -- "$message" "$tmp/expect.err" || fail "$*: no '$message' in: $(cat "$tmp/expect.err")"
}

# Every command answers --help and 'damamba help COMMAND'; every command
# that takes -m takes --ema.
for cmd in run info classify eval features preprocess scanmap compare bench convert segment; do
    "$damamba" "$cmd" --help >"$tmp/help1.txt" || fail "$cmd --help"
    "$damamba" help "$cmd" >"$tmp/help2.txt" || fail "help $cmd"
    cmp -s "$tmp/help1.txt" "$tmp/help2.txt" || fail "help $cmd differs from $cmd --help"
    if grep -q -- "--model" "$tmp/help1.txt"; then
        grep -q -- "--ema" "$tmp/help1.txt" || fail "$cmd --help does not list --ema"
        "$damamba" "$cmd" --ema --help >/dev/null || fail "$cmd does not accept --ema"
    fi
done
"$damamba" help nonsense 2>/dev/null && fail "help of an unknown command succeeded"
"$damamba" help | grep -q -- "--version" || fail "help does not list --version"
"$damamba" --version | grep -qx "damamba [0-9.]* (libdamamba [0-9.]*)" || fail "--version"

# --dtype: the commands that run models take it, refuse what is not a
# precision, and compute in it (other logits, same classes here).
for cmd in bench classify eval run segment detect; do
    "$damamba" help "$cmd" | grep -q -- "--dtype T" || fail "$cmd --help does not list --dtype"
done
expect 2 "--dtype expects f32, bf16 or f16, got 'f8'" "$damamba" classify --dtype f8 "$samples/bag.png"
"$damamba" bench -v F -s 32 -n 1 -t 1 --dtype bf16 >"$tmp/bench_bf16.txt" || fail "bench --dtype bf16"
grep -Eq "^backend +cpu: .*, bf16 products \((widened|[a-z0-9-]+-bf16)\)" "$tmp/bench_bf16.txt" ||
    fail "bench --dtype bf16 does not say how bf16 runs: $(cat "$tmp/bench_bf16.txt")"
"$damamba" classify --json -k 1 "$samples/bag.png" >"$tmp/f32.json" || fail "classify f32"
"$damamba" classify --json -k 1 --dtype f16 "$samples/bag.png" >"$tmp/f16.json" || fail "classify --dtype f16"
cmp -s "$tmp/f32.json" "$tmp/f16.json" && fail "classify --dtype f16 printed the float32 probabilities"
[ "$(grep -o '"label": "[^"]*"' "$tmp/f32.json")" = "$(grep -o '"label": "[^"]*"' "$tmp/f16.json")" ] ||
    fail "f16 changed the class of bag.png: $(cat "$tmp/f32.json" "$tmp/f16.json")"

# DAMAMBA_MEMORY_LIMIT: a run whose buffers pass it fails, naming it; one
# within it runs; a value that is not a size is reported, not ignored.
expect 1 "MB workspace: .* would pass 419.4 MB, DAMAMBA_MEMORY_LIMIT" env DAMAMBA_MEMORY_LIMIT=400M \
    "$damamba" bench -v F -s 2048 -n 1 -t 1
expect 1 'DAMAMBA_MEMORY_LIMIT is "12X", not a size' env DAMAMBA_MEMORY_LIMIT=12X "$damamba" classify "$samples/bag.png"
expect 1 'DAMAMBA_THREADS is "2x", not a number of threads' env DAMAMBA_THREADS=2x "$damamba" classify "$samples/bag.png"
DAMAMBA_MEMORY_LIMIT=1G "$damamba" classify -k 1 "$samples/bag.png" | grep -q "Bag" || fail "classify within a 1G limit"
# --ema selects a training checkpoint's EMA weights: other logits.  The
# output of preprocess is what run takes.
"$damamba" preprocess -m "$micro_pth" --size 40 "$samples/bag.png" -o "$tmp/micro_in.safetensors" || fail "preprocess for micro"
"$damamba" run -m "$micro_pth" -i "$tmp/micro_in.safetensors" -o "$tmp/plain.safetensors" || fail "run of preprocess output"
"$damamba" run -m "$micro_pth" --ema -i "$tmp/micro_in.safetensors" -o "$tmp/ema.safetensors" || fail "run --ema"
head -c 600 "$tmp/plain.safetensors" | grep -q '"logits":{"dtype":"F32","shape":\[1,10\]' || fail "run output shape"
cmp -s "$tmp/plain.safetensors" "$tmp/ema.safetensors" && fail "run --ema gives the plain weights' outputs"
# Only a training checkpoint has EMA weights: --ema elsewhere is refused.
expect 1 "the built-in model has no EMA weights" "$damamba" classify --ema "$samples/bag.png"
expect 1 "the EMA weights exist only in .pth training checkpoints" "$damamba" classify --ema \
    -m "$golden/micro.safetensors" "$samples/bag.png"

# Classify every sample plus a missing file: 11 JSON lines, exit status 1.
"$damamba" classify --json -k 3 -b 4 "$samples" "$tmp/missing.png" >"$tmp/out.json" 2>"$tmp/err.txt"
status=$?
[ "$status" -eq 1 ] || fail "classify with a missing file exited $status, not 1"
[ "$(wc -l <"$tmp/out.json")" -eq 11 ] || fail "classify wrote $(wc -l <"$tmp/out.json") lines, not 11"
grep -q "^{\"file\": \"$tmp/missing.png\", \"error\": \".*cannot open" "$tmp/out.json" ||
    fail "no JSON error line for the missing file"
grep -q "missing.png: cannot open" "$tmp/err.txt" || fail "no error on stderr for the missing file"
n=0
for f in "$samples"/*.png; do
    stem=$(basename "$f" .png)
    line=$(grep "^{\"file\": \"$f\"" "$tmp/out.json") || { fail "no line for $f"; continue; }
    # The top label, normalized as the sample names are: "Ankle boot" -> ankle-boot, "T-shirt/top" -> t-shirt.
    label=$(echo "$line" | sed -n 's/^[^[]*\[{"index": [0-9]*, "label": "\([^"]*\)", "prob": \([0-9.e-]*\)}.*/\1/p' |
        cut -d/ -f1 | tr 'A-Z ' 'a-z-')
    [ "$label" = "$stem" ] || fail "$f classified as '$label'"
    [ "$(echo "$line" | grep -o '"index"' | wc -l)" -eq 3 ] || fail "$f: not 3 classes"
    n=$((n + 1))
done
[ "$n" -eq 10 ] || fail "expected 10 samples, found $n"

# All good: exit status 0; text output names the class.
"$damamba" classify "$samples/sneaker.png" >"$tmp/out.txt" || fail "classify of a good file failed"
grep -q "Sneaker (7)" "$tmp/out.txt" || fail "text output lacks 'Sneaker (7)'"

# Standard input: an image ('-'), and a list ('@-') answered as it arrives,
# before the list ends.
"$damamba" classify --json -k 1 - <"$samples/bag.png" | grep -q '^{"file": "-", "top": \[{"index": 8,' ||
    fail "classify - (an image on standard input)"
mkfifo "$tmp/list.fifo"
"$damamba" classify --json -k 1 @- <"$tmp/list.fifo" >"$tmp/stream.json" 2>"$tmp/stream.err" &
classify_pid=$!
exec 3>"$tmp/list.fifo"
echo "$samples/coat.png" >&3
for i in $(seq 600); do grep -q coat.png "$tmp/stream.json" && break; sleep 0.1; done
grep -q '"label": "Coat"' "$tmp/stream.json" || fail "no answer for a listed image before the list ended"
echo "$samples/dress.png" >&3
exec 3>&-
wait "$classify_pid" || fail "classify @- exited $?"
[ "$(grep -c '"top"' "$tmp/stream.json")" -eq 2 ] || fail "classify @- did not answer both images"
grep -q "^classified 2 images in [0-9.]* s ([0-9.]* images/s)$" "$tmp/stream.err" || fail "classify ends without its rate"
"$damamba" classify - @- </dev/null 2>/dev/null; [ $? -eq 2 ] || fail "'-' with '@-' is not a usage error"
# A list's line '-' is an image on standard input too: with another '-' it
# is a usage error; alone it is read; in the '@-' list it is reported and
# skipped.
printf '%s\n' "$samples/bag.png" - >"$tmp/list_stdin.txt"
expect 2 "standard input can be read once" sh -c '"$1" classify "@$2" - <"$3"' sh "$damamba" \
    "$tmp/list_stdin.txt" "$samples/coat.png"
printf '%s\n' - - >"$tmp/list_stdin2.txt"
expect 2 "standard input can be read once" "$damamba" classify "@$tmp/list_stdin2.txt"
"$damamba" classify -k 1 "@$tmp/list_stdin.txt" <"$samples/coat.png" >"$tmp/list_stdin.out" ||
    fail "classify of a list with the line '-'"
[ "$(grep -c "^  .*%  " "$tmp/list_stdin.out")" = 2 ] && grep -q "Coat (4)" "$tmp/list_stdin.out" ||
    fail "classify of a list with the line '-': $(cat "$tmp/list_stdin.out")"
printf '%s\n' "$samples/bag.png" - "$samples/coat.png" >"$tmp/list_stdin3.txt"
expect 1 "standard input: line 2 is '-', but standard input holds the list (@-)" sh -c \
    '"$1" classify -k 1 @- <"$2"' sh "$damamba" "$tmp/list_stdin3.txt"
grep -q "Bag (8)" "$tmp/expect.out" && grep -q "Coat (4)" "$tmp/expect.out" ||
    fail "classify @- with a line '-' did not classify the others: $(cat "$tmp/expect.out")"

# On a terminal: a progress line with rate and ETA, erased before results.
if command -v script >/dev/null; then
    script -qec "'$damamba' classify --json -b 2 -k 1 '$samples'" /dev/null >"$tmp/tty.txt" 2>&1
    grep -q "images/s  ETA " "$tmp/tty.txt" || fail "no rate and ETA on the progress line"
    grep -q "images/s  ETA [0-9:]*.{" "$tmp/tty.txt" && fail "results printed over the progress line"
    [ "$(grep -o '"top"' "$tmp/tty.txt" | wc -l)" -eq 10 ] || fail "not 10 results on the terminal"
fi

# Shards 0/3, 1/3, 2/3 split the sorted list; a list file names files too.
for i in 0 1 2; do
    "$damamba" classify --json --shard "$i/3" "$samples" >>"$tmp/shards.json" || fail "shard $i/3"
done
[ "$(sort "$tmp/shards.json" | uniq | wc -l)" -eq 10 ] || fail "shards do not cover the 10 samples once"
"$damamba" classify --json --shard 1/3 "$samples" | grep -c '"file"' | grep -qx 3 || fail "shard 1/3 is not 3 files"
ls "$samples"/*.png >"$tmp/list.txt"
"$damamba" classify --json "@$tmp/list.txt" | grep -c '"top"' | grep -qx 10 || fail "@LIST"

# A list line that no file name can be: one holding a NUL is reported and
# skipped, one longer than any path ends the list (a list that is
# /dev/zero, file or standard input, once filled the memory).
printf '%s\n%s\0x\n%s\r\n' "$samples/bag.png" "$samples/coat.png" "$samples/dress.png" >"$tmp/nul_list.txt"
for source in "@$tmp/nul_list.txt" @-; do
    "$damamba" classify --json "$source" <"$tmp/nul_list.txt" >"$tmp/nul.json" 2>"$tmp/err.txt"
    [ $? -eq 1 ] || fail "classify $source: a NUL in a list line is not a failure"
    grep -q "line 2 holds a NUL byte" "$tmp/err.txt" || fail "classify $source: $(cat "$tmp/err.txt")"
    [ "$(grep -c '"top"' "$tmp/nul.json")" -eq 2 ] || fail "classify $source: not the 2 other images"
done
# A list on standard input without images is an error, as a list file is.
expect 1 "@-: no images in the list" sh -c 'printf "\n" | "$1" classify @-' sh "$damamba"
timeout 60 "$damamba" classify @- </dev/zero >/dev/null 2>"$tmp/err.txt"
[ $? -eq 1 ] || fail "classify @- of /dev/zero did not fail"
grep -q "line 1 is longer than any file name" "$tmp/err.txt" || fail "classify @- of /dev/zero: $(cat "$tmp/err.txt")"
# A list file is read whole first: a device is refused (/dev/urandom, whose
# short lines with NULs are each skipped, once ran on and on), a pipe read.
for device in /dev/zero /dev/urandom; do
    timeout 60 "$damamba" classify "@$device" >/dev/null 2>"$tmp/err.txt"
    [ $? -eq 1 ] || fail "classify @$device did not fail"
    grep -q "$device: a list must be a regular file or a pipe" "$tmp/err.txt" ||
        fail "classify @$device: $(cat "$tmp/err.txt")"
done
ls "$samples"/bag.png | "$damamba" classify --json @/dev/stdin | grep -qc '"top"' || fail "a list that is a pipe"

# A directory the walk cannot read is reported and left out, and the walk
# goes on (it once ended there, dropping the rest without a word).  Root
# reads any directory, so as root the command runs as nobody.
walk=$(mktemp -d)
mkdir "$walk/a" "$walk/b" "$walk/c"
cp "$samples/bag.png" "$walk/a/" && cp "$samples/coat.png" "$walk/b/" && cp "$samples/dress.png" "$walk/c/"
chmod 755 "$walk" "$walk/a" "$walk/c" && chmod 000 "$walk/b"
as_nobody=
[ "$(id -u)" -eq 0 ] && as_nobody="setpriv --reuid=65534 --regid=65534 --clear-groups"
$as_nobody "$damamba" classify --json "$walk" >"$tmp/walk.json" 2>"$tmp/err.txt"
[ $? -eq 1 ] || fail "classify of a tree with an unreadable directory did not exit 1"
grep -q "$walk/b: cannot read directory" "$tmp/err.txt" || fail "unreadable directory: $(cat "$tmp/err.txt")"
[ "$(grep -c '"top"' "$tmp/walk.json")" -eq 2 ] && grep -q "$walk/c/dress.png" "$tmp/walk.json" ||
    fail "the walk did not go on past the unreadable directory: $(cat "$tmp/walk.json")"
chmod 755 "$walk/b" && rm -rf "$walk"

# A folder walk takes WebP files, in any case.
mkdir -p "$tmp/webp_walk"
cp "$golden/../fixtures/webp/lossy.webp" "$tmp/webp_walk/a.webp"
cp "$golden/../fixtures/webp/animated.webp" "$tmp/webp_walk/B.WEBP"
"$damamba" classify -k 1 "$tmp/webp_walk" >"$tmp/out.txt" 2>"$tmp/err.txt" || fail "classify WebP: $(cat "$tmp/err.txt")"
grep -q "^classified 2 images" "$tmp/err.txt" || fail "the walk did not take both WebP files: $(cat "$tmp/err.txt")"

# eval over a folder with one sub-folder per class, in class order 0..9.
i=0
for c in t-shirt trouser pullover dress coat sandal shirt sneaker bag ankle-boot; do
    mkdir -p "$tmp/folder/$i" && cp "$samples/$c.png" "$tmp/folder/$i/"
    i=$((i + 1))
done
"$damamba" eval -q "$tmp/folder" 2>"$tmp/err.txt" | tail -n 1 | grep -qx "top1=1.0000 top5=1.0000 n=10" ||
    fail "eval over a folder"
grep -q "warning: 10 of 10 folder names are not class names" "$tmp/err.txt" || fail "no warning for numbered folders"

# Folders named after the classes, listed in another order than the
# classes': each gets its own class; --per-class reports each.
for c in bag coat dress pullover sandal shirt sneaker t-shirt trouser; do
    mkdir -p "$tmp/named/$c" && cp "$samples/$c.png" "$tmp/named/$c/"
done
mkdir -p "$tmp/named/Ankle_Boot" && cp "$samples/ankle-boot.png" "$tmp/named/Ankle_Boot/"
"$damamba" eval --per-class "$tmp/named" >"$tmp/eval.txt" 2>"$tmp/err.txt" || fail "eval over named folders"
tail -n 1 "$tmp/eval.txt" | grep -qx "top1=1.0000 top5=1.0000 n=10" || fail "eval over named folders: $(tail -n 1 "$tmp/eval.txt")"
grep -q warning "$tmp/err.txt" && fail "warning for folders named after the classes"
grep -qx "class 9 n=1 top1=1.0000 top5=1.0000 Ankle boot" "$tmp/eval.txt" || fail "no per-class line for Ankle boot"
[ "$(grep -c '^class ' "$tmp/eval.txt")" -eq 10 ] || fail "not 10 per-class lines"
grep -q "^evaluated 10 images in [0-9.]* s ([0-9.]* images/s)$" "$tmp/err.txt" || fail "eval ends without its rate"
mkdir -p "$tmp/named/extra" && cp "$samples/bag.png" "$tmp/named/extra/"
"$damamba" eval -q "$tmp/named" >/dev/null 2>"$tmp/err.txt" && fail "eval with 11 folders for 10 classes succeeded"
grep -q "11 class folders but the model only 10 classes" "$tmp/err.txt" || fail "no error for 11 folders"

# eval over the test set reaches PyTorch's accuracy (in the file's metadata).
want=$(head -c 2000 "$fmnist" | grep -ao '"torch_test_accuracy":"[0-9.]*"' | grep -o '[0-9]\.[0-9]*')
last=$("$damamba" eval -q "$fmnist" | tail -n 1)
echo "eval $fmnist: $last (PyTorch top1 $want)"
echo "$last" | grep -qx "top1=$want top5=0\.[0-9]* n=10000" || fail "eval on the test set: '$last'"

# preprocess and features write tensor files of the right size.
"$damamba" preprocess "$samples/bag.png" -o "$tmp/bag.safetensors" || fail "preprocess"
head -c 200 "$tmp/bag.safetensors" | grep -q '"image":{"dtype":"F32","shape":\[1,28,28\]' || fail "preprocess shape"
"$damamba" features --size 64x96 "$samples/bag.png" -o "$tmp/feat.safetensors" || fail "features"
head -c 400 "$tmp/feat.safetensors" | grep -q '"stage3":{"dtype":"F32","shape":\[1,128,2,3\]' || fail "features shape"
# features of many images: one tensor file each, named after the image.
"$damamba" features -q --size 32x32 -d "$tmp/feats" "$samples" >/dev/null || fail "features -d"
[ "$(ls "$tmp/feats" | wc -l)" -eq 10 ] || fail "features -d wrote $(ls "$tmp/feats" | wc -l) files, not 10"
head -c 400 "$tmp/feats/sneaker.safetensors" |
    grep -q "{\"__metadata__\":{\"file\":\"$samples/sneaker.png\"},\"stage0\":{\"dtype\":\"F32\",\"shape\":\[1,32,8,8\]" ||
    fail "features -d: sneaker's file"
cmp -s "$tmp/feats/bag.safetensors" "$tmp/feats/coat.safetensors" && fail "features -d: bag and coat alike"
echo "$samples/bag.png" | "$damamba" features -q -d "$tmp/feats2" @- "$samples/bag.png" 2>"$tmp/err.txt"
[ $? -eq 1 ] || fail "features -d with two images named bag did not exit 1"
grep -q "the output $tmp/feats2/bag.safetensors is already an output of this run" "$tmp/err.txt" ||
    fail "features -d: no error for the second bag"
expect 2 "-o takes one image; -d DIR takes several" "$damamba" features -o "$tmp/x.safetensors" "$samples/bag.png" \
    "$samples/coat.png"
expect 2 "-o FILE or -d DIR is needed" "$damamba" features "$samples/bag.png"
expect 2 "-o and -d exclude each other" "$damamba" features -o "$tmp/x.safetensors" -d "$tmp/x" "$samples/bag.png"
expect 2 "one image at a time" "$damamba" preprocess "$samples/bag.png" "$samples/coat.png" -o "$tmp/x"
"$damamba" preprocess "$tmp/missing.png" -o "$tmp/x.safetensors" 2>/dev/null && fail "preprocess of a missing file succeeded"

# segment: a palette PNG per image, an overlay, JSON class shares that add
# up to 1, a bad file reported and skipped with exit status 1.
seg_model="$golden/upernet_micro.pth"
"$damamba" segment -q -m "$seg_model" --mode whole --overlay --json -o "$tmp" "$golden/seg_small.png" \
    "$tmp/missing.png" >"$tmp/seg.json" 2>/dev/null
status=$?
[ "$status" -eq 1 ] || fail "segment with a missing file exited $status, not 1"
[ -s "$tmp/seg_small_seg.png" ] && [ -s "$tmp/seg_small_overlay.png" ] || fail "segment wrote no PNGs"
head -c 30 "$tmp/seg_small_seg.png" | grep -aq 'IHDR' || fail "segment: not a PNG"
grep -q '"error"' "$tmp/seg.json" || fail "segment: no JSON error line for the missing file"
shares=$(grep '"width": 101, "height": 75' "$tmp/seg.json" | grep -o '"share": [0-9.e-]*' | cut -d' ' -f2 |
    awk '{ s += $1 } END { printf "%.3f", s }')
[ "$shares" = "1.000" ] || fail "segment: class shares add up to '$shares'"
ls "$tmp" | grep -q '\.tmp' && fail "segment left temporary files"
# an output path over PATH_MAX: the file fails with that reason, in the JSON too
long_dir="$tmp"
while [ ${#long_dir} -lt 4085 ]; do long_dir="$long_dir/."; done
"$damamba" segment -q -m "$seg_model" --mode whole --json -o "$long_dir" "$golden/seg_small.png" \
    >"$tmp/seg_long.json" 2>"$tmp/seg_long.err"
[ $? -eq 1 ] || fail "segment to an over-long output path did not exit 1"
grep -q 'seg_small.png: the output path in .* is too long' "$tmp/seg_long.err" ||
    fail "segment: no error for the over-long output path: $(cat "$tmp/seg_long.err")"
grep -q '"error": ".*seg_small.png: the output path in .* is too long"' "$tmp/seg_long.json" ||
    fail "segment: the JSON error is not the over-long path's: $(cat "$tmp/seg_long.json")"
"$damamba" segment -q -m "$seg_model" --mode slide --crop 256 --stride 171 -o "$tmp" "$golden/seg_small.png" ||
    fail "segment in slide mode"
"$damamba" segment -q -o "$tmp" "$golden/seg_small.png" 2>/dev/null && fail "segment without a model succeeded"
"$damamba" segment -q -m "$golden/micro.pth" -o "$tmp" "$golden/seg_small.png" 2>/dev/null &&
    fail "segment with a classifier succeeded"

# --backend: the commands that run a model on a workspace of their own take
# it and refuse what is not a backend, and cpu is the default.  Whether
# cuda can run here, compare tells (it asks before loading anything): where
# it cannot, each command says why in one line before any work and exits
# 1, printing no result or summary and writing no file; where it can, run
# writes its outputs (the networks on the GPU are test_detect's and
# test_seg's).
for cmd in classify segment detect run eval bench; do
    "$damamba" help "$cmd" | grep -q -- "--backend B" || fail "$cmd --help does not list --backend"
    expect 2 "--backend expects cpu or cuda, got 'tpu'" "$damamba" "$cmd" --backend tpu
done
"$damamba" run -m "$micro_pth" --backend cpu -i "$tmp/micro_in.safetensors" -o "$tmp/cpu.safetensors" ||
    fail "run --backend cpu"
cmp -s "$tmp/plain.safetensors" "$tmp/cpu.safetensors" || fail "run --backend cpu differs from run"
no_cuda=$("$damamba" compare --synthetic 2>&1 >/dev/null | sed -n 's/^damamba: cuda backend: //p')
# refused COMMAND...: exits 1 with the one line "cuda backend: REASON",
# prints nothing on stdout and leaves $tmp/cuda empty.
refused() {
    "$@" >"$tmp/refused.out" 2>"$tmp/refused.err"
    status=$?
    [ "$status" -eq 1 ] || fail "$* exited $status, not 1"
    [ "$(cat "$tmp/refused.err")" = "damamba: cuda backend: $no_cuda" ] || fail "$*: stderr is: $(cat "$tmp/refused.err")"
    [ -s "$tmp/refused.out" ] && fail "$*: printed $(cat "$tmp/refused.out")"
    [ -z "$(ls -A "$tmp/cuda")" ] || fail "$*: wrote $(ls -A "$tmp/cuda")"
    rm -rf "$tmp/cuda" && mkdir "$tmp/cuda"
}
if [ -n "$no_cuda" ]; then
    mkdir "$tmp/cuda"
    echo '{"images": [{"file_name": "coffee.png", "id": 1}]}' >"$tmp/coffee_ann.json"
    refused "$damamba" compare --synthetic
    refused "$damamba" classify --backend cuda "$samples"
    refused "$damamba" run -m "$micro_pth" --backend cuda -i "$tmp/micro_in.safetensors" -o "$tmp/cuda/run.safetensors"
    refused "$damamba" segment -m "$seg_model" --backend cuda --overlay --json -o "$tmp/cuda/seg/out" \
        "$golden/seg_small.png"
    refused "$damamba" detect -m "$golden/maskrcnn_micro.pth" --backend cuda --json --draw -o "$tmp/cuda/drawn" \
        --coco-results "$tmp/cuda/results.json" --coco-annotations "$tmp/coffee_ann.json" "$golden/coffee.png"
    refused "$damamba" eval --backend cuda "$fmnist"
    refused "$damamba" eval --task seg -m "$seg_model" --backend cuda "$golden/../fixtures/seg_eval"
    refused "$damamba" eval --task det -m "$golden/maskrcnn_micro.pth" --backend cuda \
        --coco-annotations "$tmp/coffee_ann.json" "$golden"
    refused "$damamba" bench --backend cuda -n 1
    refused "$damamba" bench --task det --backend cuda -n 1
else
    "$damamba" run -m "$micro_pth" --backend cuda -i "$tmp/micro_in.safetensors" -o "$tmp/cuda.safetensors" ||
        fail "run --backend cuda"
    head -c 600 "$tmp/cuda.safetensors" | grep -q '"logits":{"dtype":"F32","shape":\[1,10\]' ||
        fail "run --backend cuda output shape"
fi

# One corrupt image of two: it is reported, the other's results are
# written, the closing line counts the one that succeeded and the one that
# failed, and the exit status is 1.
mkdir "$tmp/pair" "$tmp/pair_out"
cp "$golden/seg_small.png" "$tmp/pair/good.png"
head -c 200 "$golden/seg_small.png" >"$tmp/pair/bad.png"
# pair COMMAND VERB ARGS...: COMMAND over the pair as above.
pair() {
    cmd=$1 verb=$2
    shift 2
    "$damamba" "$cmd" "$@" "$tmp/pair/good.png" "$tmp/pair/bad.png" >"$tmp/pair.out" 2>"$tmp/pair.err"
    status=$?
    [ "$status" -eq 1 ] || fail "$cmd with a corrupt image exited $status, not 1"
    grep -q "^damamba: $tmp/pair/bad.png: corrupt PNG" "$tmp/pair.err" || fail "$cmd: bad.png not reported: $(cat "$tmp/pair.err")"
    grep -q "^$verb 1 image in [0-9.]* s ([0-9.]* images/s), 1 failed$" "$tmp/pair.err" ||
        fail "$cmd: no '$verb 1 image ..., 1 failed' in: $(cat "$tmp/pair.err")"
}
pair segment segmented -m "$seg_model" --mode whole -o "$tmp/pair_out"
[ "$(ls "$tmp/pair_out")" = "good_seg.png" ] || fail "segment of the pair wrote: $(ls "$tmp/pair_out")"
pair detect detected -m "$golden/maskrcnn_micro.pth" --draw -o "$tmp/pair_out"
grep -q "^$tmp/pair/good.png: [0-9]* objects\?$" "$tmp/pair.out" || fail "detect of the pair: $(cat "$tmp/pair.out")"
[ -s "$tmp/pair_out/good.png" ] && [ ! -e "$tmp/pair_out/bad.png" ] || fail "detect of the pair drew: $(ls "$tmp/pair_out")"
# A drawing that cannot be written (a directory holds its name): reported,
# the detections still printed, the directory untouched, exit status 1.
mkdir -p "$tmp/blocked/good.png/kept"
"$damamba" detect -m "$golden/maskrcnn_micro.pth" --draw -o "$tmp/blocked" "$tmp/pair/good.png" \
    >"$tmp/blocked.out" 2>"$tmp/blocked.err"
[ $? -eq 1 ] || fail "detect with a drawing that cannot be written did not exit 1"
grep -q "^$tmp/pair/good.png: [0-9]* objects\?$" "$tmp/blocked.out" || fail "detect, drawing blocked: $(cat "$tmp/blocked.out")"
grep -q "good.png" "$tmp/blocked.err" || fail "detect, drawing blocked, not reported: $(cat "$tmp/blocked.err")"
[ "$(ls -A "$tmp/blocked")" = "good.png" ] && [ -d "$tmp/blocked/good.png/kept" ] ||
    fail "detect, drawing blocked, left: $(ls -AR "$tmp/blocked")"
# Standard output that cannot be written (a full device, closed): the
# command says so and exits 1; a closed stdout's number is not handed to
# an output file, which holds its tensor alone.
for cmd in "classify" "classify --json" "eval -q"; do
    target="$samples/bag.png"
    [ "$cmd" = "eval -q" ] && target="$fmnist"
    $damamba $cmd "$target" >/dev/full 2>"$tmp/full.err"
    [ $? -eq 1 ] && grep -q "cannot write to standard output" "$tmp/full.err" ||
        fail "$cmd >/dev/full: $(cat "$tmp/full.err")"
    $damamba $cmd "$target" >&- 2>"$tmp/full.err"
    [ $? -eq 1 ] && grep -q "cannot write to standard output" "$tmp/full.err" || fail "$cmd >&-: $(cat "$tmp/full.err")"
done
"$damamba" preprocess "$samples/bag.png" -o "$tmp/closed_stdout.safetensors" >&- ||
    fail "preprocess with stdout closed"
"$damamba" run -i "$tmp/closed_stdout.safetensors" -o "$tmp/closed_run.safetensors" >/dev/null 2>&1 ||
    fail "the tensor preprocess wrote with stdout closed does not read back"
# Outputs named after their inputs never replace a file the run reads or
# an output it wrote: the image is reported and skipped (exit 1), the
# file left as it was; a single output that is an input is refused (2).
mkdir -p "$tmp/own/src" "$tmp/own/out"
cp "$tmp/pair/good.png" "$tmp/own/src/x.png"
cp "$tmp/pair/good.png" "$tmp/own/out/x.png"
cp "$tmp/pair/good.png" "$tmp/own/out/y.png"
cp "$tmp/pair/good.png" "$tmp/own/out/y_seg.png"
cp "$samples/bag.png" "$tmp/own/out/a.safetensors"
cp "$tmp/own/out/x.png" "$tmp/own/kept.png"
expect 1 "src/x.png: the output $tmp/own/out/x.png is one of this run's inputs" "$damamba" detect -q \
    -m "$golden/maskrcnn_micro.pth" --draw -o "$tmp/own/out" "$tmp/own/src/x.png" "$tmp/own/out/x.png"
cmp -s "$tmp/own/out/x.png" "$tmp/own/kept.png" || fail "detect --draw replaced an input"
expect 1 "y.png: the output $tmp/own/out/y_seg.png is one of this run's inputs" "$damamba" segment -q \
    -m "$seg_model" --mode whole -o "$tmp/own/out" "$tmp/own/out/y.png" "$tmp/own/out/y_seg.png"
cmp -s "$tmp/own/out/y_seg.png" "$tmp/own/kept.png" || fail "segment replaced an input"
[ -s "$tmp/own/out/y_seg_seg.png" ] || fail "segment skipped more than the image whose output is an input"
expect 1 "a.safetensors: the output $tmp/own/out/a.safetensors is one of this run's inputs" "$damamba" features -q \
    -d "$tmp/own/out" "$tmp/own/out/a.safetensors"
cmp -s "$tmp/own/out/a.safetensors" "$samples/bag.png" || fail "features -d replaced an input"
echo '{"images": [{"file_name": "x.png", "id": 1}]}' >"$tmp/own/ann.json"
cp "$tmp/own/ann.json" "$tmp/own/ann_kept.json"
expect 2 "the output $tmp/own/ann.json is one of this run's inputs" "$damamba" detect -q -m "$golden/maskrcnn_micro.pth" \
    --coco-annotations "$tmp/own/ann.json" --coco-results "$tmp/own/ann.json" "$tmp/own/src/x.png"
cmp -s "$tmp/own/ann.json" "$tmp/own/ann_kept.json" || fail "--coco-results replaced the annotation file"
# An output spelled two ways is still one file: the drawing is refused
# where the results go.
mkdir -p "$tmp/own/drawn"
expect 1 "x.png: the output $tmp/own/drawn/x.png is already an output of this run" "$damamba" detect -q \
    -m "$golden/maskrcnn_micro.pth" --draw -o "$tmp/own/drawn" --coco-annotations "$tmp/own/ann.json" \
    --coco-results "$tmp/own/drawn//x.png" "$tmp/own/src/x.png"
[ -e "$tmp/own/drawn/x.png" ] && fail "detect wrote its drawing or its results where the other goes"
# An image read from standard input is an input too.
expect 2 "the output is the input file -" sh -c '"$1" preprocess - -o "$2" <"$2"' sh "$damamba" "$tmp/own/kept.png"
cmp -s "$tmp/own/kept.png" "$tmp/own/out/x.png" || fail "preprocess - -o replaced the file on standard input"
# Results of a run where every image failed do not replace earlier ones.
echo "earlier results" >"$tmp/own/res.json"
expect 1 "res.json: not written: no image was detected" "$damamba" detect -q -m "$golden/maskrcnn_micro.pth" \
    --coco-annotations "$tmp/own/ann.json" --coco-results "$tmp/own/res.json" "$tmp/pair/bad.png"
[ "$(cat "$tmp/own/res.json")" = "earlier results" ] || fail "--coco-results of no image replaced the file"
# A run ended by a signal (Ctrl-C, kill, a reader that went away) leaves
# the earlier results and no temporary file, and ends by that signal.
for i in $(seq 50); do echo "$tmp/own/src/x.png"; done >"$tmp/own/many"
"$damamba" detect -q -m "$golden/maskrcnn_micro.pth" --coco-annotations "$tmp/own/ann.json" \
    --coco-results "$tmp/own/res.json" "@$tmp/own/many" >/dev/null &
pid=$!
for i in $(seq 200); do ls "$tmp/own/res.json.tmp."* >/dev/null 2>&1 && break; sleep 0.05; done
kill -TERM $pid
status=0
wait $pid || status=$?
[ $status = 143 ] || fail "detect ended by SIGTERM: exit status $status, not 143"
status=$( ("$damamba" detect -q -m "$golden/maskrcnn_micro.pth" --json --coco-annotations "$tmp/own/ann.json" \
    --coco-results "$tmp/own/res.json" "@$tmp/own/many"; echo $? >"$tmp/own/status") | head -c 10 >/dev/null;
    cat "$tmp/own/status")
[ "$status" = 141 ] || fail "detect writing to a closed pipe: exit status $status, not 141 (SIGPIPE)"
ls "$tmp/own/res.json.tmp."* >/dev/null 2>&1 && fail "a signal left the results' temporary file: $(ls "$tmp/own")"
[ "$(cat "$tmp/own/res.json")" = "earlier results" ] || fail "a run ended by a signal replaced the results"
# With SIGPIPE ignored, a reader that went away ends the run too: the
# write fails with EPIPE, the run stops after that image or batch (the
# closing line counts them) and exits 1; detect writes no results.
for i in $(seq 100); do ls "$samples"/*.png; done >"$tmp/own/many_samples"
# closed_pipe NAME TOTAL VERB COMMAND...: COMMAND's output read for one byte.
closed_pipe() {
    name=$1 total=$2 verb=$3
    shift 3
    status=$( (trap '' PIPE; "$@" 2>"$tmp/own/pipe.err"; echo $? >"$tmp/own/status") | head -c 1 >/dev/null
        cat "$tmp/own/status")
    [ "$status" = 1 ] || fail "$name to a closed pipe, SIGPIPE ignored: exit status $status, not 1"
    grep -q "cannot write to standard output: Broken pipe" "$tmp/own/pipe.err" ||
        fail "$name to a closed pipe, SIGPIPE ignored: $(cat "$tmp/own/pipe.err")"
    count=$(sed -n "s/^$verb \([0-9]*\) images* in .*/\1/p" "$tmp/own/pipe.err")
    [ -n "$count" ] && [ "$count" -lt "$total" ] ||
        fail "$name went on after its reader went away: $(cat "$tmp/own/pipe.err")"
}
closed_pipe classify "$(wc -l <"$tmp/own/many_samples")" classified "$damamba" classify "@$tmp/own/many_samples"
closed_pipe detect 50 detected "$damamba" detect -m "$golden/maskrcnn_micro.pth" --json \
    --coco-annotations "$tmp/own/ann.json" --coco-results "$tmp/own/res.json" "@$tmp/own/many"
[ "$(cat "$tmp/own/res.json")" = "earlier results" ] || fail "a run cut short by a closed pipe replaced the results"
mkdir "$tmp/own/seg_src"
for i in $(seq 20); do cp "$tmp/pair/good.png" "$tmp/own/seg_src/$i.png"; done
ls "$tmp/own/seg_src"/*.png >"$tmp/own/many_seg"
closed_pipe segment 20 segmented "$damamba" segment -m "$seg_model" --mode whole --json -o "$tmp/own/seg" \
    "@$tmp/own/many_seg"
expect 2 "--mode whole has none" "$damamba" segment -m "$seg_model" --mode whole --crop 256 "$tmp/pair/good.png"
# The output directory of segment, detect --draw and features -d: created
# with its parents when missing, refused when a file holds its name.
"$damamba" segment -q -m "$seg_model" --mode whole -o "$tmp/new_seg/deeper//still" "$tmp/pair/good.png" ||
    fail "segment into a missing directory"
[ -s "$tmp/new_seg/deeper/still/good_seg.png" ] || fail "segment did not create its directory and its parents"
# ... and only once the model is loaded and segments: a run refused before
# creates nothing.
expect 1 "no_such.pth" "$damamba" segment -m "$tmp/no_such.pth" -o "$tmp/unmade/a" "$tmp/pair/good.png"
expect 1 "not a segmentation model" "$damamba" segment -m "$micro_pth" -o "$tmp/unmade/b" "$tmp/pair/good.png"
[ -e "$tmp/unmade" ] && fail "a refused segment created its output directory"
: >"$tmp/not_dir"
expect 1 "not_dir: not a directory" "$damamba" segment -m "$seg_model" -o "$tmp/not_dir" "$tmp/pair/good.png"
expect 1 "not_dir/below: cannot create the directory: Not a directory" "$damamba" features \
    -d "$tmp/not_dir/below" "$tmp/pair/good.png"
expect 2 "--coco-annotations is for --task det" "$damamba" eval --coco-annotations "$tmp/own/ann.json" "$tmp/pair"
expect 2 "eval --task det needs --coco-annotations" "$damamba" eval --task det -m "$golden/maskrcnn_micro.pth" "$tmp/pair"
expect 2 "detect needs a detection model (-m)" "$damamba" detect "$tmp/pair/good.png"
expect 1 "not_dir: not a directory" "$damamba" detect -m "$golden/maskrcnn_micro.pth" --draw -o "$tmp/not_dir" \
    "$tmp/pair/good.png"
expect 1 "not_dir: not a directory" "$damamba" features -d "$tmp/not_dir" "$tmp/pair/good.png"
expect 2 "give one input: -i FILE, IMAGE or --synthetic" "$damamba" compare --synthetic "$samples/bag.png"
expect 2 "-b and -s shape the --synthetic images" "$damamba" compare -b 2 "$samples/bag.png"
# An option of the other one of preprocess and features is named.
for opt in "--threads 2" --quiet "--output-dir $tmp/pre_dir"; do
    expect 2 "preprocess does not take ${opt%% *} (features does)" "$damamba" preprocess $opt "$samples/bag.png" \
        -o "$tmp/x.safetensors"
done
for opt in "--crop-fraction 0.5" "--pipeline coco" "--ratio 2" --flip; do
    expect 2 "features does not take ${opt%% *} (preprocess does)" "$damamba" features $opt "$samples/bag.png" \
        -o "$tmp/x.safetensors"
done
[ -e "$tmp/pre_dir" ] || [ -e "$tmp/x.safetensors" ] && fail "a refused option left an output"
expect 2 "bench --task det does not take --batch" "$damamba" bench --task det -b 8 -n 1
expect 2 "bench --task det does not take --size" "$damamba" bench --task det -s 64 -n 1
expect 2 "--mean expects 1 or 3 comma-separated numbers, got '1e39'" "$damamba" classify --mean 1e39 "$samples/bag.png"
expect 2 "channel 0: mean 0.286 and std 9.99995e-41 (--mean, --std or the model's) do not give finite values" \
    "$damamba" classify --std 1e-40 "$samples/bag.png"
expect 2 "-o DIR is where --draw writes: give --draw too" "$damamba" detect -m "$golden/maskrcnn_micro.pth" \
    -o "$tmp/undrawn" "$tmp/pair/good.png"
[ -f "$tmp/not_dir" ] && [ ! -s "$tmp/not_dir" ] || fail "a refused output directory's file was changed"
# segment and detect read images on standard input ('-', named stdin) and
# lists on it ('@-'), as classify does.
mkdir -p "$tmp/stdin_out"
"$damamba" segment -q -m "$seg_model" --mode whole -o "$tmp/stdin_out" - <"$tmp/pair/good.png" ||
    fail "segment of standard input"
[ -s "$tmp/stdin_out/stdin_seg.png" ] || fail "segment of standard input wrote: $(ls "$tmp/stdin_out")"
echo "$tmp/pair/good.png" | "$damamba" detect -q -m "$golden/maskrcnn_micro.pth" --draw -o "$tmp/stdin_out" @- \
    >"$tmp/stdin_det.out" || fail "detect of a list on standard input"
grep -q "^$tmp/pair/good.png: [0-9]* objects\?$" "$tmp/stdin_det.out" && [ -s "$tmp/stdin_out/good.png" ] ||
    fail "detect of a list on standard input: $(cat "$tmp/stdin_det.out")"
# Class names a checkpoint may carry (metadata "classes"): UTF-8, control
# characters and an escape sequence.  The drawing's font has printable
# ASCII only (other bytes drawn as '?'); text output escapes control
# characters, JSON writes the names as they are.
python3 - "$golden/maskrcnn_micro.safetensors" "$tmp/odd_names.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
header["__metadata__"]["classes"] = "caf\u00e9,\u65e5\u672c,a\u0001b,\u001b]0;x\u0007,\u007f"
raw = json.dumps(header).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
PY
"$damamba" detect -m "$tmp/odd_names.safetensors" --score-thr 0 --draw -o "$tmp/odd_drawn" "$tmp/pair/good.png" \
    >"$tmp/odd.out" 2>"$tmp/odd.err" || fail "detect with odd class names: $(cat "$tmp/odd.err")"
[ -s "$tmp/odd_drawn/good.png" ] || fail "detect with odd class names drew nothing"
grep -q '  \(a\\x01b\|\\x1b]0;x\\x07\|\\x7f\) ' "$tmp/odd.out" ||
    fail "detect with odd class names: no escaped name in: $(cat "$tmp/odd.out")"
tr -d '\n' <"$tmp/odd.out" | LC_ALL=C grep -q '[[:cntrl:]]' && fail "detect printed control characters: $(cat "$tmp/odd.out")"
"$damamba" detect -m "$tmp/odd_names.safetensors" --score-thr 0 --json "$tmp/pair/good.png" >"$tmp/odd.json" ||
    fail "detect --json with odd class names"
grep -q '"label": "a\\u0001b"' "$tmp/odd.json" || fail "detect --json with odd class names: $(head -c 300 "$tmp/odd.json")"
# A model whose preprocessing metadata crops more than the pixel limit is
# refused before any image is read (its batch was allocated first, and
# the error said "out of memory").
python3 - "$golden/micro.safetensors" "$tmp/big_crop.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
header.setdefault("__metadata__", {})["preprocess"] = json.dumps({"resize": 1, "crop": 30000})
raw = json.dumps(header).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
PY
expect 2 "the model's preprocessing crops 30000 x 30000 pixels, over the limit" \
    "$damamba" classify -m "$tmp/big_crop.safetensors" "$samples/bag.png"
# A scan map whose picture is over what the PNG writer can count is refused
# before anything is drawn or written (it overflowed the writer's int).
python3 - "$golden/micro.safetensors" "$tmp/m448.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
header.setdefault("__metadata__", {})["preprocess"] = json.dumps(
    {"resize": 448, "crop": 448, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3})
raw = json.dumps(header).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
PY
expect 1 "the model sees 448x448 pixels: at --scale 64 the picture would have 822083584, over the" \
    "$damamba" scanmap -m "$tmp/m448.safetensors" --scale 64 "$golden/chelsea.png" -o "$tmp/huge_map.png"
[ -e "$tmp/huge_map.png" ] && fail "scanmap left a file for a picture it refused"
# info counts MACs at the size the model runs at: its metadata's crop, else
# 224x224; --size overrides it.
"$damamba" info -m "$tmp/m448.safetensors" | grep -qx "macs  *[0-9.]* G at 448x448" ||
    fail "info of a model cropping 448: $("$damamba" info -m "$tmp/m448.safetensors" | tail -1)"
"$damamba" info -m "$golden/micro.safetensors" | grep -qx "macs  *[0-9.]* G at 224x224" || fail "info of micro"
"$damamba" info | grep -qx "macs  *[0-9.]* G at 28x28" || fail "info of the built-in model"
"$damamba" info -m "$tmp/m448.safetensors" --size 32x40 | grep -qx "macs  *[0-9.]* G at 32x40" || fail "info --size"
# A model of NaNs (every float weight): its JSON still parses, the
# probabilities and positions it has none for written as null.
python3 - "$golden/micro.safetensors" "$tmp/nan.safetensors" <<'PY'
import json, struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", data[:8])[0]
for name, t in json.loads(data[8:8 + n]).items():
    if name != "__metadata__" and t["dtype"] == "F32":
        begin, end = t["data_offsets"]
        data[8 + n + begin:8 + n + end] = struct.pack("<f", float("nan")) * ((end - begin) // 4)
open(sys.argv[2], "wb").write(data)
PY
"$damamba" classify -m "$tmp/nan.safetensors" --json "$samples/bag.png" >"$tmp/nan_top.json" ||
    fail "classify --json with a model of NaNs"
"$damamba" scanmap -m "$tmp/nan.safetensors" --json "$samples/bag.png" -o "$tmp/nan_map.json" ||
    fail "scanmap --json with a model of NaNs"
python3 - "$tmp/nan_top.json" "$tmp/nan_map.json" <<'PY' || fail "JSON of a model of NaNs"
import json, sys
top = json.loads(open(sys.argv[1]).read())["top"]
assert top and all(t["prob"] is None for t in top), top
points = json.loads(open(sys.argv[2]).read())["groups"][0]["points"]
assert points and all(p["x"] is None and p["y"] is None for p in points), points[:3]
PY
pair classify classified --json
[ "$(grep -c '"top"' "$tmp/pair.out")" -eq 1 ] || fail "classify of the pair: $(cat "$tmp/pair.out")"
pair features "extracted features of" -d "$tmp/pair_feats"
[ "$(ls "$tmp/pair_feats")" = "good.safetensors" ] || fail "features of the pair wrote: $(ls "$tmp/pair_feats")"
mkdir -p "$tmp/pair_eval/0" && cp "$tmp/pair/good.png" "$tmp/pair/bad.png" "$tmp/pair_eval/0/"
"$damamba" eval "$tmp/pair_eval" >"$tmp/pair.out" 2>"$tmp/pair.err"
[ $? -eq 1 ] || fail "eval with a corrupt image did not exit 1"
grep -q "^evaluated 1 image in [0-9.]* s ([0-9.]* images/s), 1 failed$" "$tmp/pair.err" ||
    fail "eval: no 'evaluated 1 image ..., 1 failed' in: $(cat "$tmp/pair.err")"
tail -n 1 "$tmp/pair.out" | grep -q " n=1$" || fail "eval of the pair: $(cat "$tmp/pair.out")"
# Nothing evaluated: an error, and no metrics line of zeros.
mkdir -p "$tmp/none_eval/0" && cp "$tmp/pair/bad.png" "$tmp/none_eval/0/"
expect 1 "$tmp/none_eval: no image could be evaluated" "$damamba" eval "$tmp/none_eval"
grep -q "top1=" "$tmp/expect.out" && fail "eval of no image printed metrics: $(cat "$tmp/expect.out")"
# A model without a classifier is named as such, not as one of 0 classes.
expect 1 "the model has no classification head" "$damamba" eval -m "$seg_model" "$tmp/pair_eval"
# A tensor dataset's image that cannot be preprocessed is named by its index.
python3 - "$tmp/wide_eval.safetensors" <<'PY'
import json, struct, sys
header = {"images": {"dtype": "U8", "shape": [2, 1, 9000], "data_offsets": [0, 18000]},
          "labels": {"dtype": "I64", "shape": [2], "data_offsets": [18000, 18016]}}
raw = json.dumps(header).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(raw)) + raw + bytes(18000) + struct.pack("<2q", 0, 1))
PY
expect 1 "wide_eval.safetensors: image 1: preprocess: resizing 9000 x 1" "$damamba" eval -b 1 "$tmp/wide_eval.safetensors"
expect 1 "$samples/bag.png: preprocess: resizing 28 x 28 gives 65536 x 65536" "$damamba" features \
    --size 65536x65536 -d "$tmp/huge_feats" "$samples/bag.png"

# A scan map works on a segmentation model as on a classifier.
"$damamba" scanmap -m "$seg_model" --stage 1 "$golden/seg_small.png" -o "$tmp/scan.png" && [ -s "$tmp/scan.png" ] ||
    fail "scanmap on a segmentation model"

# preprocess --pipeline ade20k: 75 x 101 fits (2048, 512) as 512 x 689.
"$damamba" preprocess --pipeline ade20k "$golden/seg_small.png" -o "$tmp/ade.safetensors" || fail "preprocess ade20k"
head -c 300 "$tmp/ade.safetensors" | grep -q '"img":{"dtype":"F32","shape":\[3,512,689\]' || fail "ade20k shape"
# Standard input, as for the other commands: the same tensors (their last
# 4,233,232 bytes; the metadata names the file).
"$damamba" preprocess --pipeline ade20k - -o "$tmp/ade_stdin.safetensors" <"$golden/seg_small.png" ||
    fail "preprocess --pipeline of standard input"
[ "$(tail -c 4233232 "$tmp/ade.safetensors" | cksum)" = "$(tail -c 4233232 "$tmp/ade_stdin.safetensors" | cksum)" ] ||
    fail "preprocess --pipeline of standard input: other tensors"
# --pipeline coco: into (1333, 800) the scale is 800 / 75, so 800 x 1077,
# padded to multiples of 32 as 800 x 1088.
"$damamba" preprocess --pipeline coco "$golden/seg_small.png" -o "$tmp/coco.safetensors" || fail "preprocess coco"
head -c 400 "$tmp/coco.safetensors" | grep -q '"img":{"dtype":"F32","shape":\[3,800,1088\]' || fail "coco shape"
"$damamba" preprocess --pipeline cityscapes "$golden/seg_small.png" -o "$tmp/x.safetensors" 2>/dev/null &&
    fail "an unknown pipeline was accepted"
# Those pipelines, segment and detect load images upright, as OpenCV loads
# them for mmseg and mmdet: seg_small.png tagged "turn a quarter clockwise"
# (an eXIf chunk) is 75 wide and 101 high, and ade20k scales it to 512 x 689.
python3 - "$golden/seg_small.png" "$tmp/tagged.png" <<'PY'
import struct, sys, zlib
png = open(sys.argv[1], "rb").read()
tiff = b"MM\0*" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0" * 4
chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
open(sys.argv[2], "wb").write(png[:33] + chunk + png[33:])
PY
"$damamba" preprocess --pipeline ade20k "$tmp/tagged.png" -o "$tmp/tagged.safetensors" || fail "preprocess tagged"
head -c 300 "$tmp/tagged.safetensors" | grep -q '"img":{"dtype":"F32","shape":\[3,689,512\]' ||
    fail "preprocess --pipeline ade20k did not turn the image upright"
"$damamba" segment -q -m "$seg_model" --mode whole --json -o "$tmp" "$tmp/tagged.png" |
    grep -q '"width": 75, "height": 101' || fail "segment did not turn the image upright"
"$damamba" detect -m "$golden/maskrcnn_micro.pth" --json "$tmp/tagged.png" |
    grep -q '"width": 75, "height": 101' || fail "detect did not turn the image upright"
# eval --task det takes that photo against annotations of the stored one
# (101 x 75), as mmdet evaluates it; other sizes are refused, and a set of
# which no image could be evaluated prints no metrics.
mkdir -p "$tmp/det_turned"
cp "$tmp/tagged.png" "$tmp/det_turned/"
echo '{"images": [{"id": 1, "file_name": "tagged.png", "width": 101, "height": 75}], "annotations": []}' \
    >"$tmp/det_turned/ann.json"
"$damamba" eval --task det -m "$golden/maskrcnn_micro.pth" --coco-annotations "$tmp/det_turned/ann.json" \
    "$tmp/det_turned" 2>"$tmp/det_turned.err" | tail -n 1 | grep -q ' n=1$' ||
    fail "eval --task det refused a photo turned by its EXIF tag"
grep -q "^evaluated 1 image in " "$tmp/det_turned.err" || fail "eval --task det's closing line: $(cat "$tmp/det_turned.err")"
echo '{"images": [{"id": 1, "file_name": "tagged.png", "width": 100, "height": 75}], "annotations": []}' \
    >"$tmp/det_turned/ann.json"
expect 1 "det_turned: no image could be evaluated" "$damamba" eval --task det -q -m "$golden/maskrcnn_micro.pth" \
    --coco-annotations "$tmp/det_turned/ann.json" "$tmp/det_turned"
grep -q "tagged.png: size differs from the annotation file's" "$tmp/expect.err" && ! grep -q mAP "$tmp/expect.out" ||
    fail "eval --task det of no evaluated image: $(cat "$tmp/expect.err")"
echo '{"images": [{"id": 1, "file_name": "tagged.png"}], "annotations": []}' >"$tmp/det_turned/ann.json"
expect 1 "tagged.png: the annotation file gives no width and height for it" "$damamba" eval --task det -q \
    -m "$golden/maskrcnn_micro.pth" --coco-annotations "$tmp/det_turned/ann.json" "$tmp/det_turned"

# run on a segmentation model writes the head's outputs ('input' of the
# golden file is 1 x 3 x 64 x 96).
"$damamba" run -m "$seg_model" -i "$golden/upernet_io.safetensors" -o "$tmp/run.safetensors" ||
    fail "run on a segmentation model"
head -c 600 "$tmp/run.safetensors" | grep -q '"seg_pred":{"dtype":"I64","shape":\[1,64,96\]' || fail "run: seg_pred"
# The slide options are usage errors where nothing slides: in whole mode,
# and on a model without a segmentation head.
expect 2 "--mode whole (the default) has none" "$damamba" run -m "$seg_model" -i "$golden/upernet_io.safetensors" \
    -o "$tmp/run2.safetensors" --crop 64
expect 2 "are for segmentation models; $micro_pth has no segmentation head" "$damamba" run -m "$micro_pth" \
    -i "$tmp/micro_in.safetensors" -o "$tmp/run2.safetensors" --mode slide
# run on a detection model takes what preprocess --pipeline coco writes and
# finds what detect finds in the same image.
"$damamba" preprocess --pipeline coco "$golden/coffee.png" -o "$tmp/coffee_coco.safetensors" &&
    "$damamba" run -m "$golden/maskrcnn_micro.pth" -i "$tmp/coffee_coco.safetensors" -o "$tmp/coffee_det.safetensors" ||
    fail "run on preprocess --pipeline coco output"
found=$("$damamba" detect -m "$golden/maskrcnn_micro.pth" --json "$golden/coffee.png" | grep -o '"score"' | wc -l)
head -c 800 "$tmp/coffee_det.safetensors" | grep -aq "\"det_scores\":{\"dtype\":\"F32\",\"shape\":\[$found\]" ||
    fail "run on preprocess --pipeline coco output: not the $found detections of detect"

# eval --task seg on a two-image ADE20K-layout set reproduces the metrics
# computed independently by make_seg_eval_fixture.py from mmseg's own
# predictions, with and without reduce_zero_label.
seg_eval="$golden/../fixtures/seg_eval"
got=$("$damamba" eval --task seg -q -m "$seg_model" "$seg_eval" | tail -n 1)
[ "$got" = "$(sed -n 1p "$seg_eval/expected.txt")" ] || fail "eval --task seg: '$got'"
got=$("$damamba" eval --task seg -q --backend cpu -m "$seg_model" "$seg_eval" | tail -n 1)
[ "$got" = "$(sed -n 1p "$seg_eval/expected.txt")" ] || fail "eval --task seg --backend cpu: '$got'"
got=$("$damamba" eval --task seg -q --no-reduce-zero-label -m "$seg_model" "$seg_eval" | tail -n 1)
[ "$got" = "$(sed -n 2p "$seg_eval/expected.txt")" ] || fail "eval --task seg --no-reduce-zero-label: '$got'"
"$damamba" eval --task seg -q --per-class -m "$seg_model" "$seg_eval" | grep -q "^7 *bed *0.5365" ||
    fail "eval --task seg --per-class"
"$damamba" eval --task seg -q -m "$seg_model" "$tmp" >/dev/null 2>&1 && fail "eval --task seg without images succeeded"
mkdir -p "$tmp/seg_empty/images/validation" "$tmp/seg_empty/annotations/validation"
expect 1 "seg_empty/images/validation: no images" "$damamba" eval --task seg -q -m "$seg_model" "$tmp/seg_empty"
grep -q "mIoU=" "$tmp/expect.out" && fail "eval --task seg of an empty dataset printed metrics"
# An option of another task is a usage error, not ignored.
expect 2 "eval --task cls does not take --mode" "$damamba" eval --mode slide "$fmnist"
expect 2 "eval --task cls does not take --no-reduce-zero-label" "$damamba" eval --no-reduce-zero-label "$fmnist"
expect 2 "eval --task seg does not take --batch" "$damamba" eval --task seg -b 2 -m "$seg_model" "$seg_eval"
expect 2 "eval --task seg does not take a preprocessing option" "$damamba" eval --task seg --size 64 \
    -m "$seg_model" "$seg_eval"
expect 2 "eval --task det does not take --ema" "$damamba" eval --task det --ema -m "$golden/maskrcnn_micro.pth" \
    --coco-annotations "$tmp/none.json" "$tmp"
expect 2 "eval --task det does not take --per-class" "$damamba" eval --task det --per-class \
    -m "$golden/maskrcnn_micro.pth" --coco-annotations "$tmp/none.json" "$tmp"
# Annotations that are not PNG files: a FIFO is refused at once (reading it
# waited for a writer forever), a cut PNG is named in the error.
mkdir -p "$tmp/seg_odd/images/validation" "$tmp/seg_odd/annotations/validation"
cp "$seg_eval/images/validation/"* "$tmp/seg_odd/images/validation/"
mkfifo "$tmp/seg_odd/annotations/validation/a.png"
head -c 100 "$seg_eval/annotations/validation/b.png" >"$tmp/seg_odd/annotations/validation/b.png"
expect 1 "validation/a.png: not a regular file" "$damamba" eval --task seg -q -m "$seg_model" "$tmp/seg_odd"
grep -q "validation/b.png: not a readable PNG annotation" "$tmp/expect.err" ||
    fail "eval --task seg with a cut annotation: $(cat "$tmp/expect.err")"
# A set where no image could be evaluated, or that is no set at all, is an
# error without metrics; one whose pixels are all ignored has mmseg's nan.
grep -q "seg_odd/images/validation: no image could be evaluated" "$tmp/expect.err" && ! grep -q mIoU "$tmp/expect.out" ||
    fail "eval --task seg where every image failed: $(cat "$tmp/expect.out" "$tmp/expect.err")"
expect 1 "seg_none: no directory images/validation in it" "$damamba" eval --task seg -q -m "$seg_model" "$tmp/seg_none"
mkdir -p "$tmp/seg_ignored/images/validation" "$tmp/seg_ignored/annotations/validation"
cp "$seg_eval/images/validation/a.png" "$tmp/seg_ignored/images/validation/"
python3 - "$tmp/seg_ignored/annotations/validation/a.png" <<'PY'
import struct, sys, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
w, h = 101, 75  # a.png's size; label 0 is ignored with reduce_zero_label
rows = b"".join(b"\0" + bytes(w) for _ in range(h))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
open(sys.argv[1], "wb").write(png + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY
got=$("$damamba" eval --task seg -q -m "$seg_model" "$tmp/seg_ignored" | tail -n 1)
[ "$got" = "mIoU=nan mAcc=nan aAcc=nan n=1" ] || fail "eval --task seg of ignored pixels only: '$got'"
# Images in folders under images/validation have their annotations at the
# same place under annotations/validation, as mmseg maps them: the set in
# two folders scores as it does flat.
mkdir -p "$tmp/seg_nested/images/validation/x" "$tmp/seg_nested/images/validation/y" \
    "$tmp/seg_nested/annotations/validation/x" "$tmp/seg_nested/annotations/validation/y"
cp "$seg_eval/images/validation/a.png" "$tmp/seg_nested/images/validation/x/"
cp "$seg_eval/images/validation/b.png" "$tmp/seg_nested/images/validation/y/"
cp "$seg_eval/annotations/validation/a.png" "$tmp/seg_nested/annotations/validation/x/"
cp "$seg_eval/annotations/validation/b.png" "$tmp/seg_nested/annotations/validation/y/"
got=$("$damamba" eval --task seg -q -m "$seg_model" "$tmp/seg_nested" | tail -n 1)
[ "$got" = "$(sed -n 1p "$seg_eval/expected.txt")" ] || fail "eval --task seg of nested folders: '$got'"
# Two images whose names differ in their extension alone would share one
# annotation: refused, before any is segmented.
cp "$seg_eval/images/validation/a.png" "$tmp/seg_nested/images/validation/x/a.jpg"
expect 1 "validation/x/a.png: the annotation of two images" "$damamba" eval --task seg -q -m "$seg_model" \
    "$tmp/seg_nested"
# A COCO annotation file that is a directory or a FIFO: refused at once.
mkdir "$tmp/ann_dir" && mkfifo "$tmp/ann_fifo"
for ann in ann_dir ann_fifo; do
    expect 1 "$ann: \(is a directory\|not a regular file\)" "$damamba" detect -m "$golden/maskrcnn_micro.pth" \
        --coco-annotations "$tmp/$ann" --coco-results "$tmp/res.json" "$golden/chelsea.png"
done

# eval refuses datasets it cannot score: no images, labels outside the
# model's classes, more class folders than the model has classes.
safetensors "$tmp/none.safetensors" '{"images":{"dtype":"U8","shape":[0,28,28],"data_offsets":[0,0]},"labels":{"dtype":"I64","shape":[0],"data_offsets":[0,0]}}'
expect 1 "holds no images" "$damamba" eval -q "$tmp/none.safetensors"
head -c 784 /dev/zero >"$tmp/pixels"
printf '\012\0\0\0\0\0\0\0' >"$tmp/label10"
printf '\377\377\377\377\377\377\377\377' >"$tmp/label-1"
one='{"images":{"dtype":"U8","shape":[1,28,28],"data_offsets":[0,784]},"labels":{"dtype":"I64","shape":[1],"data_offsets":[784,792]}}'
safetensors "$tmp/label10.safetensors" "$one" "$tmp/pixels" "$tmp/label10"
expect 1 "label 10 of image 0 is not a class of the model (0 to 9)" "$damamba" eval -q "$tmp/label10.safetensors"
safetensors "$tmp/label-1.safetensors" "$one" "$tmp/pixels" "$tmp/label-1"
expect 1 "label -1 of image 0 is not a class" "$damamba" eval -q "$tmp/label-1.safetensors"
mkdir -p "$tmp/empty-classes/a" "$tmp/empty-classes/b"
expect 1 "no images in the class sub-folders" "$damamba" eval -q "$tmp/empty-classes"
for i in 0 1 2 3 4 5 6 7 8 9 10; do mkdir -p "$tmp/eleven/$i" && cp "$samples/bag.png" "$tmp/eleven/$i/"; done
expect 1 "the data has 11 class folders but the model only 10 classes" "$damamba" eval -q "$tmp/eleven"

# An output is never one of the inputs, by any name, and an input named like
# a temporary file survives.
cp "$samples/bag.png" "$tmp/bag.png"
ln "$tmp/bag.png" "$tmp/bag-link.png"
expect 2 "the output is the input file" "$damamba" preprocess "$tmp/bag.png" -o "$tmp/bag-link.png"
expect 2 "the output is the input file" "$damamba" features "$tmp/bag.png" -o "$tmp/bag.png"
"$damamba" preprocess "$samples/bag.png" -o "$tmp/in.safetensors" || fail "preprocess for run"
expect 2 "the output is the input file" "$damamba" run -i "$tmp/in.safetensors" -o "$tmp/in.safetensors"
cmp -s "$tmp/bag.png" "$samples/bag.png" || fail "an input was overwritten"
"$damamba" convert "$(dirname "$samples")/damamba_fmnist.safetensors" "$tmp/m.safetensors.tmp" || fail "convert"
cp "$tmp/m.safetensors.tmp" "$tmp/m.copy"
"$damamba" convert "$tmp/m.safetensors.tmp" "$tmp/m.safetensors" || fail "convert from a file named OUT.tmp"
cmp -s "$tmp/m.safetensors.tmp" "$tmp/m.copy" || fail "convert destroyed its input OUT.tmp"
"$damamba" info -m "$tmp/m.safetensors" >/dev/null || fail "converted model does not load"
ls "$tmp" | grep -q '\.tmp\.' && fail "a temporary file was left behind"

# Folder walks visit each directory once: links back into the walk (two
# links to '.' once never finished) add nothing.  A FIFO among the images
# is refused without blocking; other files are reported.
mkdir -p "$tmp/loop/sub"
cp "$samples/bag.png" "$tmp/loop/sub/"
ln -s . "$tmp/loop/sub/self"
ln -s .. "$tmp/loop/sub/up"
ln -s sub "$tmp/loop/again"
echo notes >"$tmp/loop/notes.txt"
timeout 60 "$damamba" classify --json "$tmp/loop" >"$tmp/loop.json" 2>"$tmp/loop.err" || fail "classify over links"
[ "$(wc -l <"$tmp/loop.json")" -eq 1 ] || fail "classify over links gave $(wc -l <"$tmp/loop.json") lines, not 1"
grep -q "skipped 1 file without an image file name extension" "$tmp/loop.err" || fail "notes.txt not reported"
# A directory named again, or under one already named, adds nothing and is
# no error (it was reported as having no images).
for args in "$tmp/loop/sub $tmp/loop/sub/" "$tmp/loop $tmp/loop/sub" "$tmp/loop/sub $tmp/loop"; do
    # shellcheck disable=SC2086 # the paths are words
    "$damamba" classify --json $args >"$tmp/again.json" 2>"$tmp/again.err" || fail "classify $args: $(cat "$tmp/again.err")"
    [ "$(wc -l <"$tmp/again.json")" -eq 1 ] || fail "classify $args gave $(wc -l <"$tmp/again.json") lines, not 1"
done
mkdir -p "$tmp/linked/0"
cp "$samples/bag.png" "$tmp/linked/0/"
ln -s . "$tmp/linked/0/self"
timeout 60 "$damamba" eval -q "$tmp/linked" | tail -n 1 | grep -q "n=1$" || fail "eval counts a linked image twice"
mkdir -p "$tmp/fifo"
cp "$samples/bag.png" "$tmp/fifo/"
mkfifo "$tmp/fifo/pipe.png"
expect 1 "pipe.png: not a regular file" timeout 60 "$damamba" classify "$tmp/fifo"
grep -q "Bag (8)" "$tmp/expect.out" || fail "the image beside a FIFO was not classified"
# A list that is a directory, an empty list, an empty directory named like
# an image: errors, not silence.
expect 1 "cannot read list: Is a directory" "$damamba" classify "@$tmp/loop"
: >"$tmp/empty.txt"
expect 1 "no images in the list" "$damamba" classify "@$tmp/empty.txt"
mkdir "$tmp/folder.png"
expect 1 "folder.png: no images in the directory" "$damamba" classify "$tmp/folder.png"

# Usage errors exit 2, numbers that would wrap included, before any work.
for args in "--size 0" "--crop-fraction 0" "--std -1" "--mean 1,2" "--interpolation nearest" \
    "--size 4294967297" "--shard 4294967296/2" "--shard 1/0" "-k 0" "--crop-fraction 1e-300"; do
    # shellcheck disable=SC2086 # the options are words
    "$damamba" classify $args "$samples/bag.png" >/dev/null 2>&1
    status=$?
    [ "$status" -eq 2 ] || fail "classify $args exited $status, not 2"
done
# The shorter side a tiny fraction asks for is written in a few digits.
expect 2 "crop fraction 1e-300 resizes to a shorter side of 2.8e+301 pixels: no image" \
    "$damamba" classify --crop-fraction 1e-300 "$samples/bag.png"
expect 2 "crop fraction 0.001 resizes to a shorter side of 28000 pixels: no image" \
    "$damamba" classify --crop-fraction 0.001 "$samples/bag.png"
for size in 0x0 4294967297x5 5x; do
    expect 2 "--size expects HxW or N" "$damamba" features --size "$size" "$samples/bag.png" -o "$tmp/f.safetensors"
done
# Nothing is computed for images that failed: a zero-byte file with a huge
# input size once ran a 2 GB batch of nothing.
: >"$tmp/zero.png"
# Memory is capped at 1 GB: by ulimit, or where AddressSanitizer reserves
# its shadow memory, by its allocator.
if grep -qa __asan_init "$damamba"; then
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:max_allocation_size_mb=1000:allocator_may_return_null=1" \
        expect 1 "zero.png: empty file" "$damamba" classify --size 4096 "$tmp/zero.png"
else
    expect 1 "zero.png: empty file" sh -c "ulimit -v 1000000; \"\$0\" classify --size 4096 \"\$1\"" "$damamba" "$tmp/zero.png"
fi

# --size equal to the model's crop keeps the model's own resize: a model
# that resizes to 50 and crops 28 (28 / (28 / 50.0) is 49.999..., which
# floored to a resize of 49).
LC_ALL=C sed 's/\\"resize\\": 28/\\"resize\\": 50/' "$(dirname "$samples")/damamba_fmnist.safetensors" \
    >"$tmp/r50.safetensors"
"$damamba" preprocess -m "$tmp/r50.safetensors" "$samples/bag.png" -o "$tmp/r50_own.safetensors" &&
    "$damamba" preprocess -m "$tmp/r50.safetensors" --size 28 "$samples/bag.png" -o "$tmp/r50_size.safetensors" &&
    "$damamba" preprocess "$samples/bag.png" -o "$tmp/r28.safetensors" || fail "preprocess with a model of resize 50"
cmp -s "$tmp/r50_own.safetensors" "$tmp/r28.safetensors" && fail "the model of resize 50 preprocesses as the built-in one"
cmp -s "$tmp/r50_own.safetensors" "$tmp/r50_size.safetensors" || fail "--size 28 changed the model's resize of 50"

# Names reach the terminal with control characters escaped, and JSON
# output is valid UTF-8 whatever bytes a file name holds.
name=$(printf 'odd\377\033[31m\nname.png')
cp "$samples/bag.png" "$tmp/$name"
"$damamba" classify --json "$tmp/$name" >"$tmp/odd.json" || fail "classify an oddly named file"
iconv -f UTF-8 -t UTF-8 "$tmp/odd.json" >/dev/null 2>&1 || fail "JSON output is not valid UTF-8"
grep -q 'odd\\udcff\\u001b\[31m\\u000aname.png' "$tmp/odd.json" || fail "file name not escaped in JSON: $(cat "$tmp/odd.json")"
"$damamba" scanmap --json "$tmp/$name" >"$tmp/odd_map.json" || fail "scanmap an oddly named file"
iconv -f UTF-8 -t UTF-8 "$tmp/odd_map.json" >/dev/null 2>&1 || fail "scanmap's JSON is not valid UTF-8"
grep -q '"image": "[^"]*odd\\udcff\\u001b\[31m\\u000aname.png"' "$tmp/odd_map.json" ||
    fail "file name not escaped in scanmap's JSON: $(head -c 200 "$tmp/odd_map.json")"
"$damamba" classify "$tmp/$name" >"$tmp/odd.txt" || fail "classify an oddly named file, text"
LC_ALL=C grep -q 'odd.\\x1b\[31m\\x0aname.png$' "$tmp/odd.txt" || fail "file name not escaped in text: $(cat "$tmp/odd.txt")"
# A class name with an escape sequence in the model's metadata: "Trouser"
# becomes the 7 bytes \\u001b, which decode to ESC.
LC_ALL=C sed 's/"Trouser/"\\\\u001b/' "$(dirname "$samples")/damamba_fmnist.safetensors" >"$tmp/esc.safetensors"
"$damamba" classify -m "$tmp/esc.safetensors" -k 10 "$samples/trouser.png" >"$tmp/esc.txt" || fail "classify with ESC in a class"
grep -q '\\x1b' "$tmp/esc.txt" || fail "ESC in a class name not escaped: $(cat -v "$tmp/esc.txt")"
LC_ALL=C grep -q "$(printf '\033')" "$tmp/esc.txt" "$tmp/odd.txt" && fail "a raw ESC reached the output"

# bench --ops: per pass, DAMamba-F (16 blocks: depths 2, 2, 10, 2) calls
# exactly the operators its graph has: per block 7 products, 4 depthwise
# convolutions, 3 norms, a sampler and a scan; the stem's 4 and the
# downsamples' 3 convolutions, the 4 stage norms, the head's pool and
# product, the input and the logits.  Their shares of the pass (timed as a
# whole) add up to nearly all of it, and never to more.
"$damamba" bench -v F -s 64 -n 2 --ops >"$tmp/ops.txt" || fail "bench --ops"
awk '/^  entry /{on = 1; next} /^  \(outside\)/{on = 0} on {print $1, $2}' "$tmp/ops.txt" >"$tmp/ops_calls.txt"
printf '%s\n' "input 1.0" "output 1.0" "gemm 113.0" "conv3x3 7.0" "dwconv3x3 64.0" "layernorm 52.0" "sample 16.0" \
    "scan 16.0" "avg_pool 1.0" | cmp -s - "$tmp/ops_calls.txt" || fail "bench --ops entries and calls: $(cat "$tmp/ops.txt")"
awk '/^  entry /{on = 1; next} /^  \(outside\)/{on = 0} on {share += $4} END {exit !(share >= 90 && share <= 100.5)}' \
    "$tmp/ops.txt" || fail "bench --ops shares do not add up to the pass: $(cat "$tmp/ops.txt")"

[ "$failures" -eq 0 ] && echo "all CLI checks passed"
exit "$failures"
