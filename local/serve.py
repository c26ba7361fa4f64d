"""The local stack in the foreground, for ``sam local invoke`` where Docker is available.

    make local-stack            # = python -m local.serve; Ctrl-C stops it

Starts a moto server on 127.0.0.1:5000 (queue, DLQ, the access-token secret ``capi-relay-local/meta-access-
token``, EventBridge, SNS) and the Graph API stand-in on 127.0.0.1:8089 -- the addresses ``events/env.json``
names -- and prints what the stand-in receives. In another terminal:

    sam build
    sam local invoke RelayFunction -e events/website_purchase.json --env-vars events/env.json \\
        --docker-network host

(``--docker-network host`` lets the function's container reach 127.0.0.1 on this machine.)
"""

from __future__ import annotations

import argparse
import signal
import time

from local.graph_standin import GraphStandIn
from local.stack import MotoServer, dummy_token, provision

MOTO_PORT = 5000  # events/env.json: AWS_ENDPOINT_URL
GRAPH_PORT = 8089  # events/env.json: GRAPH_API_URL
PREFIX = "capi-relay-local"  # events/env.json: ACCESS_TOKEN_SECRET_ID = capi-relay-local/meta-access-token


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--moto-port", type=int, default=MOTO_PORT)
    parser.add_argument("--graph-port", type=int, default=GRAPH_PORT)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    token = dummy_token()
    with MotoServer("process", port=args.moto_port) as moto, GraphStandIn({token}, port=args.graph_port) as graph:
        resources = provision(moto.endpoint_url, token=token, prefix=PREFIX)
        print(f"moto server     {moto.endpoint_url}   secret {resources.secret_id}, queue {resources.queue_url}")
        print(f"graph stand-in  {graph.url}   (accepts the token in the secret)")
        print("ready: run `sam local invoke ... --env-vars events/env.json --docker-network host`; Ctrl-C stops")
        seen = 0
        try:
            while True:
                time.sleep(0.5)
                received = graph.received
                for item in received[seen:]:
                    event = item["event"]
                    keys = sorted(event.get("user_data", {}))
                    print(f"graph received  pixel {item['pixel_id']}  {event.get('event_name')}  "
                          f"event_id {event.get('event_id')}  user_data keys {keys}")  # fmt: skip
                seen = len(received)
        except KeyboardInterrupt:
            print("stopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
