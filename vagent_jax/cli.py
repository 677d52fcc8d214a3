"""The `vagent` command line. Sub-commands take a YAML config and `key=value` overrides."""
from __future__ import annotations

import argparse
import json
import sys

from vagent_jax.config import ConfigError, load_config


def _demo(args: argparse.Namespace) -> int:
    from vagent_jax.demo import QUICK_OVERRIDES, DemoConfig, run_demo

    overrides = (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    cfg = load_config(DemoConfig, args.config, overrides)
    summary = run_demo(cfg)
    print(json.dumps(summary, indent=2))
    print(f"\nTensorBoard: tensorboard --logdir {cfg.out_dir}/tb\nReport: {cfg.out_dir}/report.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it; configuration errors exit with status 2 and a message naming the key."""
    parser = argparse.ArgumentParser(prog="vagent", description="JAX trainer for LM agents: SFT then DAPO.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small tool-using agent from scratch on CPU (no downloads)")
    demo.add_argument("--config", default=None, help="YAML config (default: built-in recipe)")
    demo.add_argument("--quick", action="store_true", help="CI-sized run")
    demo.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sft_steps=100")
    demo.set_defaults(fn=_demo)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"vagent {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
