cd /work/scratch/s5
export DUCHO_FAST_CACHE=/work/scratch/s5/cache
M=/work/scratch/s5/clip-vit-b-32; IM=/work/shared/data/hm-fashion-sample/original/images
run() { # label tree args
  rm -rf out-ab; s=$(date +%s.%N); PYTHONPATH=$2 /work/main/.venv/bin/python -m ducho_fast.cli extract --model $M --images $IM -o out-ab $3 --batch-size 32 >/dev/null 2>&1; rc=$?; e=$(date +%s.%N); echo "$1 $(echo "$e - $s" | bc) rc=$rc"; }
uptime
for i in 1 2 3 4 5; do
  for rt in "onnxruntime" "openvino"; do
    run "before-$rt" /work/wt/before "--runtime $rt --precision int8"
    run "after-$rt" /work/main "--runtime $rt --precision int8"
  done
done
uptime
