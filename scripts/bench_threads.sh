# Sourced by the benchmark scripts: THREADS, the threads every engine of a benchmark runs on
# (default: the cores this process may run on; not `nproc`, which follows OMP_NUM_THREADS where
# rayon does not), exported to rayon (rectify, Hugging Face tokenizers) and OpenMP (PyTorch).
THREADS=${THREADS:-$(python3 -c 'import os; print(len(os.sched_getaffinity(0)))')}
export THREADS RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
