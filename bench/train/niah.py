#!/usr/bin/env python3
"""S-NIAH-1/2/3 (RULER's single needle in a haystack, as in the Gated DeltaNet paper's table)
over a context-length x needle-depth grid, byte-level, for small models trained on the CPU.

Per (task, mixer): train a small model on the needle task at --train-len with the needle at a
random depth, then evaluate the checkpoint (`gdn eval`) at every length of --eval-lens (longer
than the training length included: length extrapolation) and every depth of --depths.
Tasks as src/train/niah.cpp generates them: 1 = needle in a repeated filler sentence, 2 = in
real English text (data/english.txt, scripts/make_corpus.sh), 3 = as 2 with a UUID value.
The score of a cell is gdn's eval_accuracy: the share of the value's bytes predicted exactly
(teacher-forced), not RULER's exact match of the whole generated answer. Every cell draws its
needles from the same seed, so the cells of S-NIAH-1 ask the same keys and values at different
lengths and depths (a paired design): a model that retrieves them everywhere, or nowhere, scores
the same in every cell; the per-cell eval_loss still differs.

Default mixers: gated_deltanet, deltanet and mamba2 are the recurrent rows of the Gated DeltaNet
paper's S-NIAH table (Mamba2, DeltaNet, Gated DeltaNet), and attention (full, RoPE) is the
reference whose cache holds every token. swa is left out by default: with a window shorter
than the context it can only see needles near the end, which the depth axis shows trivially;
add it with --mixers.

Reduced: the paper evaluates 1.3B models trained on 100B tokens at 1K-8K tokens; here a
--d-model x --layers model (default 128 x 2) trains for --steps steps (or what --budget-seconds
allows) at a few hundred bytes. The exact setting is written into the JSON and the markdown.

Outputs <out>/<date>-niah.{json,md,svg}: one row per trained model with its grid of cells
(failed trainings or evaluations recorded, not dropped), and one heat map per task and mixer.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweeplib as sl  # noqa: E402

MIXERS = ["gated_deltanet", "deltanet", "mamba2", "attention"]
TASKS = ["s_niah_1", "s_niah_2", "s_niah_3"]
CORPUS = "data/english.txt"
# Training tokens/s of one single-threaded run at width 128 by sequence length (planning only;
# rescaled by a calibration run on the machine at hand).
REFERENCE_RATE = {256: 9000, 512: 8000, 1024: 7000, 2048: 6000}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=sl.help_formatter())
    sl.add_common_args(p)
    p.add_argument("--mixers", default=",".join(MIXERS), help="comma-separated mixers (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(TASKS), help="tasks (default: %(default)s)")
    p.add_argument("--train-len", type=int, default=512, help="training length in bytes (default: %(default)s)")
    p.add_argument("--eval-lens", default="256,512,1024,2048", help="evaluation lengths (default: %(default)s)")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="needle depths (default: %(default)s)")
    p.add_argument("--eval-examples", type=int, default=40, help="examples per cell (default: %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=1000, help="training steps per model (default: %(default)s)")
    budget.add_argument("--budget-seconds", type=float, default=0,
                        help="choose --steps so that the sweep takes about this many wall seconds on --jobs")
    p.add_argument("--batch", type=int, default=16, help="sequences per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--d-model", type=int, default=128, help="model width (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="layers (default: %(default)s)")
    p.add_argument("--window", type=int, default=128, help="swa window when swa is among the mixers")
    p.add_argument("--corpus", default=CORPUS, help="haystack text of S-NIAH-2/3 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model init and the data")
    args = p.parse_args(argv)
    if args.smoke:
        args.tasks, args.train_len, args.eval_lens, args.depths = "s_niah_1", 256, "256,384", "0,1"
        args.steps, args.batch, args.eval_examples, args.d_model = 3, 4, 4, 32
        if args.mixers == ",".join(MIXERS):
            args.mixers = "gated_deltanet,attention"
    return args


def model_config(args, mixer):
    d = args.d_model
    heads = 2
    return {"vocab_size": 256, "d_model": d, "layers": args.layers, "mixers": [mixer], "heads": heads,
            "head_dim": d // heads, "attn_heads": heads, "window": args.window, "mlp_hidden": 2 * d,
            "tie_embeddings": False}


def data_spec(args, task, length, depth):
    spec = {"task": task, "seq_len": length, "depth": depth, "seed": args.seed}
    if task != "s_niah_1":
        spec["path"] = args.corpus
    return spec


def rate(L, scale):
    near = min(REFERENCE_RATE, key=lambda x: abs(x - L))
    return REFERENCE_RATE[near] * scale


def eval_cost(args, scale):
    return sum(1 + args.eval_examples * L / (3 * rate(L, scale)) for L in sl.parse_list(args.eval_lens, int)
               for _ in sl.parse_list(args.depths, float))


def make_runs(args, scale, work):
    runs = []
    lens, depths = sl.parse_list(args.eval_lens, int), sl.parse_list(args.depths, float)
    for task in sl.parse_list(args.tasks):
        for mixer in sl.parse_list(args.mixers):
            name = f"{mixer}-{task}"
            ckpt = os.path.join(work, name + ".safetensors")
            config = {"model": model_config(args, mixer),
                      "train": {"batch": args.batch, "steps": args.steps, "lr": args.lr, "warmup": 0.05,
                                "weight_decay": 0.1, "clip": 1.0, "eval_every": 0, "seed": args.seed},
                      "data": dict(data_spec(args, task, args.train_len, -1), train_examples=args.steps * args.batch,
                                   eval_examples=args.eval_examples)}
            cost = args.steps * args.batch * args.train_len / rate(args.train_len, scale) + eval_cost(args, scale)
            meta = {"mixer": mixer, "task": task, "train_len": args.train_len, "steps": args.steps,
                    "batch": args.batch, "lr": args.lr}

            def evaluate(row, sweep, task=task, name=name, ckpt=ckpt):
                row["cells"] = []
                for L in lens:
                    for depth in depths:
                        cfg = os.path.join(work, f"{name}-eval-{L}-{depth:g}.json")
                        sl.write_json(cfg, {"data": dict(data_spec(args, task, L, depth),
                                                         eval_examples=args.eval_examples)})
                        argv = [args.gdn, "eval", "--checkpoint", ckpt, "--config", cfg, "--json", "--threads", "1",
                                "--batch", "8"]
                        fields, res = sweep.run_eval(argv)
                        cell = {"length": L, "depth": depth, **fields}
                        if res is not None:
                            cell.update(accuracy=res["eval_accuracy"], loss=res["eval_loss"])
                        row["cells"].append(cell)
                bad = [c for c in row["cells"] if c["status"] != "ok"]
                if bad:
                    row["error"] = f"{len(bad)} of {len(row['cells'])} evaluations failed: {bad[0].get('error')}"

            runs.append(sl.Run(name, ["train", "--json", "--threads", "1", "--checkpoint", ckpt], config, cost, meta,
                               after=evaluate))
    return runs


def plan(args, work):
    scale = 1.0
    if args.budget_seconds > 0 and not args.smoke:
        cal = {"model": model_config(args, "gated_deltanet"),
               "train": {"batch": args.batch, "steps": 4, "lr": 1e-3, "eval_every": 0},
               "data": dict(data_spec(args, "s_niah_1", args.train_len, -1), train_examples=4 * args.batch,
                            eval_examples=2)}
        measured = sl.calibrate(args.gdn, cal, work)
        if measured:
            scale = measured / rate(args.train_len, 1.0)
            sl.log(f"calibration: {measured:.0f} tokens/s at {args.train_len} bytes ({scale:.2f} x the reference)")
        n = len(sl.parse_list(args.tasks)) * len(sl.parse_list(args.mixers))
        unit = args.batch * args.train_len / rate(args.train_len, scale)
        args.steps = int(sl.fit_budget(args.budget_seconds, args.jobs, [unit] * n, [eval_cost(args, scale)] * n))
        if args.steps <= 0:
            sl.fail(f"--budget-seconds {args.budget_seconds:g} is too short for {n} models and their evaluations")
        sl.log(f"budget: {args.steps} training steps per model to fit {args.budget_seconds:g} s")
    return scale


def cell_grid(row):
    """{(length, depth): accuracy or None} of a run's cells."""
    return {(c["length"], c["depth"]): (c.get("accuracy") if c["status"] == "ok" else None)
            for c in row.get("cells", [])}


def markdown(result):
    b, m = result["budget"], result["machine"]
    lines = ["# S-NIAH length x depth (small byte-level models)\n",
             f"Machine: {m['cpu']} ({m['cores']} cores), {m['date']}, gdn {m['gdn_commit']}.\n",
             f"Setting: {b['d_model']} x {b['layers']} layers, trained {b['steps']} steps of {b['batch']} x "
             f"{b['train_len']} bytes (lr {b['lr']}), needle at a random depth; each cell: {b['eval_examples']} "
             "examples, accuracy on the value's bytes (teacher-forced). Lengths above the training length test "
             "extrapolation. The Gated DeltaNet paper's S-NIAH table uses 1.3B models at 1K-8K tokens.\n"]
    lens, depths = result["eval_lens"], result["depths"]
    for r in result["runs"]:
        lines.append(f"\n## {r['task']}, {r['mixer']}: {r['status']}"
                     + (f" ({r.get('error')})" if r.get("error") else "") + "\n")
        if r["status"] == "failed" and not r.get("cells"):
            continue
        g = cell_grid(r)
        body = [[f"{d:g}"] + [("fail" if (L, d) in g and g[(L, d)] is None else
                                sl.pct(g.get((L, d)))) for L in lens] for d in depths]
        avg = [g[(L, d)] for L in lens for d in depths if g.get((L, d)) is not None]
        lines.append(sl.markdown_table(["depth \\ length"] + [str(L) for L in lens], body))
        if avg:
            lines.append(f"\nmean {sl.pct(sum(avg) / len(avg))}%\n")
    return "\n".join(lines)


def svg(result):
    tasks, mixers = result["tasks"], result["mixers"]
    lens, depths = result["eval_lens"], result["depths"]
    cw, ch = 46, 22
    pw, ph = max(cw * len(lens), 180) + 100, ch * len(depths) + 80
    runs = {(r["task"], r["mixer"]): r for r in result["runs"]}
    body = []
    for i, task in enumerate(tasks):
        for j, mixer in enumerate(mixers):
            r = runs.get((task, mixer))
            g = cell_grid(r) if r else {}
            title = f"{task}, {mixer}" + ("" if r and r["status"] == "ok" else " (failed)" if r else " (not run)")
            body += sl.svg_heatmap(90 + j * pw, 60 + i * ph, cw, ch, title, lens, depths,
                                   lambda d, L, g=g: g.get((L, d)), "context length (bytes)", "needle depth")
    st = result["budget"]
    return sl.svg_doc(max(90 + len(mixers) * pw, 760), 50 + len(tasks) * ph, body,
                      f"S-NIAH accuracy on the value bytes (%), trained at {st['train_len']} bytes, "
                      f"{st['d_model']} x {st['layers']} layers, {st['steps']} steps")


def main(argv=None):
    args = parse_args(argv)
    base = sl.out_base(args, "niah")
    result = {"benchmark": "niah", "machine": sl.machine(), "tasks": sl.parse_list(args.tasks),
              "mixers": sl.parse_list(args.mixers), "eval_lens": sl.parse_list(args.eval_lens, int),
              "depths": sl.parse_list(args.depths, float), "runs": []}

    def save(rows):
        result["runs"] = rows
        result["cells"] = sum(len(r.get("cells", [])) for r in rows)
        sl.write_json(base + ".json", result)
        sl.write_atomic(base + ".md", markdown(result))
        sl.write_atomic(base + ".svg", svg(result))

    with tempfile.TemporaryDirectory(prefix="niah-") as work:
        scale = plan(args, work)
        result["budget"] = {"train_len": args.train_len, "steps": args.steps, "batch": args.batch, "lr": args.lr,
                             "d_model": args.d_model, "layers": args.layers, "eval_examples": args.eval_examples,
                             "budget_seconds": args.budget_seconds or None, "rate_scale": scale, "jobs": args.jobs,
                             "threads_per_run": 1, "corpus": args.corpus, "smoke": args.smoke}
        runs = make_runs(args, scale, work)
        sl.log_plan(runs, args.jobs)
        if args.dry_run:
            return 0
        rows = sl.Sweep(args, runs, work, save).run()
    save(rows)
    sl.log(f"wrote {base}.json, {base}.md, {base}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
