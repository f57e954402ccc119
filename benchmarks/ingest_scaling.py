"""Sessions held at a latency target by 1 vs 2 ingest processes (issue "Scale out for real").

For each ingest-process count K (default 1 and 2), one after the other in this run: start one
embedded Redis, K `merclip ingest` processes on their own ports (service defaults, each with its
own extraction threads) and `--infer-workers` `merclip infer` workers (benchmarks/fleet.py), then
stream N talking sessions with a moving face (live_sessions.py's load: speech without pauses,
clients passing their VP8/Opus through), spread round robin over the K nodes, for each N of
`--sessions`. A count N is held when every window's event came back (none dropped), the event
latency p95 (window end -> published) is at most `--target`, and the second half of the run is
not slower than the first by more than 25 % (lag not growing).

Prints, per K, each N's p95 and whether it held, the most sessions held, and the ratio of that
to K = 1, with the machine's core count: on a machine with fewer cores than busy processes the
ratio shows what the extra process costs as much as what it adds.

    python benchmarks/ingest_scaling.py --sessions 2,4,6,8 --seconds 40 --target 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from fleet import Fleet  # noqa: E402
from live_sessions import add_service_options, make_media, measure, service_env  # noqa: E402


def held(result: dict, target_s: float) -> bool:
    """Whether a run kept the latency target with nothing dropped and no growing lag."""
    lat = result["latency_ms"]
    all_in = result["events"] >= result["windows_expected_at_least"]
    growing = lat["published_p95_second_half"] > 1.25 * max(lat["published_p95_first_half"], 1)
    return all_in and lat["published_p95"] <= target_s * 1000 and not growing


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_service_options(p)
    p.add_argument("--sessions", default="2,4,6,8", help="session counts to try, ascending")
    p.add_argument("--ingest", default="1,2", help="ingest-process counts to compare")
    p.add_argument("--infer-workers", type=int, default=1)
    p.add_argument("--target", type=float, default=1.0, help="event latency p95 target, s")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.set_defaults(seconds=40.0)
    args = p.parse_args()
    counts = [int(x) for x in args.sessions.split(",")]
    nodes = [int(x) for x in args.ingest.split(",")]
    if args.client_nice is None:
        args.client_nice = 0 if args.passthrough else 10
    if args.client_nice:
        os.nice(args.client_nice)

    work = Path(tempfile.mkdtemp(prefix="merclip-ingest-scaling-"))
    media, ref = make_media(work, args.seconds + 2, pause=args.pause)
    env = service_env(args, max(counts))
    out: dict = {"cpu_count": os.cpu_count(), "target_p95_s": args.target, "runs": {}}
    for k in nodes:
        rows = []
        with Fleet(env, ingest=k, infer=args.infer_workers) as fleet:
            for i, n in enumerate(counts):
                if i:
                    time.sleep(args.rest)
                print(f"K={k} ingest, N={n} sessions ...", file=sys.stderr)
                r = measure(args, fleet, media, ref, n)
                lat = r["latency_ms"]
                row = {
                    "sessions": n,
                    "held": held(r, args.target),
                    "event_p50_s": round(lat["published_p50"] / 1000, 2),
                    "event_p95_s": round(lat["published_p95"] / 1000, 2),
                    "event_p95_second_half_s": round(lat["published_p95_second_half"] / 1000, 2),
                    "events": r["events"],
                    "windows_expected_at_least": r["windows_expected_at_least"],
                    "word_p50_s": r["word_latency"]["p50_s"],
                    "word_p95_s": r["word_latency"]["p95_s"],
                    "shed": r["shed"],
                    "cores_used": r["cpu_cores_used"],
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
        most = max((row["sessions"] for row in rows if row["held"]), default=0)
        out["runs"][str(k)] = {"most_sessions_held": most, "rows": rows}
    base = out["runs"][str(nodes[0])]["most_sessions_held"]
    for k in nodes:
        run = out["runs"][str(k)]
        run["ratio_to_first"] = round(run["most_sessions_held"] / base, 2) if base else None
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    for k in nodes:
        run = out["runs"][str(k)]
        p95s = ", ".join(
            f"N={row['sessions']} {row['event_p95_s']:.2f}{'' if row['held'] else ' (no)'}"
            for row in run["rows"]
        )
        print(
            f"{k} ingest: held {run['most_sessions_held']} sessions at p95 <= {args.target} s "
            f"(x{run['ratio_to_first']}); p95: {p95s}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
