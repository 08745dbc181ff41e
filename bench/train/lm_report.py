#!/usr/bin/env python3
"""Byte-level language modelling report: trains a small LM per mixer on real English text
(data/english.txt from scripts/make_corpus.sh), reports the held-out loss in nats per byte,
bits per byte and per-byte perplexity, and samples continuations of held-out prompts from each
trained checkpoint with `gdn generate`.

What it shows: that the trainer, the checkpoints and the decoder work end to end on real text,
and how the mixers compare at a tiny budget. Not a reproduction of a paper's perplexities: the
papers train 0.4-1.3B models on 15-100B tokens; here a --d-model x --layers byte-level model
(default 128 x 4, about 1.2M parameters; configs/lm_10m_gdn.json with --config) trains for
--steps steps (or what --budget-seconds allows) of --batch x --seq-len bytes. For scale, the
order-0 (unigram) entropy of the training split is reported beside the results: a model that
learned nothing about context cannot beat it.

The evaluation split is the last 5% of the file (gdn's text task); prompts are taken from it at
fixed offsets, so the samples continue text the model has not seen, and the true continuation
is written beside each sample.

Outputs <out>/<date>-lm-report.{json,md}.
"""
import argparse
import glob
import math
import os
import sys
import tempfile
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweeplib as sl  # noqa: E402

MIXERS = ["gated_deltanet", "deltanet", "mamba2", "gla", "linear_attention", "attention"]
CORPUS = "data/english.txt"
EVAL_FRACTION = 0.05  # gdn's text task default
# tokens/s of the default model on one core at T=512 (1.7k measured on a loaded 2-core EPYC;
# planning only, rescaled by a calibration run)
REFERENCE_RATE = 2500


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=sl.help_formatter())
    sl.add_common_args(p)
    p.add_argument("--mixers", default=",".join(MIXERS), help="comma-separated mixers (default: %(default)s)")
    p.add_argument("--corpus", default=CORPUS, help="text file (default: %(default)s)")
    p.add_argument("--config", default="", help="base run description (e.g. configs/lm_10m_gdn.json); "
                                                "default: the small model below")
    p.add_argument("--d-model", type=int, default=128, help="width of the default model (default: %(default)s)")
    p.add_argument("--layers", type=int, default=4, help="layers of the default model (default: %(default)s)")
    p.add_argument("--head-dim", type=int, default=64, help="head_dim of the default model (default: %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=500, help="training steps per mixer (default: %(default)s)")
    budget.add_argument("--budget-seconds", type=float, default=0,
                        help="choose --steps so that the report takes about this many wall seconds")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default: %(default)s)")
    p.add_argument("--seq-len", type=int, default=512, help="bytes per sequence (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--eval-examples", type=int, default=64, help="held-out sequences (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="threads per training (default: %(default)s)")
    p.add_argument("--samples", type=int, default=3, help="prompts to continue (default: %(default)s)")
    p.add_argument("--sample-bytes", type=int, default=200, help="bytes per continuation (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=40, help="top-k of the sampler (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model init, the batch order and sampling")
    args = p.parse_args(argv)
    if args.smoke:
        args.d_model, args.layers, args.head_dim, args.steps, args.batch, args.seq_len = 32, 1, 16, 3, 2, 64
        args.eval_examples, args.samples, args.sample_bytes = 2, 1, 16
        if args.mixers == ",".join(MIXERS):
            args.mixers = "gated_deltanet,attention"
    return args


def smoke_corpus(work):
    """The repository's own markdown, for the smoke test (data/english.txt may be absent)."""
    path = os.path.join(work, "smoke-corpus.txt")
    with open(path, "w") as out:
        for f in sorted(glob.glob(os.path.join(sl.REPO, "*.md")) + glob.glob(os.path.join(sl.REPO, "docs", "*.md"))):
            out.write(open(f, errors="replace").read())
    return path


def corpus_facts(path, n_prompts, prompt_bytes=80, continuation_bytes=200):
    """Order-0 entropy of the training split (bits/byte) and prompts from the evaluation split."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        return {"error": f"cannot read {path}: {e}"}, []
    split = int(len(data) * (1 - EVAL_FRACTION))
    counts = Counter(data[:split])
    n = sum(counts.values()) or 1
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    held = data[split:]
    prompts = []
    for i in range(n_prompts):
        at = len(held) * (i + 1) // (n_prompts + 1)
        nl = held.find(b"\n", at)  # start at a line
        at = nl + 1 if 0 <= nl < at + 400 else at
        text = held[at:at + prompt_bytes].decode("utf-8", "replace")
        if text.strip():
            prompts.append({"prompt": text, "truth": held[at + prompt_bytes:at + prompt_bytes + continuation_bytes]
                           .decode("utf-8", "replace")})
    return {"bytes": len(data), "train_bytes": split, "unigram_bits_per_byte": entropy}, prompts


def base_config(args, mixer, corpus):
    if args.config:
        import json
        cfg = json.load(open(args.config))
        cfg["model"]["mixers"] = [mixer]
        cfg.setdefault("data", {})
    else:
        d = args.d_model
        cfg = {"model": {"vocab_size": 256, "d_model": d, "layers": args.layers, "mixers": [mixer],
                         "heads": max(1, d // args.head_dim), "head_dim": args.head_dim, "mlp_hidden": 0,
                         "tie_embeddings": False},
               "train": {"warmup": 0.02, "weight_decay": 0.1}, "data": {}}
    cfg["train"].update({"batch": args.batch, "steps": args.steps, "lr": args.lr, "eval_every": 0, "seed": args.seed})
    cfg["data"] = {"task": "text", "path": corpus, "seq_len": args.seq_len,
                   "train_examples": args.steps * args.batch, "eval_examples": args.eval_examples}
    return cfg


def make_runs(args, corpus, prompts, work, scale):
    runs = []
    for mixer in sl.parse_list(args.mixers):
        ckpt = os.path.join(work, mixer + ".safetensors")
        cfg = base_config(args, mixer, corpus)
        cost = args.steps * args.batch * args.seq_len / (REFERENCE_RATE * scale) + 5

        def report(row, sweep, ckpt=ckpt):
            loss = row["eval_loss"]
            row["nats_per_byte"] = loss
            row["bits_per_byte"] = loss / math.log(2)
            row["perplexity"] = math.exp(loss)
            row["samples"] = []
            for i, p in enumerate(prompts):
                argv = [args.gdn, "generate", "--model", ckpt, "--prompt", p["prompt"], "--max-tokens",
                        str(args.sample_bytes), "--temperature", str(args.temperature), "--top-k", str(args.top_k),
                        "--seed", str(args.seed + i), "--threads", "1", "--json"]
                rc, out, err, secs, timed_out = sweep._exec(argv, sweep._timeout())
                res = sl.last_json_line(out) if rc == 0 and not timed_out else None
                if res is None or "text" not in res:
                    row["samples"].append({"prompt": p["prompt"], "status": "failed",
                                           "error": (err.strip().splitlines() or ["(no output)"])[-1]})
                else:
                    row["samples"].append({"prompt": p["prompt"], "status": "ok", "continuation": res["text"],
                                           "truth": p["truth"],
                                           "decode_tokens_per_s": res.get("decode_tokens_per_s")})
            if any(s["status"] != "ok" for s in row["samples"]):
                row["error"] = "sampling failed: " + next(s["error"] for s in row["samples"] if s["status"] != "ok")

        meta = {"mixer": mixer, "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len,
                "train_bytes": args.steps * args.batch * args.seq_len, "lr": args.lr}
        runs.append(sl.Run(mixer, ["train", "--json", "--threads", str(args.threads), "--checkpoint", ckpt], cfg,
                           cost, meta, after=report))
    return runs


def plan(args, corpus, work):
    scale = 1.0
    if args.budget_seconds > 0 and not args.smoke:
        cal = base_config(args, "gated_deltanet", corpus)
        cal["train"].update(steps=3)
        cal["data"].update(train_examples=3 * args.batch, eval_examples=1)
        measured = sl.calibrate(args.gdn, cal, work)
        if measured:
            scale = measured / REFERENCE_RATE
            sl.log(f"calibration: {measured:.0f} tokens/s ({scale:.2f} x the reference rate)")
        n = len(sl.parse_list(args.mixers))
        unit = args.batch * args.seq_len / (REFERENCE_RATE * scale)
        fixed = 10 + args.eval_examples * args.seq_len / (3 * REFERENCE_RATE * scale)
        args.steps = int(sl.fit_budget(args.budget_seconds, args.jobs, [unit] * n, [fixed] * n))
        if args.steps <= 0:
            sl.fail(f"--budget-seconds {args.budget_seconds:g} is too short")
        sl.log(f"budget: {args.steps} steps of {args.batch} x {args.seq_len} bytes per mixer")
    return scale


def fenced(text):
    return "~~~~text\n" + text.replace("~~~~", "~ ~ ~ ~") + "\n~~~~\n"


def markdown(result):
    b, m, c = result["budget"], result["machine"], result["corpus"]
    lines = ["# Byte-level language modelling\n",
             f"Machine: {m['cpu']} ({m['cores']} cores), {m['date']}, gdn {m['gdn_commit']}.\n",
             f"Corpus: {b['corpus']} ({c.get('bytes', '?')} bytes; last 5% held out). Training: {b['steps']} steps of "
             f"{b['batch']} x {b['seq_len']} bytes ({b['steps'] * b['batch'] * b['seq_len']} bytes) per mixer, lr "
             f"{b['lr']}; model {b['model']}. Evaluation: {b['eval_examples']} held-out sequences.\n"]
    if "unigram_bits_per_byte" in c:
        lines.append(f"Order-0 entropy of the training split: {c['unigram_bits_per_byte']:.3f} bits/byte "
                     "(what a model without context reaches).\n")
    body = []
    for r in result["runs"]:
        if r["status"] == "ok":
            body.append([r["mixer"], r.get("params", ""), f"{r['nats_per_byte']:.4f}", f"{r['bits_per_byte']:.4f}",
                         f"{r['perplexity']:.3f}", f"{r.get('tokens_per_s', 0):.0f}", f"{r['seconds']:.0f}"])
        else:
            body.append([r["mixer"], "", "failed", "", "", "", r.get("error", "")])
    lines.append(sl.markdown_table(["mixer", "params", "loss (nats/byte)", "bits/byte", "perplexity (per byte)",
                                    "train tokens/s", "seconds"], body))
    lines.append(f"\n## Samples (temperature {b['temperature']:g}, top-k {b['top_k']}): prompt, then "
                 "⟦continuation⟧\n")
    for r in result["runs"]:
        for s in r.get("samples", []):
            if s["status"] == "ok":
                lines.append(f"**{r['mixer']}** sample:\n")
                lines.append(fenced(s["prompt"] + "⟦" + s["continuation"] + "⟧"))
                lines.append("held-out text:\n")
                lines.append(fenced(s["prompt"] + "⟦" + s["truth"] + "⟧"))
            else:
                lines.append(f"**{r['mixer']}**: sampling failed: {s['error']}\n")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    base = sl.out_base(args, "lm-report")
    with tempfile.TemporaryDirectory(prefix="lm-report-") as work:
        corpus = smoke_corpus(work) if args.smoke else args.corpus
        facts, prompts = corpus_facts(corpus, args.samples)
        scale = plan(args, corpus, work)
        model = ("from " + args.config) if args.config else \
            f"{args.d_model} x {args.layers} layers, head_dim {args.head_dim}, SwiGLU of FLA's size"
        result = {"benchmark": "lm_report", "machine": sl.machine(), "corpus": facts,
                  "budget": {"corpus": args.corpus if not args.smoke else "repository markdown (smoke)",
                             "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "lr": args.lr,
                             "model": model, "eval_examples": args.eval_examples, "threads_per_run": args.threads,
                             "temperature": args.temperature, "top_k": args.top_k,
                             "budget_seconds": args.budget_seconds or None, "rate_scale": scale, "smoke": args.smoke},
                  "runs": []}

        def save(rows):
            result["runs"] = rows
            sl.write_json(base + ".json", result)
            sl.write_atomic(base + ".md", markdown(result))

        runs = make_runs(args, corpus, prompts, work, scale)
        sl.log_plan(runs, args.jobs)
        if args.dry_run:
            return 0
        rows = sl.Sweep(args, runs, work, save).run()
        save(rows)
    sl.log(f"wrote {base}.json, {base}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
