"""What each tenant's processes used lately across the cluster, from the ledger, for fair shares.

Every model call a process makes is a ledger row with its ``process_id``, whichever server made
it, so one aggregate over the ledger's recent rows gives every server the same figures. Tokens
fade with a half-life as the fair scheduler's own counts do; the query sums them in time buckets
(one GROUP BY on the time index) and the decay is applied per bucket here.
"""

from __future__ import annotations

import math
import time

from sqlalchemy import Engine, text

# Buckets per half-life, and half-lives looked back: older use counts for under 1/16.
_BUCKETS_PER_HALF_LIFE = 12
_HALF_LIVES = 4
_USED = text(
    "SELECT tenant_id, (created_at_us - :since) / :width AS bucket, "
    "SUM(prompt_tokens + completion_tokens) FROM ledger "
    "WHERE created_at_us >= :since AND process_id IS NOT NULL GROUP BY tenant_id, bucket"
)


def process_usage(engine: Engine, half_life_s: float = 60.0, now_us: int | None = None) -> dict[int, float]:
    """Decayed tokens per tenant used by processes over the last few half-lives, on every server."""
    now = time.time_ns() // 1000 if now_us is None else now_us
    width = max(1, int(half_life_s * 1_000_000 / _BUCKETS_PER_HALF_LIFE))
    buckets = _BUCKETS_PER_HALF_LIFE * _HALF_LIVES
    since = now - width * buckets
    decay = math.log(2) / half_life_s
    used: dict[int, float] = {}
    with engine.connect() as conn:
        for tenant, bucket, tokens in conn.execute(_USED, {"since": since, "width": width}):
            # A bucket's tokens decay from its middle to now.
            age_s = (now - (since + (int(bucket) + 0.5) * width)) / 1_000_000
            used[tenant] = used.get(tenant, 0.0) + float(tokens or 0) * math.exp(-decay * max(0.0, age_s))
    return used
