"""Build the tiny random-weight dev models (Edit and Plus) offline, if they are missing.

The pixels they produce are meaningless: they exist to run the real code path on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from qie_engine.tiny_model import save_tiny_pipeline

ROOT = Path(__file__).resolve().parent.parent


def open_to_all_users(folder: Path) -> None:
    """Give every user read access to the model: files 0644, folders 0755."""
    # safetensors writes its files as 0600, and the Triton image builds the model as root but
    # serves it as an unprivileged user.
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "models", help="parent folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args()
    for variant, folder in (
        ("edit", "tiny-qwen-image-edit"),
        ("plus", "tiny-qwen-image-edit-plus"),
    ):
        target = args.out / folder
        if (target / "model_index.json").is_file() and not args.force:
            print(f"dev model present: {target}")
        else:
            shutil.rmtree(target, ignore_errors=True)
            save_tiny_pipeline(target, variant=variant)
            index = json.loads((target / "model_index.json").read_text())
            print(f"built dev model ({index['_class_name']}, random weights): {target}")
        # Also for a present model, which an older build may have left 0600.
        open_to_all_users(target)


if __name__ == "__main__":
    main()
