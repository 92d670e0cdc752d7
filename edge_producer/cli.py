"""`vigil edge run` and `vigil sim render|truth|serve-rtsp`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _edge_run(args: argparse.Namespace) -> int:
    from edge_producer.config import load_edge_config
    from edge_producer.runtime import Edge

    cfg = load_edge_config(args.config)
    if args.check:
        print(f"edge config {args.config} is valid ({len(cfg.cameras)} cameras)")
        return 0
    return Edge(cfg).run(until_done=args.until_done)


def _sim_render(args: argparse.Namespace) -> int:
    from edge_producer.sim.scenario import load_scenario
    from edge_producer.sim.video import encode_scenario

    out = encode_scenario(load_scenario(args.scenario), Path(args.out))
    print(out)
    return 0


def _sim_truth(args: argparse.Namespace) -> int:
    from edge_producer.sim.scenario import load_scenario
    from edge_producer.sim.truth import ground_truth

    doc = ground_truth(load_scenario(args.scenario), boxes=not args.no_boxes)
    text = json.dumps(doc, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


def _sim_serve_rtsp(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge_producer.sim.rtsp import RtspServer
    from edge_producer.sim.scenario import load_scenario

    server = RtspServer(load_scenario(args.scenario), host=args.host, port=args.port)
    print(f"serving {args.scenario} at {server.url} (looping; Ctrl-C or SIGTERM stops)",
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    edge = sub.add_parser("edge", help="the edge producer")
    esub = edge.add_subparsers(dest="edge_command", required=True)
    run = esub.add_parser("run", help="read cameras, send frames and heartbeats to Kafka")
    run.add_argument("--config", required=True, help="site YAML (see edge_producer/config.py)")
    run.add_argument("--until-done", action="store_true",
                     help="exit once every file/sim camera ended and the spool is drained")
    run.add_argument("--check", action="store_true", help="validate the config and exit")
    run.set_defaults(func=_edge_run)

    sim = sub.add_parser("sim", help="the synthetic scene")
    ssub = sim.add_subparsers(dest="sim_command", required=True)
    r = ssub.add_parser("render", help="render a scenario to an H.264 MP4")
    r.add_argument("scenario")
    r.add_argument("out")
    r.set_defaults(func=_sim_render)
    t = ssub.add_parser("truth", help="print a scenario's ground truth as JSON")
    t.add_argument("scenario")
    t.add_argument("--out")
    t.add_argument("--no-boxes", action="store_true", help="omit per-frame boxes")
    t.set_defaults(func=_sim_truth)
    s = ssub.add_parser("serve-rtsp", help="serve a scenario over RTSP on loopback")
    s.add_argument("scenario")
    s.add_argument("--port", type=int, default=18554)
    s.add_argument("--host", default="127.0.0.1")
    s.set_defaults(func=_sim_serve_rtsp)
