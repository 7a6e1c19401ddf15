#!/bin/sh
# Join six cluster-node.conf nodes into a Redis Cluster: three masters, one replica each.
# Run once, from any host that reaches them all. Then set, on every app host:
#   DJUST_RESUMABLE = {"REDIS_URL": "redis://redis-node-1:7000/0", "REDIS_CLUSTER": True, ...}
# and point CHANNEL_LAYERS at a separate plain Redis (docs/deploy.md).
set -eu
exec redis-cli --cluster create \
    redis-node-1:7000 redis-node-2:7000 redis-node-3:7000 \
    redis-node-4:7000 redis-node-5:7000 redis-node-6:7000 \
    --cluster-replicas 1 --cluster-yes
