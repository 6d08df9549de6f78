"""`qie`: edit images from the command line, with a live progress bar."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from qie_client.client import TERMINAL_EVENTS, BatchEvent, QieClient, QieError

PRESETS = ("fast", "balanced", "quality")


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
        "mask_padding",
        "mask_feather",
        "output_size",
    )
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _local(args: argparse.Namespace) -> dict[str, Any]:
    """A local edit's mask file or region rectangle, as the client takes them."""
    fields: dict[str, Any] = {}
    if args.mask:
        fields["mask"] = Path(args.mask)
    if args.region:
        fields["region"] = args.region
    return fields


def region(text: str) -> tuple[int, int, int, int]:
    """x,y,w,h in the image's pixels."""
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"--region takes x,y,width,height; got {text!r}")
    x, y, w, h = (int(p) for p in parts)
    return x, y, w, h


def _output_path(args: argparse.Namespace) -> Path:
    if args.output:
        return Path(args.output)
    return Path(args.images[0]).with_name(
        Path(args.images[0]).stem + "-edited." + (args.output_format or "png")
    )


def _edit(client: QieClient, args: argparse.Namespace) -> int:
    options = _options(args)
    local = _local(args)
    if args.sync:
        result = client.edit(args.images, args.prompt, model=args.model, options=options, **local)
        out = _output_path(args)
        out.write_bytes(result.image)
        size = f"{result.width}x{result.height}"
        print(f"saved {out} ({size}, {result.model}, {result.processing_time:.2f}s)")
        return 0
    job_id = client.submit(args.images, args.prompt, model=args.model, options=options, **local)
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


class BatchBar:
    """One bar over a whole batch: each edit counts 1, a running one by its share of steps."""

    def __init__(self, total: int) -> None:
        self.done = [0.0] * total
        self.bar = tqdm(
            total=total,
            desc="queued: ",  # set_description adds the ": " itself
            file=sys.stderr,
            bar_format="{desc}{percentage:3.0f}%|{bar}|",
        )

    def update(self, event: BatchEvent) -> None:
        if event.event == "batch":
            self._summary(event.data)
        elif event.index is not None:
            self._item(event.index, event)
        self.bar.n = sum(self.done)
        self.bar.refresh()

    def _summary(self, data: dict[str, Any]) -> None:
        counts = [f"{data['completed']}/{data['total']} done"]
        counts += [f"{data[name]} {name}" for name in ("failed", "cancelled") if data[name]]
        self.bar.set_description(f"{data['status']} ({', '.join(counts)})")

    def _item(self, index: int, event: BatchEvent) -> None:
        if event.event == "progress" and event.data.get("total"):
            self.done[index] = event.data["step"] / event.data["total"]
        elif event.event in (*TERMINAL_EVENTS, "error"):  # an error here: that job expired
            self.done[index] = 1.0

    def __enter__(self) -> BatchBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.bar.close()


def _report_failures(view: dict[str, Any]) -> None:
    for job in view["jobs"]:
        if job["status"] in ("failed", "cancelled"):
            error = job.get("error") or {}
            reason = f": {error.get('message')} ({error.get('code')})" if error else ""
            print(f"{job['name']} {job['status']}{reason}", file=sys.stderr)


def _save_batch(archive: bytes, args: argparse.Namespace) -> None:
    if args.zip:
        Path(args.zip).write_bytes(archive)
        print(f"saved {args.zip}")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        for entry in bundle.infolist():
            if entry.is_dir():
                continue
            target = out / Path(entry.filename).name  # never outside the folder
            target.write_bytes(bundle.read(entry))
            print(f"saved {target}")


def _cancel_batch(client: QieClient, batch_id: str) -> int:
    try:
        view = client.cancel_batch(batch_id)
        print(f"cancelled batch {batch_id} ({view['cancelled']} edits)", file=sys.stderr)
    except QieError as exc:
        if exc.code != "batch_finished":
            raise
        print(f"batch {batch_id} had already ended", file=sys.stderr)
    return 130


def _batch(client: QieClient, args: argparse.Namespace) -> int:
    accepted = client.submit_batch(
        args.images,
        args.prompt,
        variations=args.variations,
        model=args.model,
        negative_prompt=args.negative_prompt,
        options=_options(args),
        **_local(args),
    )
    batch_id = accepted["batch_id"]
    print(f"batch {batch_id}: {accepted['total']} edits", file=sys.stderr)
    try:
        with BatchBar(accepted["total"]) as bar:  # closed before anything else is printed
            for event in client.batch_events(batch_id):
                bar.update(event)
    except KeyboardInterrupt:
        return _cancel_batch(client, batch_id)
    view = client.batch(batch_id)
    _report_failures(view)
    if not view["completed"]:
        print(f"batch {batch_id} {view['status']}: no image was edited", file=sys.stderr)
        return 1
    _save_batch(client.batch_result(batch_id), args)
    return 0


def _add_edit_options(parser: argparse.ArgumentParser) -> None:
    """The options an edit and a batch share."""
    parser.add_argument("--model", help="e.g. classic_edit or qwen_image_edit")
    parser.add_argument("--preset", choices=PRESETS)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--true-cfg-scale", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--format", "--output-format", dest="output_format", choices=["png", "webp", "jpeg"]
    )
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--timeout", type=float, help="deadline in seconds")
    parser.add_argument(
        "--output-size", choices=["model", "input"], help="input: the result at the input's size"
    )
    local = parser.add_mutually_exclusive_group()
    local.add_argument("--mask", help="edit only where this mask is white (the image's size)")
    local.add_argument(
        "--region", type=region, help="edit only this rectangle: x,y,width,height in pixels"
    )
    parser.add_argument("--mask-padding", type=int, help="context around the mask's box, pixels")
    parser.add_argument("--mask-feather", type=int, help="blend width at the mask's edge, pixels")


def _add_batch_command(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="one prompt over several images: qie batch a.jpg b.jpg -p 'make it sepia' --out dir",
    )
    batch.add_argument("images", nargs="+", help="2 or more images, or 1 with --variations")
    batch.add_argument("-p", "--prompt", required=True)
    batch.add_argument("--negative-prompt")
    batch.add_argument(
        "--variations", type=int, help="N edits of one image, seeds seed, seed+1, ..."
    )
    _add_edit_options(batch)
    where = batch.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="folder to write the edited images into")
    where.add_argument("--zip", help="save the result zip here instead")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qie", description="Edit images with qwen-image-edit.")
    parser.add_argument("--url", default=os.environ.get("QIE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("QIE_API_KEY"))
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("edit", help="edit an image: qie edit photo.jpg 'make it sepia'")
    edit.add_argument("images", nargs="+", help="1 image (1-3 for Plus models), then the prompt")
    edit.add_argument("-o", "--output", help="where to save the result")
    _add_edit_options(edit)
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
    _add_batch_command(commands)
    commands.add_parser("models", help="list the models")
    commands.add_parser("health", help="show the service state")
    return parser


def _run(client: QieClient, args: argparse.Namespace) -> int:
    if args.command == "edit":
        return _edit(client, args)
    if args.command == "batch":
        return _batch(client, args)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "edit":
        if len(args.images) < 2:
            print("qie edit: give an image and a prompt", file=sys.stderr)
            return 2
        *args.images, args.prompt = args.images
    with QieClient(args.url, args.api_key) as client:
        try:
            return _run(client, args)
        except QieError as exc:
            print(f"error: {exc.message} ({exc.code}, HTTP {exc.status})", file=sys.stderr)
            return 1
        except (OSError, zipfile.BadZipFile) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
