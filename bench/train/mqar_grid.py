#!/usr/bin/env python3
"""Zoology's MQAR grid (Arora et al., "Zoology", ICLR 2024, figure 2) for every mixer of gdn.

Reproduces: 2-layer models, vocab 8192, MQAR in Zoology's form as its figure-2 sweep sets it
(zoology/experiments/paper_configs/iclr24_zoology_figure2/configs.py: power_a 0.01,
random_non_queries False; --random-non-queries for Zoology's library default),
(L, kv) in {(64,4), (128,8), (256,16)} x d_model in {64, 128}, every mixer, a learning-rate
sweep whose best run is reported (Zoology sweeps np.logspace(-4, -2, 4) = 1e-4, 4.6e-4,
2.2e-3, 1e-2 and keeps the best).

Model per run: d_model D, 2 heads of head_dim D/2 for every mixer (the delta family's state
is 2 x (D/2)^2 per layer, attention has 2 heads of D/2), SwiGLU MLP of 2D after each mixer as
configs/mqar_zoology_256_16.json (Zoology's figure 2 has no MLP: state_mixer Identity), untied
embeddings, AdamW (weight decay 0.1), 5% warmup then cosine, clip 1.

Reduced: the training budget. Zoology trains 64 epochs over 100k examples (6.4M sequences) at
batch 512/512/256; here every run sees --tokens training tokens (or --steps steps) at --batch,
drawing min(100000, steps x batch) training examples, and is scored on --eval-examples held-out
examples (Zoology: 3000). The exact budget is written into the JSON and the markdown.

--train-mix follows Zoology's protocol instead: one run per (mixer, d_model, lr) trains on a
mixture of the grid's points (--examples-per-point of each, length-grouped batches) and is then
scored on every point with `gdn eval` (its checkpoint, each point's held-out examples).

Outputs <out>/<date>-mqar-grid.{json,md,svg}: one row per run (failed runs included, with
the error), the best learning rate per grid point, and a Zoology-style plot (one panel per L,
x = d_model, y = accuracy, one line per mixer).
"""
import argparse
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweeplib as sl  # noqa: E402

ALL_MIXERS = ["gated_deltanet", "deltanet", "linear_attention", "retnet", "mamba2", "gla", "kda", "longhorn",
              "attention", "swa"]
ZOOLOGY_LRS = "1e-4,4.6e-4,2.2e-3,1e-2"

# Training tokens/s of one single-threaded gdn train (batch 64), measured with
# `--steps 12` runs on a shared, loaded 2-core AMD EPYC host (2026-11-25): by (L, d_model),
# attention apart at L=256. Only used to plan a budget; --budget-seconds rescales it by a
# calibration run on the machine at hand.
REFERENCE_RATE = {(64, 64): 29000, (128, 64): 22000, (256, 64): 21000,
                  (64, 128): 9500, (128, 128): 8500, (256, 128): 5000}
REFERENCE_POINT = (128, 64)  # the calibration run: gated_deltanet at L=128, d_model=64


def reference_rate(mixer, L, d):
    near_L = min((64, 128, 256), key=lambda x: abs(x - L))
    near_d = min((64, 128), key=lambda x: abs(x - d))
    rate = REFERENCE_RATE[(near_L, near_d)] * (near_d / d) ** 1.6
    if mixer == "attention" and L > 128:
        rate *= 128 / L if d <= 64 else 0.85
    return rate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=sl.help_formatter())
    sl.add_common_args(p)
    p.add_argument("--mixers", default=",".join(ALL_MIXERS), help="comma-separated mixers (default: all 10)")
    p.add_argument("--grid", default="64:4,128:8,256:16", help="L:kv pairs (default: %(default)s)")
    p.add_argument("--d-models", default="64,128", help="widths (default: %(default)s)")
    p.add_argument("--lrs", default=ZOOLOGY_LRS, help="learning rates, best kept (default: Zoology's 4)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--tokens", type=float, default=2e6,
                        help="training tokens per run (steps = ceil(tokens / (batch L)); default %(default).0f)")
    budget.add_argument("--steps", type=int, default=0, help="training steps per run (instead of --tokens)")
    budget.add_argument("--budget-seconds", type=float, default=0,
                        help="choose --tokens so that the whole sweep takes about this many wall seconds on "
                             "--jobs processes (rates calibrated by one short run on this machine)")
    p.add_argument("--batch", type=int, default=64, help="sequences per step (default: %(default)s)")
    p.add_argument("--vocab", type=int, default=8192,
                   help="vocabulary (default: Zoology's %(default)s; a smaller one learns in far fewer tokens, "
                        "and is then a stated reduction)")
    p.add_argument("--eval-examples", type=int, default=1000, help="held-out examples (default: %(default)s)")
    p.add_argument("--random-non-queries", action="store_true",
                   help="random tokens at the non-query positions (Zoology's MQARConfig default; its figure 2 "
                        "and this script's default: zeros)")
    p.add_argument("--train-mix", action="store_true",
                   help="one run per (mixer, d_model, lr) on a mixture of the grid's points, scored on each "
                        "(Zoology's protocol) instead of one run per point")
    p.add_argument("--examples-per-point", type=int, default=20000,
                   help="--train-mix: training examples of each point (default: %(default)s)")
    p.add_argument("--init-std", type=float, default=0.02,
                   help="std of the initial projection weights (default: FLA's %(default)s)")
    p.add_argument("--gate-dt-range", default="1e-3,0.1",
                   help="initial dt range of the decay gates, min,max (default: FLA's %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the model init")
    p.add_argument("--window", type=int, default=0,
                   help="swa window in tokens (default 0: L/4, so that the early keys fall out of it)")
    args = p.parse_args(argv)
    if args.train_mix and args.budget_seconds > 0:
        p.error("--train-mix takes --steps or --tokens (per run, over the mixture), not --budget-seconds")
    if args.smoke:
        # Tiny and fast: the test suite checks the files, not the accuracy.
        args.grid, args.d_models, args.lrs = "32:2,64:4", "32", "3e-3"
        args.steps, args.batch, args.eval_examples, args.examples_per_point = 4, 8, 16, 32
        if args.mixers == ",".join(ALL_MIXERS):
            args.mixers = "gated_deltanet,linear_attention"
    return args


def grid_points(args):
    pts = []
    for item in args.grid.split(","):
        L, kv = item.split(":")
        pts.append((int(L), int(kv)))
    return pts


def model_config(args, mixer, d, L):
    head_dim = max(2, d // 2)
    return {"vocab_size": args.vocab, "d_model": d, "layers": 2, "mixers": [mixer], "heads": 2,
            "head_dim": head_dim, "attn_heads": 2, "attn_head_dim": head_dim,
            "window": args.window or max(2, L // 4), "mlp_hidden": 2 * d, "tie_embeddings": False,
            "init_std": args.init_std, "gate_dt_range": sl.parse_list(args.gate_dt_range, float)}


def mqar_data(args, L, kv):
    return {"task": "mqar", "vocab_size": args.vocab, "seq_len": L, "num_kv_pairs": kv, "power_a": 0.01,
            "random_non_queries": args.random_non_queries, "eval_examples": args.eval_examples, "seed": args.seed}


def make_mix_runs(args, work):
    """--train-mix: one run per (mixer, d_model, lr) on the mixture of the grid's points; its
    `after` scores the checkpoint on each point (row["cells"])."""
    runs, pts = [], grid_points(args)
    mean_L = sum(L for L, _ in pts) / len(pts)
    longest = max(pts)
    for mixer in sl.parse_list(args.mixers):
        for d in sl.parse_list(args.d_models, int):
            for lr in sl.parse_list(args.lrs, float):
                steps = args.steps or max(1, math.ceil(args.tokens / (args.batch * mean_L)))
                name = f"{mixer}-mix-d{d}-lr{lr:g}"
                ckpt = os.path.join(work, name + ".safetensors")
                data = mqar_data(args, *longest)
                data["train_mix"] = [{"seq_len": L, "num_kv_pairs": kv, "examples": args.examples_per_point}
                                     for L, kv in pts]
                config = {"model": model_config(args, mixer, d, longest[0]),
                          "train": {"batch": args.batch, "steps": steps, "lr": lr, "warmup": 0.05,
                                    "weight_decay": 0.1, "clip": 1.0, "eval_every": 0, "seed": args.seed,
                                    "group_by_length": True},
                          "data": data}
                rate = sum(reference_rate(mixer, L, d) for L, _ in pts) / len(pts)
                tokens = steps * args.batch * mean_L
                cost = tokens / rate + sum(eval_seconds(args, L, rate) for L, _ in pts)
                meta = {"mixer": mixer, "d_model": d, "lr": lr, "steps": steps, "batch": args.batch,
                        "tokens": round(tokens)}

                def evaluate(row, sweep, name=name, ckpt=ckpt):
                    row["cells"] = []
                    for L, kv in pts:
                        cfg = os.path.join(work, f"{name}-eval-{L}-{kv}.json")
                        sl.write_json(cfg, {"data": mqar_data(args, L, kv)})  # the model comes from the checkpoint
                        argv = [args.gdn, "eval", "--checkpoint", ckpt, "--config", cfg, "--json", "--threads", "1"]
                        fields, res = sweep.run_eval(argv)
                        cell = {"L": L, "kv": kv, **fields}
                        if res is not None:
                            cell.update(eval_accuracy=res["eval_accuracy"], eval_loss=res["eval_loss"])
                        row["cells"].append(cell)

                runs.append(sl.Run(name, ["train", "--json", "--threads", "1", "--checkpoint", ckpt], config, cost,
                                   meta, after=evaluate))
    return runs


def point_rows(rows, args):
    """--train-mix rows as one row per (run, grid point), the shape best_rows and the table read;
    a run that failed fails on every point."""
    out = []
    for r in rows:
        cells = r.get("cells") or [{"L": L, "kv": kv} for L, kv in grid_points(args)]
        for c in cells:
            row = {k: r[k] for k in ("run", "mixer", "d_model", "lr", "steps", "batch", "tokens") if k in r}
            row.update(L=c["L"], kv=c["kv"])
            if r["status"] == "ok" and c.get("status") == "ok":
                row.update(status="ok", eval_accuracy=c["eval_accuracy"], eval_loss=c["eval_loss"])
            else:
                row.update(status=r["status"] if r["status"] != "ok" else c.get("status", "failed"),
                           error=r.get("error") or c.get("error", ""))
            out.append(row)
    return out


def make_runs(args):
    """One run per (mixer, L, kv, d_model, lr); cost = predicted seconds at the reference rates."""
    runs = []
    for mixer in sl.parse_list(args.mixers):
        for L, kv in grid_points(args):
            for d in sl.parse_list(args.d_models, int):
                for lr in sl.parse_list(args.lrs, float):
                    steps = args.steps or max(1, math.ceil(args.tokens / (args.batch * L)))
                    config = {
                        "model": model_config(args, mixer, d, L),
                        "train": {"batch": args.batch, "steps": steps, "lr": lr, "warmup": 0.05,
                                  "weight_decay": 0.1, "clip": 1.0, "eval_every": 0, "seed": args.seed},
                        "data": dict(mqar_data(args, L, kv), train_examples=min(100000, steps * args.batch)),
                    }
                    tokens = steps * args.batch * L
                    rate = reference_rate(mixer, L, d)
                    cost = tokens / rate + eval_seconds(args, L, rate)
                    meta = {"mixer": mixer, "L": L, "kv": kv, "d_model": d, "lr": lr, "steps": steps,
                            "batch": args.batch, "tokens": tokens}
                    name = f"{mixer}-L{L}-kv{kv}-d{d}-lr{lr:g}"
                    runs.append(sl.Run(name, ["train", "--json", "--threads", "1"], config, cost, meta))
    return runs


def eval_seconds(args, L, rate):
    """Data generation, start-up and the forward-only evaluation (about a third of a step's cost)."""
    return 1.0 + args.eval_examples * L / (3 * rate)


def plan(args, work):
    """Sets args.tokens from --budget-seconds; returns the rate scale found by calibration."""
    scale = 1.0
    if args.budget_seconds > 0 and not args.smoke:
        L, d = REFERENCE_POINT
        cal = {"model": {"vocab_size": 8192, "d_model": d, "layers": 2, "mixers": ["gated_deltanet"], "heads": 2,
                         "head_dim": d // 2, "mlp_hidden": 2 * d},
               "train": {"batch": 64, "steps": 8, "lr": 1e-3, "eval_every": 0},
               "data": {"task": "mqar", "vocab_size": 8192, "seq_len": L, "num_kv_pairs": 8, "train_examples": 512,
                        "eval_examples": 8}}
        measured = sl.calibrate(args.gdn, cal, work)
        if measured:
            scale = measured / REFERENCE_RATE[REFERENCE_POINT]
            sl.log(f"calibration: {measured:.0f} tokens/s at L={L} d_model={d} ({scale:.2f} x the reference rates)")
        else:
            sl.log("calibration run failed; planning with the reference rates")
        keys = [(m, L, d) for m in sl.parse_list(args.mixers) for L, _ in grid_points(args)
                for d in sl.parse_list(args.d_models, int) for _ in sl.parse_list(args.lrs, float)]
        rates = [reference_rate(*k) * scale for k in keys]
        units = [1 / r for r in rates]
        fixed = [eval_seconds(args, k[1], r) for k, r in zip(keys, rates)]
        args.tokens = sl.fit_budget(args.budget_seconds, args.jobs, units, fixed)
        if args.tokens <= 0:
            sl.fail(f"--budget-seconds {args.budget_seconds:g} is too short for {len(keys)} runs on {args.jobs} jobs")
        sl.log(f"budget: {args.tokens:.0f} training tokens per run to fit {args.budget_seconds:g} s")
    return scale


def best_rows(rows):
    """Best run per (mixer, L, kv, d_model) over the learning rates (failed runs never win)."""
    best = {}
    for r in rows:
        key = (r["mixer"], r["L"], r["kv"], r["d_model"])
        cur = best.get(key)
        acc = r.get("eval_accuracy") if r["status"] == "ok" else None
        if cur is None or (acc is not None and (cur["accuracy"] is None or acc > cur["accuracy"])):
            best[key] = {"mixer": r["mixer"], "L": r["L"], "kv": r["kv"], "d_model": r["d_model"],
                         "accuracy": acc, "lr": r["lr"] if acc is not None else None,
                         "eval_loss": r.get("eval_loss") if acc is not None else None}
    return [best[k] for k in sorted(best, key=lambda k: (k[1], k[3], k[0]))]


def budget(args):
    return {"tokens_per_run": None if args.steps else args.tokens, "steps_per_run": args.steps or None,
            "budget_seconds": args.budget_seconds or None, "batch": args.batch, "vocab": args.vocab,
            "random_non_queries": args.random_non_queries, "lrs": sl.parse_list(args.lrs, float),
            "eval_examples": args.eval_examples, "seed": args.seed,
            "train_examples": f"{args.examples_per_point} of each point" if args.train_mix
            else "min(100000, steps x batch)",
            "jobs": args.jobs, "threads_per_run": 1, "time_limit_s": args.time_limit or None, "smoke": args.smoke,
            "train_mix": args.train_mix, "examples_per_point": args.examples_per_point if args.train_mix else None,
            "init_std": args.init_std, "gate_dt_range": sl.parse_list(args.gate_dt_range, float)}


def budget_words(b):
    return f"{b['tokens_per_run']:.0f} tokens" if b["tokens_per_run"] else f"{b['steps_per_run']} steps"


def markdown(result):
    b = result["budget"]
    mixers = result["mixers"]
    cols = [(L, kv, d) for L, kv in result["grid"] for d in result["d_models"]]
    best = {(r["mixer"], r["L"], r["kv"], r["d_model"]): r for r in result["best"]}
    lines = ["# MQAR grid (Zoology figure 2 setting, reduced budget)\n",
             f"Machine: {result['machine']['cpu']} ({result['machine']['cores']} cores), "
             f"{result['machine']['date']}, gdn {result['machine']['gdn_commit']}.\n",
             f"Vocabulary {b['vocab']} (Zoology: 8192), random_non_queries {b['random_non_queries']} (Zoology's "
             f"figure 2: False). Budget per run: {budget_words(b)} at batch {b['batch']}; learning rates "
             f"{b['lrs']} (best kept, in parentheses); {b['eval_examples']} held-out examples. Zoology: 64 "
             "epochs x 100k examples.\n",
             (f"One run per mixer, d_model and lr on a mixture of the points ({b['examples_per_point']} examples "
              "each, length-grouped batches), scored on each point (Zoology's protocol). " if b.get("train_mix")
              else "") + f"Initial weight std {b.get('init_std', 0.02)}, gate dt range {b.get('gate_dt_range')}.\n",
             "Accuracy (%) on the queried positions, best learning rate:\n"]
    header = ["mixer"] + [f"L={L} kv={kv} d={d}" for L, kv, d in cols]
    body = []
    for m in mixers:
        row = [m]
        for L, kv, d in cols:
            r = best.get((m, L, kv, d))
            if r is None:
                row.append("")
            elif r["accuracy"] is None:
                row.append("failed")
            else:
                row.append(f"{sl.pct(r['accuracy'])} ({r['lr']:g})")
        body.append(row)
    lines.append(sl.markdown_table(header, body))
    failed = [r for r in result["runs"] if r["status"] != "ok"]
    if failed:
        lines.append(f"\n{len(failed)} run(s) did not finish:\n")
        lines.append(sl.markdown_table(["run", "status", "error"],
                                       [[r["run"], r["status"], r.get("error", "")] for r in failed]))
    return "\n".join(lines)


def svg(result):
    Ls = result["grid"]
    mixers, ds = result["mixers"], result["d_models"]
    best = {(r["mixer"], r["L"], r["kv"], r["d_model"]): r["accuracy"] for r in result["best"]}
    pw, ph, gap, left, top = 240, 220, 50, 60, 60
    width = left + len(Ls) * (pw + gap) + 150
    body = []
    for i, (L, kv) in enumerate(Ls):
        series = [(m, [best.get((m, L, kv, d)) for d in ds]) for m in mixers]
        body += sl.svg_line_panel(left + i * (pw + gap), top, pw, ph, f"L = {L}, {kv} key-value pairs", ds, series,
                                  "d_model", sl.COLORS)
    missing = {m for m in mixers if all(best.get((m, L, kv, d)) is None for L, kv in Ls for d in ds)}
    body += sl.svg_legend(left + len(Ls) * (pw + gap), top + 10,
                          [m + (" (failed)" if m in missing else "") for m in mixers], sl.COLORS)
    return sl.svg_doc(width, top + ph + 60, body,
                      f"MQAR (Zoology), vocab {result['budget']['vocab']}, 2 layers: best accuracy over lr, "
                      f"{budget_words(result['budget'])} per run")


def main(argv=None):
    args = parse_args(argv)
    base = sl.out_base(args, "mqar-grid")
    result = {"benchmark": "mqar_grid", "machine": sl.machine(), "budget": budget(args),
              "grid": grid_points(args), "d_models": sl.parse_list(args.d_models, int),
              "mixers": sl.parse_list(args.mixers), "runs": [], "best": []}

    def save(rows):
        result["runs"] = rows
        result["best"] = best_rows(point_rows(rows, args) if args.train_mix else rows)
        sl.write_json(base + ".json", result)
        sl.write_atomic(base + ".md", markdown(result))
        sl.write_atomic(base + ".svg", svg(result))

    with tempfile.TemporaryDirectory(prefix="mqar-grid-") as work:
        scale = plan(args, work)
        result["budget"] = budget(args)
        result["budget"]["rate_scale"] = scale
        runs = make_mix_runs(args, work) if args.train_mix else make_runs(args)
        for r in runs:
            r.cost /= scale
        sl.log_plan(runs, args.jobs)
        if args.dry_run:
            return 0
        rows = sl.Sweep(args, runs, work, save).run()
    save(rows)
    sl.log(f"wrote {base}.json, {base}.md, {base}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
