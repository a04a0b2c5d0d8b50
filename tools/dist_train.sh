#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args...]
# As mmpretrain's (arguments with spaces survive). Multi-node: NNODES, NODE_RANK,
# MASTER_ADDR and PORT as for torchrun, one launch per node with GPUS processes
# each (tests/test_reliability/test_multinode.py runs NNODES=2 on one machine);
# a rank that dies ends every node's launch with torchrun's failure summary.
#
# SIGTERM to the launch (torchrun forwards it) or to the ranks: every rank
# finishes its iteration, rank 0 writes that iteration's checkpoint, the ranks
# exit with status 75 (torchrun's summary shows "exitcode: 75"); start again
# with --resume to continue bit for bit (PreemptionHook).
set -e
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}

PYTHONPATH="$DIR/..":$PYTHONPATH \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    "$DIR/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
