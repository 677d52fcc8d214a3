"""The `vagent` command line. Sub-commands take a YAML config and `key=value` overrides.

Exit status: 0 done, 2 a configuration or input error (the message names the key or file), 3 the run
stopped itself (too many non-finite steps, or a checkpoint could not be written, e.g. a
full disk; the last good checkpoint is kept), 130 interrupted (a
resumable checkpoint was written; rerun with --resume).

`vagent sft`, `vagent rl` and `vagent export` run multi-host with --coordinator HOST:PORT --num-processes N --process-id I
(or VAGENT_COORDINATOR / VAGENT_NUM_PROCESSES / VAGENT_PROCESS_ID; automatic on a Cloud TPU VM): see
docs/multihost.md.
"""
from __future__ import annotations

import argparse
import json
import sys

from vagent_jax.config import ConfigError, load_config


def _demo(args: argparse.Namespace) -> int:
    from vagent_jax.jobs.demo import QUICK_OVERRIDES, DemoConfig, run_demo

    overrides = (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    cfg = load_config(DemoConfig, args.config, overrides)
    summary = run_demo(cfg, resume=args.resume)
    print(json.dumps(summary, indent=2))
    print(f"\nTensorBoard: tensorboard --logdir {cfg.out_dir}\nReport: {cfg.out_dir}/report.md")
    return 0


def _sft(args: argparse.Namespace) -> int:
    from vagent_jax.jobs.sft import SFTConfig, run_sft

    cfg = load_config(SFTConfig, args.config, list(args.overrides))
    print(json.dumps(run_sft(cfg, resume=args.resume), indent=2))
    return 0


def _rl(args: argparse.Namespace) -> int:
    from vagent_jax.jobs.rl import RLConfig, run_rl

    cfg = load_config(RLConfig, args.config, list(args.overrides))
    print(json.dumps(run_rl(cfg, resume=args.resume), indent=2))
    return 0


def _compile(args: argparse.Namespace) -> int:
    from vagent_jax.jobs.compile import DoesNotFit, check_fits, compile_file
    from vagent_jax.aot_report import format_table

    try:
        report = compile_file(args.config, args.topology, preset=args.model, overrides=list(args.overrides))
        print(format_table(report))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report.to_dict(), f, indent=2)
        check_fits(report)
    except DoesNotFit as e:  # a program needs more HBM per chip than the chip has
        print(f"vagent compile: {e}", file=sys.stderr)
        return 1
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vagent_jax.jobs.eval import EvalConfig, format_table, run_eval

    cfg = load_config(EvalConfig, args.config, list(args.overrides))
    report = run_eval(cfg, args.checkpoint)
    print(format_table(report))
    print(f"\nReport: {cfg.out}")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from vagent_jax.jobs.distill import DistillConfig, run_distill

    cfg = load_config(DistillConfig, args.config, list(args.overrides))
    print(json.dumps(run_distill(cfg, args.checkpoint, outputs=args.outputs), indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from vagent_jax.jobs.export import export_policy

    print(json.dumps(export_policy(args.run_dir, args.out_dir, step=args.step, max_shard_size=args.max_shard_size,
                                   dtype=args.dtype), indent=2))
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
    from vagent_jax.train.multihost import add_distributed_flags, initialize_from, skip_absent_tpu

    add_distributed_flags(_add(sub, "sft", "supervised fine-tuning on demonstrations", _sft))
    add_distributed_flags(_add(sub, "rl", "DAPO (or a variant) against an environment", _rl))
    comp = _add(sub, "compile", "AOT-compile a run's programs for a TPU topology on CPU; check HBM fit",
                _compile, resume=False)
    comp.add_argument("--topology", required=True, help="TPU slice, e.g. v5e-32, v5p-64, v5e:2x2")
    comp.add_argument("--model", default=None, help="model preset when the config's init_from has none")
    comp.add_argument("--json", default=None, help="also write the report as JSON to this path")
    ev = _add(sub, "eval", "pass@k, maj@k, DeepConf and GenSelect of a policy on held-out tasks", _eval,
              resume=False)
    ev.add_argument("--checkpoint", required=True, help="policy run directory (out_dir of vagent sft / rl) or HF dir")
    dis = _add(sub, "distill", "rejection-sampled SFT data and pass-rate-filtered tasks from a policy", _distill,
               resume=False)
    dis.add_argument("--checkpoint", required=True, help="policy run directory (out_dir of vagent sft / rl) or HF dir")
    dis.add_argument("--outputs", choices=("both", "sft", "tasks"), default="both",
                     help="write the SFT JSONL (sft_out), the filtered task JSONL (tasks_out), or both")
    exp = sub.add_parser("export", help="write a policy as a Hugging Face checkpoint (transformers loads it)")
    exp.add_argument("run_dir", help="policy run directory (out_dir of vagent sft / rl)")
    exp.add_argument("out_dir", help="new or empty directory for config.json, safetensors and tokenizer files")
    exp.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    exp.add_argument("--max-shard-size", default="5GB", help="split safetensors above this size (e.g. 5GB)")
    exp.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                     help="tensor dtype of the files (default: the run's param_dtype)")
    exp.set_defaults(fn=_export)
    add_distributed_flags(exp)
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + extra  # key=value given after a --flag
    skip_absent_tpu()  # before anything touches a jax device
    try:
        if hasattr(args, "coordinator"):  # before anything touches a jax device
            initialize_from(args)
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
