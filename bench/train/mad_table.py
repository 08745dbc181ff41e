#!/usr/bin/env python3
"""The MAD synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"; github.com/athms/mad-lab) for Gated DeltaNet, DeltaNet, GLA, Mamba2 and attention,
beside the published table of the DeltaNet blog post.

Reproduces MAD's baseline setting of each task (configs/tasks/*.yml: vocab, length, noise, motif
sizes; 12,800 training and 1,280 test examples, 256 training examples for memorization) as
src/train/mad.cpp generates it, and MAD's training recipe (mad/configs.py MADConfig): batch 128,
200 epochs, AdamW with lr in {1e-4, 5e-4, 1e-3} x weight decay in {0, 0.1} (best kept), cosine
decay to 1e-6, no warmup. The model is MAD's: 2 blocks of (mixer, SwiGLU) at width 128; the
SwiGLU hidden size is MAD's int(2 * 128 * 4/3) rounded up to 16 = 352. Delta-family mixers
(gdn's shell: short conv, L2-normed q/k, gated output norm) use 4 heads of head_dim 32 with
expand_v 2; attention uses MAD's mh-attention shape, 16 heads of 8.

Reduced (stated next to the table): every run trains for --steps optimizer steps (default:
MAD's 200 epochs, i.e. 20,000 steps on the recall tasks, 400 on memorization), never more
than MAD's 200 epochs; --budget-seconds picks the steps to fit a wall-clock budget; --lrs and
--wds choose a subset of MAD's sweep. Only the baseline setting of each task is run, whereas
a published MAD score averages the best accuracy over the baseline and its harder settings
(mad/analysis.py compute_model_mad_scores), so the published numbers are a harder average.

Compression runs as MAD runs it, with its auto-encoder (mad/model/auto_encoder.py; gdn's model
head "autoencoder"): the 2 blocks encode the sequence, the stream at the last position (the
compression token) is the code, and a 2-layer GELU MLP fed with code + sinusoidal position
embeddings, then the final norm and a biased head, rebuild every token; the loss and the
accuracy cover all seq_len positions (MAD's targets are the inputs).

Outputs <out>/<date>-mad-table.{json,md}.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweeplib as sl  # noqa: E402

MIXERS = ["gated_deltanet", "deltanet", "gla", "mamba2", "attention"]
# name in gdn, MAD's name, sequence length, training examples, vocabulary (MAD's baseline
# settings, configs/tasks/*.yml; MAD sizes the model's embedding and head to the task's vocab).
TASKS = [("mad_compression", "Compress", 32, 12800, 16),
         ("mad_in_context_recall", "In-Context Recall", 128, 12800, 16),
         ("mad_noisy_in_context_recall", "Noisy Recall", 128, 12800, 32),
         ("mad_fuzzy_in_context_recall", "Fuzzy Recall", 128, 12800, 16),
         ("mad_selective_copying", "Selective Copy", 256, 12800, 16),
         ("mad_memorization", "Memorize", 32, 256, 256)]
TEST_EXAMPLES, BATCH, EPOCHS, MIN_LR = 1280, 128, 200, 1e-6
COMPRESSION_NOTE = (
    "trained and scored as MAD does (mad/model/auto_encoder.py), with gdn's model head \"autoencoder\": the "
    "blocks encode the sequence, the residual stream at the last position (the compression token) is the code, a "
    "decoder (RMSNorm, Linear+bias, GELU, RMSNorm, Linear+bias, GELU) fed with code + sinusoidal position "
    "embeddings of each position, then the final RMSNorm and a biased head, rebuilds all 32 tokens; loss and "
    "accuracy over all 32 positions, the compression token included (MAD's targets are the inputs; chance is "
    "(31/15 + 1)/32 = 9.6% once the compression token is learnt). A causal LM "
    "cannot be scored on it (its labels equal its inputs), so gdn train refuses the task with the lm head.")

# The DeltaNet blog post's MAD table (Songlin Yang, "DeltaNet Explained (Part I)", 2024-12-03,
# https://sustcsonglin.github.io/blog/2024/deltanet-1/ ; source: github.com/sustcsonglin/
# sustcsonglin.github.io, _posts/2024-12-03-deltanet-1.md). Columns as published.
PUBLISHED = {
    "source": "https://sustcsonglin.github.io/blog/2024/deltanet-1/",
    "columns": ["Compress", "Fuzzy Recall", "In-Context Recall", "Memorize", "Noisy Recall", "Selective Copy",
                "Average"],
    "rows": {
        "Transformer": [51.6, 29.8, 94.1, 85.2, 86.8, 99.6, 74.5],
        "Hyena": [45.2, 7.9, 81.7, 89.5, 78.8, 93.1, 66.0],
        "Multihead Hyena": [44.8, 14.4, 99.0, 89.4, 98.6, 93.0, 73.2],
        "Mamba": [52.7, 6.7, 90.4, 89.5, 90.1, 86.3, 69.3],
        "GLA": [38.8, 6.9, 80.8, 63.3, 81.6, 88.6, 60.0],
        "DeltaNet": [42.2, 35.7, 100, 52.8, 100, 100, 71.8],
    },
}
# Which published row stands beside which gdn mixer (Mamba there is MAD's Mamba layer, not Mamba2).
PUBLISHED_ROW = {"attention": "Transformer", "mamba2": "Mamba", "gla": "GLA", "deltanet": "DeltaNet"}

# Training tokens/s of one single-threaded run of this model (width 128), planning only;
# rescaled by a calibration run on the machine at hand.
REFERENCE_RATE = {32: 10000, 128: 8000, 256: 5000}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=sl.help_formatter())
    sl.add_common_args(p)
    p.add_argument("--mixers", default=",".join(MIXERS), help="comma-separated mixers (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(t[0] for t in TASKS), help="tasks (default: all six)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="train nothing: join the runs of earlier result files (tasks run separately) into one table")
    p.add_argument("--lrs", default="1e-4,5e-4,1e-3", help="learning rates (default: MAD's %(default)s)")
    p.add_argument("--wds", default="0,0.1", help="weight decays (default: MAD's %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=0, help="steps per run, capped at MAD's 200 epochs "
                                                             "(default 0: MAD's 200 epochs)")
    budget.add_argument("--budget-seconds", type=float, default=0,
                        help="choose --steps so that the sweep takes about this many wall seconds on --jobs")
    p.add_argument("--batch", type=int, default=BATCH, help="sequences per step (default: MAD's %(default)s; "
                   "a smaller batch gives more steps for the same tokens in a reduced setting)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model init and batch order")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.lrs, args.wds, args.batch = 3, "1e-3", "0", 16
        args.tasks = "mad_compression,mad_in_context_recall,mad_memorization"
        if args.mixers == ",".join(MIXERS):
            args.mixers = "gated_deltanet,attention"
    return args


def task_info(name):
    for t in TASKS:
        if t[0] == name:
            return t
    sl.fail(f"unknown task {name} (MAD tasks: {', '.join(t[0] for t in TASKS)})")


def full_steps(train_examples, batch):
    """MAD's 200 epochs in steps of `batch`."""
    return EPOCHS * max(1, train_examples // batch)


def model_config(mixer, smoke, task="mad_in_context_recall"):
    d = 32 if smoke else 128
    mlp = 64 if smoke else 16 * ((int(2 * d * 4 / 3) + 15) // 16)
    # MAD's backbone for compression is its auto-encoder, a language model for the others.
    head = "autoencoder" if task == "mad_compression" else "lm"
    return {"vocab_size": task_info(task)[4], "d_model": d, "layers": 2, "mixers": [mixer], "heads": 2 if smoke else 4, "head_dim": 16 if smoke else 32,
            "expand_v": 2, "conv_size": 4, "attn_heads": 4 if smoke else 16, "mlp_hidden": mlp,
            "tie_embeddings": False, "head": head}


def steps_for(args, train_examples):
    full = full_steps(train_examples, args.batch)
    return min(full, args.steps) if args.steps else full


def make_runs(args, scale):
    runs = []
    for mixer in sl.parse_list(args.mixers):
        for task in sl.parse_list(args.tasks):
            _, mad_name, L, n_train, _ = task_info(task)
            n_train_run = 64 if args.smoke else n_train
            n_test = 32 if args.smoke else TEST_EXAMPLES
            steps = steps_for(args, n_train_run)
            for lr in sl.parse_list(args.lrs, float):
                for wd in sl.parse_list(args.wds, float):
                    config = {
                        "model": dict(model_config(mixer, args.smoke, task)),
                        "train": {"batch": args.batch, "steps": steps, "lr": lr, "weight_decay": wd,
                                  "warmup": 0.0, "min_lr_ratio": min(1.0, MIN_LR / lr), "clip": 1.0,
                                  "eval_every": 0, "seed": args.seed},
                        "data": {"task": task, "train_examples": n_train_run, "eval_examples": n_test,
                                 "seed": 12345},
                    }
                    rate = REFERENCE_RATE[L] * scale
                    cost = steps * config["train"]["batch"] * L / rate + 1 + n_test * L / (3 * rate)
                    meta = {"mixer": mixer, "task": task, "mad_task": mad_name, "lr": lr, "weight_decay": wd,
                            "steps": steps, "mad_steps": full_steps(n_train_run, args.batch),
                            "epochs": round(steps * config["train"]["batch"] / n_train_run, 2)}
                    runs.append(sl.Run(f"{mixer}-{task}-lr{lr:g}-wd{wd:g}", ["train", "--json", "--threads", "1"],
                                       config, cost, meta))
    return runs


def plan(args, work):
    scale = 1.0
    if args.budget_seconds > 0 and not args.smoke:
        cal = {"model": model_config("gated_deltanet", False),
               "train": {"batch": args.batch, "steps": 4, "lr": 1e-3, "eval_every": 0},
               "data": {"task": "mad_in_context_recall", "train_examples": 512, "eval_examples": 8}}
        measured = sl.calibrate(args.gdn, cal, work)
        if measured:
            scale = measured / REFERENCE_RATE[128]
            sl.log(f"calibration: {measured:.0f} tokens/s on in-context recall ({scale:.2f} x the reference rates)")
        keys = [task_info(t) for _ in sl.parse_list(args.mixers) for t in sl.parse_list(args.tasks)
                for _ in sl.parse_list(args.lrs) for _ in sl.parse_list(args.wds)]
        rates = [REFERENCE_RATE[k[2]] * scale for k in keys]
        units = [args.batch * k[2] / r for k, r in zip(keys, rates)]
        fixed = [1 + TEST_EXAMPLES * k[2] / (3 * r) for k, r in zip(keys, rates)]
        args.steps = int(sl.fit_budget(args.budget_seconds, args.jobs, units, fixed))
        if args.steps <= 0:
            sl.fail(f"--budget-seconds {args.budget_seconds:g} is too short for {len(keys)} runs")
        sl.log(f"budget: {args.steps} steps per run (capped at MAD's 200 epochs) to fit {args.budget_seconds:g} s")
    return scale


def best_rows(rows):
    best = {}
    for r in rows:
        key = (r["mixer"], r["task"])
        acc = r.get("eval_accuracy") if r["status"] == "ok" else None
        cur = best.get(key)
        if cur is None or (acc is not None and (cur["accuracy"] is None or acc > cur["accuracy"])):
            best[key] = {"mixer": r["mixer"], "task": r["task"], "mad_task": r["mad_task"], "accuracy": acc,
                         "lr": r["lr"] if acc is not None else None,
                         "weight_decay": r["weight_decay"] if acc is not None else None,
                         "steps": r["steps"], "mad_steps": r["mad_steps"], "epochs": r["epochs"],
                         "vocab_size": r.get("model", {}).get("vocab_size")}
    return list(best.values())


def markdown(result):
    b, m = result["budget"], result["machine"]
    tasks = result["tasks"]
    best = {(r["mixer"], r["task"]): r for r in result["best"]}
    cols = [t[1] for t in TASKS]
    lines = ["# MAD synthetic tasks (baseline settings)\n",
             f"Machine: {m['cpu']} ({m['cores']} cores), {m['date']}, gdn {m['gdn_commit']}.\n"]
    for src in result.get("merged_from", []):
        sm = src["machine"]
        lines.append(f"Merged from {src['file']}: {', '.join(task_info(t)[1] for t in src['tasks'])} "
                     f"({sm['cpu']}, {sm['date']}, gdn {sm['gdn_commit']}).\n")
    setting = []
    for t in tasks:
        r = next((x for x in result["best"] if x["task"] == t), None)
        if r:
            vocab = f", model vocab {r['vocab_size']}" if r.get("vocab_size") else ""
            setting.append(f"{task_info(t)[1]}: {r['steps']} steps = {r['epochs']} epochs (MAD: 200){vocab}")
    lines.append("**Setting** (reduced where fewer steps than MAD's): batch " + str(b["batch"]) + ", lr "
                 + str(b["lrs"]) + " x weight decay " + str(b["wds"]) + " (best kept), cosine to 1e-6; "
                 + "; ".join(setting) + ". Only MAD's baseline setting of each task; a published MAD score "
                 "averages the baseline with harder settings.\n")
    lines.append("Accuracy (%) on the test split, best lr/wd:\n")
    body = []
    for mixer in result["mixers"]:
        row = [f"{mixer} (gdn)"]
        accs = []
        for t, *_ in TASKS:
            r = best.get((mixer, t))
            if t not in tasks:
                row.append("—")
            elif r is None or r["accuracy"] is None:
                row.append("failed")
            else:
                row.append(sl.pct(r["accuracy"]))
                accs.append(r["accuracy"])
        complete = accs and len(accs) == len(tasks)
        row.append(f"{sl.pct(sum(accs) / len(accs))} ({len(tasks)} tasks)" if complete else "—")
        body.append(row)
    pub = result["published"]
    for name, vals in pub["rows"].items():
        by_col = dict(zip(pub["columns"], vals))
        body.append([f"{name} (published)"] + [str(by_col.get(c, "—")) for c in cols] + [str(by_col["Average"])])
    lines.append(sl.markdown_table(["model"] + cols + ["average"], body))
    lines.append(f"\nPublished: {pub['source']} (MAD scores; Mamba there is MAD's Mamba layer, not Mamba2; "
                 "the post has no Gated DeltaNet row). Pairs: "
                 + ", ".join(f"{k} ↔ {v}" for k, v in PUBLISHED_ROW.items()) + ".\n")
    lines.append("\n**Compression**: " + (COMPRESSION_NOTE if "mad_compression" in tasks
                                           else "not run in this sweep (--tasks).") + "\n")
    failed = [r for r in result["runs"] if r["status"] != "ok"]
    if failed:
        lines.append(f"\n{len(failed)} run(s) did not finish:\n")
        lines.append(sl.markdown_table(["run", "status", "error"],
                                       [[r["run"], r["status"], r.get("error", "")] for r in failed]))
    return "\n".join(lines)


def merge(args, base):
    """One table from result files whose sweeps ran different tasks with the same batch and lr/wd
    sweep (the steps may differ: the table states each task's steps and epochs)."""
    parts = [(path, json.load(open(path))) for path in args.merge]
    budgets = {json.dumps({k: v for k, v in r["budget"].items() if k in ("batch", "lrs", "wds")}, sort_keys=True)
               for _, r in parts}
    if len(budgets) != 1:
        sl.fail("--merge: the files differ in batch or lr/wd sweep: " + "; ".join(sorted(budgets)))
    runs = [row for _, r in parts for row in r["runs"]]
    tasks = [t[0] for t in TASKS if any(row["task"] == t[0] for row in runs)]
    first = parts[0][1]
    result = dict(first, tasks=tasks, runs=runs, best=best_rows(runs), machine=sl.machine(),
                  merged_from=[{"file": os.path.basename(path), "tasks": r["tasks"], "machine": r["machine"]}
                               for path, r in parts])
    sl.write_json(base + ".json", result)
    sl.write_atomic(base + ".md", markdown(result))
    sl.log(f"wrote {base}.json, {base}.md")
    return 0


def main(argv=None):
    args = parse_args(argv)
    base = sl.out_base(args, "mad-table")
    if args.merge:
        return merge(args, base)
    result = {"benchmark": "mad_table", "machine": sl.machine(), "mixers": sl.parse_list(args.mixers),
              "tasks": sl.parse_list(args.tasks), "published": PUBLISHED, "compression": COMPRESSION_NOTE,
              "runs": [], "best": []}

    def save(rows):
        result["runs"] = rows
        result["best"] = best_rows(rows)
        sl.write_json(base + ".json", result)
        sl.write_atomic(base + ".md", markdown(result))

    with tempfile.TemporaryDirectory(prefix="mad-table-") as work:
        scale = plan(args, work)
        result["budget"] = {"steps_per_run": args.steps or "MAD's 200 epochs", "batch": args.batch,
                            "lrs": sl.parse_list(args.lrs, float), "wds": sl.parse_list(args.wds, float),
                            "budget_seconds": args.budget_seconds or None, "rate_scale": scale,
                            "jobs": args.jobs, "threads_per_run": 1, "smoke": args.smoke}
        runs = make_runs(args, scale)
        sl.log_plan(runs, args.jobs)
        if args.dry_run:
            return 0
        rows = sl.Sweep(args, runs, work, save).run()
    save(rows)
    sl.log(f"wrote {base}.json, {base}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
