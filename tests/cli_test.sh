#!/bin/sh
# cli_test.sh DAMAMBA SAMPLES_DIR FMNIST_TEST MICRO_PTH - the damamba command
# end to end: classify the bundled samples (each named after its class), JSON
# output, failure reporting and exit status, sharding, lists, eval over a
# folder and over the test set, preprocess and features, help and --ema.
set -u
damamba=$1 samples=$2 fmnist=$3 micro_pth=$4
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Every command answers --help and 'damamba help COMMAND'; every command
# that takes -m takes --ema.
for cmd in run info classify eval features preprocess scanmap compare bench convert; do
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

# --ema selects a training checkpoint's EMA weights: other logits.  The
# output of preprocess is what run takes.
"$damamba" preprocess -m "$micro_pth" --size 40 "$samples/bag.png" -o "$tmp/micro_in.safetensors" || fail "preprocess for micro"
"$damamba" run -m "$micro_pth" -i "$tmp/micro_in.safetensors" -o "$tmp/plain.safetensors" || fail "run of preprocess output"
"$damamba" run -m "$micro_pth" --ema -i "$tmp/micro_in.safetensors" -o "$tmp/ema.safetensors" || fail "run --ema"
head -c 600 "$tmp/plain.safetensors" | grep -q '"logits":{"dtype":"F32","shape":\[1,10\]' || fail "run output shape"
cmp -s "$tmp/plain.safetensors" "$tmp/ema.safetensors" && fail "run --ema gives the plain weights' outputs"

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
grep -q "skipped, an earlier image was written as $tmp/feats2/bag.safetensors" "$tmp/err.txt" ||
    fail "features -d: no error for the second bag"
"$damamba" features -o "$tmp/x.safetensors" "$samples/bag.png" "$samples/coat.png" 2>/dev/null
[ $? -eq 2 ] || fail "features -o with two images is not a usage error"
"$damamba" preprocess "$tmp/missing.png" -o "$tmp/x.safetensors" 2>/dev/null && fail "preprocess of a missing file succeeded"

[ "$failures" -eq 0 ] && echo "all CLI checks passed"
exit "$failures"
