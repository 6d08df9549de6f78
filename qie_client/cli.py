"""`qie`: edit images from the command line, with a live progress bar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from qie_client.client import QieClient, QieError


def _options(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "preset",
        "steps",
        "true_cfg_scale",
        "seed",
        "output_format",
        "width",
        "height",
        "timeout",
    )
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    return Path(args.images[0]).with_name(
        Path(args.images[0]).stem + "-edited." + (args.output_format or "png")
    )


def _edit(client: QieClient, args: argparse.Namespace) -> int:
    options = _options(args)
    if args.sync:
        result = client.edit(args.images, args.prompt, model=args.model, options=options)
        out = _output_path(args)
        out.write_bytes(result.image)
        size = f"{result.width}x{result.height}"
        print(f"saved {out} ({size}, {result.model}, {result.processing_time:.2f}s)")
        return 0
    job_id = client.submit(args.images, args.prompt, model=args.model, options=options)
    if args.run_async:
        print(job_id)
        return 0
    bar = tqdm(total=1, desc="queued", unit="step", file=sys.stderr, leave=True)
    try:
        for event in client.events(job_id):
            if event.event == "queued" and event.data.get("position"):
                bar.set_description(f"queued (position {event.data['position']})")
            elif event.event == "started":
                bar.set_description("editing")
            elif event.event == "progress":
                bar.total = event.data["total"]
                bar.n = event.data["step"]
                bar.set_postfix_str(event.data.get("message") or "")
                bar.refresh()
            elif event.event == "completed":
                bar.set_description("done")
            elif event.event in ("failed", "cancelled"):
                bar.close()
                error = event.data.get("error") or {}
                print(f"job {job_id} {event.event}: {error.get('message', '')}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        bar.close()
        client.cancel(job_id)
        print(f"cancelled job {job_id}", file=sys.stderr)
        return 130
    bar.close()
    out = _output_path(args)
    out.write_bytes(client.result(job_id))
    print(f"saved {out} (job {job_id})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qie", description="Edit images with qwen-image-edit.")
    parser.add_argument("--url", default=os.environ.get("QIE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("QIE_API_KEY"))
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="edit an image: qie edit photo.jpg 'make it sepia'")
    edit.add_argument("images", nargs="+", help="1 image (1-3 for Plus models), then the prompt")
    edit.add_argument("-o", "--output", help="where to save the result")
    edit.add_argument("--model", help="e.g. classic_edit or qwen_image_edit")
    edit.add_argument("--preset", choices=["fast", "quality"])
    edit.add_argument("--steps", type=int)
    edit.add_argument("--true-cfg-scale", type=float)
    edit.add_argument("--seed", type=int)
    edit.add_argument("--format", dest="output_format", choices=["png", "webp", "jpeg"])
    edit.add_argument("--width", type=int)
    edit.add_argument("--height", type=int)
    edit.add_argument("--timeout", type=float, help="deadline in seconds")
    mode = edit.add_mutually_exclusive_group()
    mode.add_argument(
        "--async", dest="run_async", action="store_true", help="print the job id and exit"
    )
    mode.add_argument("--sync", action="store_true", help="one blocking request, no progress bar")

    for name, text in (
        ("status", "show a job"),
        ("cancel", "cancel a job"),
        ("result", "save a job's result"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("job_id")
        if name == "result":
            sub.add_argument("-o", "--output", required=True)
    commands.add_parser("models", help="list the models")
    commands.add_parser("health", help="show the service state")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "edit":
        if len(args.images) < 2:
            print("qie edit: give an image and a prompt", file=sys.stderr)
            return 2
        *args.images, args.prompt = args.images
    with QieClient(args.url, args.api_key) as client:
        try:
            if args.command == "edit":
                return _edit(client, args)
            if args.command == "result":
                Path(args.output).write_bytes(client.result(args.job_id))
                print(f"saved {args.output}")
                return 0
            answer = {
                "status": lambda: client.job(args.job_id),
                "cancel": lambda: client.cancel(args.job_id),
                "models": client.models,
                "health": client.health,
            }[args.command]()
            print(json.dumps(answer, indent=2))
            return 0
        except QieError as exc:
            print(f"error: {exc.message} ({exc.code}, HTTP {exc.status})", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
