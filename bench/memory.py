"""Memory: daemon RSS with 1,000 finished runs and 100 active runs of 10,000 events each.

Finished runs are small demo runs (their count, not their size, is what stays in memory);
active runs are demo runs pacing 10,000 events over 40 s. Baseline: RSS of the idle daemon.
"""

from __future__ import annotations

import concurrent.futures
import time

import httpx

from common import Figure, create_run, daemon, report, wait_terminal

FINISHED = 1000
ACTIVE = 100
TARGET_MB = 200


def main() -> None:
    """Fill the daemon, then sample its RSS while the active runs stream."""
    with daemon() as d, httpx.Client(base_url=d.url, timeout=120) as http:
        idle = d.rss_mb()

        def finished_run(i: int) -> str:
            with httpx.Client(base_url=d.url, timeout=120) as own:
                body = {"events": 40, "fast": True}
                run = create_run(own, agentId="demo", prompt=f"old {i}", demo=body)
                status: str = wait_terminal(own, run["id"])["status"]
                return status

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(finished_run, range(FINISHED)))
        assert statuses.count("succeeded") == FINISHED, statuses
        active = [
            create_run(
                http,
                agentId="demo",
                prompt=f"live {i}",
                demo={"events": 10_000, "durationSeconds": 40},
            )["id"]
            for i in range(ACTIVE)
        ]
        peak = 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            peak = max(peak, d.rss_mb())
            body = http.get("/api/health").json()
            if body["activeRuns"] == 0:
                break
            time.sleep(0.5)
        done = [wait_terminal(http, run_id)["status"] for run_id in active]
        assert done.count("succeeded") == ACTIVE, done
        peak = max(peak, d.rss_mb())
    report(
        [
            Figure(
                f"daemon RSS, {FINISHED:,} finished + {ACTIVE} active runs of 10,000 events",
                peak,
                "MB",
                f"<= {TARGET_MB} MB",
                f"idle daemon {idle:.0f} MB",
                peak <= TARGET_MB,
            )
        ]
    )


if __name__ == "__main__":
    main()
