"""What the training sweeps of bench/train share: running many `gdn train` processes in
parallel with progress and ETA on stderr, recording every run (failed ones included),
machine and commit, atomic result files, markdown tables and SVG plots.

Standard library only: the sweeps run on machines that have python3 and a gdn binary.
"""
import argparse
import concurrent.futures
import datetime
import html
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLORS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf"]


def add_common_args(p, default_out="bench/results"):
    p.add_argument("--gdn", default="build/gdn", help="gdn binary (default: build/gdn)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="gdn processes in parallel, one thread each (default: nproc = %(default)s)")
    p.add_argument("--out", default=default_out, help="output directory (default: %(default)s)")
    p.add_argument("--time-limit", type=float, default=0,
                   help="wall seconds for the whole sweep (0: none); runs still going then are "
                        "stopped and recorded as timeout, runs not started as skipped")
    p.add_argument("--run-timeout", type=float, default=0, help="wall seconds per run (0: none)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny setting for the test suite (seconds on 2 cores)")
    p.add_argument("--tag", default="", help="extra word in the output file names")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, budget, predicted time) and stop")


def machine():
    """CPU model and core count from /proc/cpuinfo, date, gdn commit."""
    model, cores = platform.processor() or platform.machine(), os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
        if names:
            model = names[0].strip()
        cores = len(re.findall(r"^processor\s*:", text, re.M)) or cores
    except OSError:
        pass
    return {"cpu": model, "cores": cores, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "gdn_commit": git_commit()}


def git_commit():
    try:
        out = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def out_base(args, name):
    """<out>/<date>-<name>[-tag][-smoke]: the prefix of every result file of a sweep."""
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    parts = [day, name] + ([args.tag] if args.tag else []) + (["smoke"] if args.smoke else [])
    os.makedirs(args.out, exist_ok=True)
    return os.path.join(args.out, "-".join(parts))


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=1) + "\n")


class Run:
    """One gdn invocation. `config` (a dict) is written to a file passed as --config;
    `cost` orders the runs (largest first) and drives the ETA; `meta` goes into the row."""

    def __init__(self, name, argv, config=None, cost=1.0, meta=None, after=None):
        self.name, self.argv, self.config, self.cost = name, list(argv), config, float(cost)
        self.meta = dict(meta or {})
        self.after = after  # optional callable(row) -> None run after success (e.g. more gdn calls)


def last_json_line(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


class Sweep:
    """Runs `Run`s with `jobs` processes at a time, largest cost first. Every run ends as a
    row with status ok / failed / timeout / skipped; `on_update(rows)` is called after each
    finished run so that results are on disk even if the sweep is interrupted."""

    def __init__(self, args, runs, workdir, on_update=None):
        self.args, self.workdir, self.on_update = args, workdir, on_update
        self.runs = sorted(runs, key=lambda r: -r.cost)
        self.rows = {}
        self.lock = threading.Lock()
        self.procs = {}
        self.start = None
        self.deadline = None

    def _row(self, run, **kw):
        row = dict(run.meta)
        row["run"] = run.name
        row.update(kw)
        return row

    def _exec(self, argv, timeout):
        """Runs argv; returns (rc, stdout, stderr, seconds, timed_out)."""
        t0 = time.time()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace")
        key = id(proc)
        with self.lock:
            self.procs[key] = proc
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            timed_out = True
        finally:
            with self.lock:
                self.procs.pop(key, None)
        return proc.returncode, out, err, time.time() - t0, timed_out

    def run_eval(self, argv):
        """Runs one `gdn eval ... --json` follow-up of a run (within the sweep's time limit);
        returns (fields, result): fields hold seconds and status (ok / failed / timeout, with the
        error's last line), result the JSON line or None."""
        rc, out, err, secs, timed_out = self._exec(argv, self._timeout())
        res = last_json_line(out) if rc == 0 and not timed_out else None
        fields = {"seconds": round(secs, 2), "status": "ok" if res is not None else "timeout" if timed_out else "failed"}
        if res is None:
            fields["error"] = (err.strip().splitlines() or ["(no output)"])[-1]
        return fields, res

    def _timeout(self):
        limits = []
        if self.args.run_timeout > 0:
            limits.append(self.args.run_timeout)
        if self.deadline is not None:
            limits.append(self.deadline - time.time())
        return max(1.0, min(limits)) if limits else None

    def _one(self, run):
        if self.deadline is not None and time.time() >= self.deadline - 1:
            return self._row(run, status="skipped", error="time limit reached before the run started")
        argv = [self.args.gdn] + run.argv
        if run.config is not None:
            path = os.path.join(self.workdir, run.name + ".json")
            with open(path, "w") as f:
                json.dump(run.config, f)
            argv += ["--config", path]
        try:
            rc, out, err, secs, timed_out = self._exec(argv, self._timeout())
        except OSError as e:
            return self._row(run, status="failed", error=f"cannot start {argv[0]}: {e}", seconds=0.0)
        res = last_json_line(out)
        if timed_out:
            return self._row(run, status="timeout", seconds=round(secs, 2), error="stopped at the time limit",
                             command=" ".join(argv))
        if rc != 0 or res is None:
            tail = (err.strip().splitlines() or ["(no output)"])[-3:]
            tail = [re.sub(r".*\r", "", line) for line in tail]  # progress bars redraw with \r
            return self._row(run, status="failed", rc=rc, seconds=round(secs, 2), error=" | ".join(tail),
                             command=" ".join(argv))
        row = self._row(run, status="ok", seconds=round(secs, 2))
        row.update(res)
        if run.after:
            try:
                run.after(row, self)
            except Exception as e:  # the follow-up's failure is part of the row, not a crash
                row["status"] = "failed"
                row["error"] = f"after training: {e}"
        return row

    def run(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.start = time.time()
        if self.args.time_limit > 0:
            self.deadline = self.start + self.args.time_limit
        total_cost = sum(r.cost for r in self.runs) or 1.0
        done_cost, n = 0.0, len(self.runs)
        jobs = max(1, self.args.jobs)
        log(f"{n} runs, {jobs} at a time, largest first")
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(self._one, r): r for r in self.runs}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    run = futures[fut]
                    row = fut.result()
                    self.rows[run.name] = row
                    done_cost += run.cost
                    elapsed = time.time() - self.start
                    eta = elapsed * (total_cost - done_cost) / done_cost if done_cost > 0 else 0
                    log(f"[{len(self.rows)}/{n}] {run.name}: {describe(row)}; elapsed {fmt_s(elapsed)}, "
                        f"ETA {fmt_s(eta)}")
                    if self.on_update:
                        self.on_update(self.ordered_rows())
            except KeyboardInterrupt:
                log("interrupted: stopping the runs in flight")
                for proc in list(self.procs.values()):
                    proc.kill()
                for r in self.runs:
                    self.rows.setdefault(r.name, self._row(r, status="skipped", error="interrupted"))
                if self.on_update:
                    self.on_update(self.ordered_rows())
                raise
        return self.ordered_rows()

    def ordered_rows(self):
        return [self.rows[r.name] for r in self.runs if r.name in self.rows]


def describe(row):
    if row["status"] != "ok":
        return f"{row['status'].upper()} ({row.get('error', '')[:200]})"
    parts = []
    if "eval_accuracy" in row:
        parts.append(f"accuracy {100 * row['eval_accuracy']:.1f}%")
    if "eval_loss" in row:
        parts.append(f"loss {row['eval_loss']:.3f}")
    parts.append(f"{row.get('seconds', 0):.0f} s")
    return ", ".join(parts)


def fmt_s(s):
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def markdown_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def pct(x):
    return "—" if x is None else f"{100 * x:.1f}"


def esc(s):
    return html.escape(str(s), quote=True)


def svg_doc(width, height, body, title=None):
    head = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n")
    if title:
        head += f"<text x='{width / 2:.0f}' y='20' text-anchor='middle' font-size='15'>{esc(title)}</text>\n"
    return head + "".join(body) + "</svg>\n"


def svg_line_panel(x0, y0, w, h, title, xs, series, xlabel, colors, y_max=1.0):
    """One panel: categorical x (xs), y in [0, y_max] shown in %, `series` = [(name, [y or None])]."""
    s = [f"<text x='{x0 + w / 2:.0f}' y='{y0 - 8}' text-anchor='middle' font-size='13'>{esc(title)}</text>\n"]
    for t in range(5):
        y = y0 + h - h * t / 4
        s.append(f"<line x1='{x0}' y1='{y:.1f}' x2='{x0 + w}' y2='{y:.1f}' stroke='#ddd'/>"
                 f"<text x='{x0 - 6}' y='{y + 4:.1f}' text-anchor='end'>{int(100 * y_max * t / 4)}%</text>\n")
    s.append(f"<rect x='{x0}' y='{y0}' width='{w}' height='{h}' fill='none' stroke='#999'/>\n")

    def px(i):
        return x0 + (w * (i + 0.5) / len(xs) if len(xs) > 1 else w / 2)

    for i, x in enumerate(xs):
        s.append(f"<text x='{px(i):.1f}' y='{y0 + h + 16}' text-anchor='middle'>{esc(x)}</text>\n")
    s.append(f"<text x='{x0 + w / 2:.0f}' y='{y0 + h + 32}' text-anchor='middle'>{esc(xlabel)}</text>\n")
    for k, (name, ys) in enumerate(series):
        c = colors[k % len(colors)]
        dx = 2.5 * (k - (len(series) - 1) / 2)  # a small shift so that equal values stay visible
        pts = [(px(i) + dx, y0 + h - h * min(y, y_max) / y_max) for i, y in enumerate(ys) if y is not None]
        if len(pts) > 1:
            s.append(f"<polyline fill='none' stroke-width='2' stroke='{c}' points='"
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + "'/>\n")
        for a, b in pts:
            s.append(f"<circle cx='{a:.1f}' cy='{b:.1f}' r='3.5' fill='{c}'><title>{esc(name)}</title></circle>\n")
    return s


def svg_legend(x0, y0, names, colors, dy=16):
    s = []
    for k, name in enumerate(names):
        c = colors[k % len(colors)]
        y = y0 + dy * k
        s.append(f"<line x1='{x0}' y1='{y - 4}' x2='{x0 + 18}' y2='{y - 4}' stroke='{c}' stroke-width='3'/>"
                 f"<text x='{x0 + 24}' y='{y}'>{esc(name)}</text>\n")
    return s


def heat_color(v):
    """0 -> red, 0.5 -> yellow, 1 -> green (the usual needle-in-a-haystack scale); None -> grey."""
    if v is None:
        return "#cccccc"
    v = min(1.0, max(0.0, v))
    if v < 0.5:
        r, g = 230, int(60 + 170 * v / 0.5)
    else:
        r, g = int(230 - 180 * (v - 0.5) / 0.5), 200
    return f"rgb({r},{g},60)"


def svg_heatmap(x0, y0, cell_w, cell_h, title, cols, rows, value, xlabel, ylabel):
    """Grid of cells: cols (x labels), rows (y labels), value(row, col) in [0, 1] or None."""
    w, h = cell_w * len(cols), cell_h * len(rows)
    s = [f"<text x='{x0 + w / 2:.0f}' y='{y0 - 8}' text-anchor='middle' font-size='13'>{esc(title)}</text>\n"]
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            v = value(r, c)
            x, y = x0 + j * cell_w, y0 + i * cell_h
            s.append(f"<rect x='{x}' y='{y}' width='{cell_w}' height='{cell_h}' fill='{heat_color(v)}' "
                     f"stroke='white'/>")
            label = "fail" if v is None else f"{100 * v:.0f}"
            s.append(f"<text x='{x + cell_w / 2:.1f}' y='{y + cell_h / 2 + 4:.1f}' text-anchor='middle' "
                     f"font-size='10'>{label}</text>\n")
        s.append(f"<text x='{x0 - 5}' y='{y0 + i * cell_h + cell_h / 2 + 4:.1f}' text-anchor='end'>{esc(r)}</text>\n")
    for j, c in enumerate(cols):
        s.append(f"<text x='{x0 + j * cell_w + cell_w / 2:.1f}' y='{y0 + h + 14}' "
                 f"text-anchor='middle'>{esc(c)}</text>\n")
    s.append(f"<text x='{x0 + w / 2:.0f}' y='{y0 + h + 30}' text-anchor='middle'>{esc(xlabel)}</text>\n")
    s.append(f"<text x='{x0 - 48}' y='{y0 + h / 2:.0f}' text-anchor='middle' "
             f"transform='rotate(-90 {x0 - 48} {y0 + h / 2:.0f})'>{esc(ylabel)}</text>\n")
    return s


def parse_list(text, kind=str):
    return [kind(x) for x in text.split(",") if x.strip()]


def help_formatter():
    return argparse.RawDescriptionHelpFormatter


def calibrate(gdn, config, workdir):
    """tokens/s of one short single-threaded `gdn train` of `config` on this machine (None if it
    fails): the sweeps scale their reference rates by it to plan a budget."""
    path = os.path.join(workdir, "calibrate.json")
    with open(path, "w") as f:
        json.dump(config, f)
    try:
        out = subprocess.run([gdn, "train", "--json", "--threads", "1", "--config", path], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    res = last_json_line(out.stdout) if out.returncode == 0 else None
    return res.get("tokens_per_s") if res else None


def fit_budget(budget_s, jobs, unit_costs, fixed_costs, packing=0.85, longest=0.9):
    """Largest x such that runs costing fixed + x * unit seconds each fit budget_s on `jobs`
    processes: the total within jobs x budget_s x packing, and the longest run within
    budget_s x longest. Returns 0 when even x = 0 does not fit."""
    total_unit, total_fixed = sum(unit_costs), sum(fixed_costs)
    x_pack = (budget_s * jobs * packing - total_fixed) / total_unit
    x_long = min((budget_s * longest - f) / u for u, f in zip(unit_costs, fixed_costs))
    return max(0.0, min(x_pack, x_long))


def fail(msg):
    log(f"error: {msg}")
    sys.exit(2)


def log_plan(runs, jobs):
    """Predicted work: the sum of the runs' costs (seconds on one core) and a wall estimate."""
    total = sum(r.cost for r in runs)
    longest = max((r.cost for r in runs), default=0)
    log(f"plan: {len(runs)} runs, ~{fmt_s(total)} of single-core work, ~{fmt_s(max(total / max(1, jobs), longest))} "
        f"wall on {jobs} jobs (longest run ~{fmt_s(longest)})")
