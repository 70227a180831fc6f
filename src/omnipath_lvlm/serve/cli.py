"""`omnipath serve`: run the OpenAI-compatible API and the web slide viewer."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the model over an OpenAI-compatible HTTP API with a web slide viewer",
        description="Serve the model over HTTP: POST /v1/chat/completions (OpenAI-compatible, with the extension "
                    "field slide_id naming a file in --slides), Deep Zoom tiles and a web viewer at /.")
    parser.add_argument("--slides", required=True, type=Path, help="folder of slides that requests may refer to")
    parser.add_argument("--model", required=True, help="model name or checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("OMNIPATH_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (default: $OMNIPATH_API_KEY; none when unset)")
    parser.add_argument("--max-concurrent", type=int, default=1, help="engine calls running at once")
    parser.add_argument("--max-queue", type=int, default=8, help="requests waiting; more get HTTP 429")
    parser.add_argument("--max-tokens", type=int, default=1024, help="cap on new tokens per answer")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body, in MiB")
    parser.add_argument("--allow-image-host", action="append", default=[], metavar="HOST",
                        help="host whose http(s) image URLs may be fetched (repeatable; none by default)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omnipath_lvlm.serve.app import run_server
    from omnipath_lvlm.serve.limits import ServeSettings

    if not args.slides.is_dir():
        print(f"error: --slides {args.slides} is not a folder", file=sys.stderr)
        return 2
    try:
        settings = ServeSettings(
            host=args.host, port=args.port, api_key=args.api_key or None,
            max_concurrent=args.max_concurrent, max_queue=args.max_queue, max_tokens=args.max_tokens,
            default_max_tokens=min(512, args.max_tokens), max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            allowed_image_hosts=tuple(args.allow_image_host))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.api_key is None and not _is_loopback(settings.host):
        print(f"warning: serving on {settings.host} without an API key; anyone who can reach it can use the model "
              "and read the slides (set --api-key or OMNIPATH_API_KEY)", file=sys.stderr)

    from omnipath_lvlm.wsi.pipeline import load_engine

    engine = load_engine(args.model)
    run_server(engine, args.slides, settings)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
