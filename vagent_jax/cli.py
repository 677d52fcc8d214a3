"""The `vagent` command line. Sub-commands take a YAML config and `key=value` overrides.

Exit status: 0 done, 2 a configuration or input error (the message names the key or file), 3 the run
stopped itself (too many non-finite steps; the last good checkpoint is kept), 130 interrupted (a
resumable checkpoint was written; rerun with --resume).
"""
from __future__ import annotations

import argparse
import json
import sys

from vagent_jax.config import ConfigError, load_config


def _demo(args: argparse.Namespace) -> int:
    from vagent_jax.demo import QUICK_OVERRIDES, DemoConfig, run_demo

    overrides = (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    cfg = load_config(DemoConfig, args.config, overrides)
    summary = run_demo(cfg, resume=args.resume)
    print(json.dumps(summary, indent=2))
    print(f"\nTensorBoard: tensorboard --logdir {cfg.out_dir}\nReport: {cfg.out_dir}/report.md")
    return 0


def _sft(args: argparse.Namespace) -> int:
    from vagent_jax.train.sft_run import SFTConfig, run_sft

    cfg = load_config(SFTConfig, args.config, list(args.overrides))
    print(json.dumps(run_sft(cfg, resume=args.resume), indent=2))
    return 0


def _rl(args: argparse.Namespace) -> int:
    from vagent_jax.train.rl_run import RLConfig, run_rl

    cfg = load_config(RLConfig, args.config, list(args.overrides))
    print(json.dumps(run_rl(cfg, resume=args.resume), indent=2))
    return 0


def _add(sub: argparse._SubParsersAction, name: str, help_text: str, fn, config_required: bool = True,
         resume: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    if config_required:
        p.add_argument("config", help="YAML config (configs/*.yaml)")
    else:
        p.add_argument("--config", default=None, help="YAML config (default: built-in recipe)")
    if resume:
        p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100 optimizer.lr=1e-4")
    p.set_defaults(fn=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the sub-command and run it; errors exit non-zero with a message naming the key or file."""
    from vagent_jax.train.run_common import RunStopped

    parser = argparse.ArgumentParser(prog="vagent", description="JAX trainer for LM agents: SFT then DAPO.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = _add(sub, "demo", "train a small tool-using agent from scratch on CPU (no downloads)", _demo,
                config_required=False)
    demo.add_argument("--quick", action="store_true", help="CI-sized run")
    _add(sub, "sft", "supervised fine-tuning on demonstrations", _sft)
    _add(sub, "rl", "DAPO (or a variant) against an environment", _rl)
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + extra  # key=value given after a --flag
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"vagent {args.command}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"vagent {args.command}: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"vagent {args.command}: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"vagent {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
