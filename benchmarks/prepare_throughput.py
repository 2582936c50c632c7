"""``moa prepare`` throughput and memory vs the tokenizer's raw batch encode (issue 11 targets).

Corpus: a deterministic folder of 8 ``.jsonl`` files (FineWeb-like records ``{"id", "text"}``)
of ``--size-mb`` MB, generated in a temporary folder from paragraphs of the running
interpreter's standard library, shuffled and regrouped into 1-8 KB documents with a fixed
seed. A second corpus of ``--small-mb`` MB (a prefix of the same stream) gives the
second memory point.

Tokenizer: byte-level BPE ``bpe:8192`` trained once (untimed) with moa's own trainer on the
first 20 MB of the corpus and saved as ``tokenizer.json``; every measurement then uses it
as ``hf:PATH``, so training time is not part of any throughput.

Measured (wall clock, ``time.perf_counter``):

* raw: the same tokenizer's ``encode_batch`` on the same documents in this one process,
  single-threaded (``TOKENIZERS_PARALLELISM=false``: one core, like one prepare worker),
  in batches of about 1 MB. Reading and JSON-decoding the records is not timed: this is
  the pure encoder speed a pipeline can at best reach per core.
* prepare: ``python -m moa prepare jsonl:DIR --tokenizer hf:PATH --workers N`` as a
  subprocess, timed end to end (interpreter start, reading, JSON decoding, encoding,
  shard writes), for each N in ``--workers``. tokens/s = tokens in the manifest / wall.
* memory: the prepare process tree sampled every 0.2 s with psutil: the peak of the summed
  PSS (proportional set size: pages shared by forked workers counted once) and the peak
  RSS of the largest single process; plus ``ru_maxrss`` of the children from ``resource``.

Prints a table and writes ``--json`` (default ``benchmarks/results/prepare_throughput.json``)::

    python benchmarks/prepare_throughput.py                       # 300 MB and 60 MB corpora
    python benchmarks/prepare_throughput.py --size-mb 20 --small-mb 5 --workers 1   # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_FILES = 8
SEED = 0


def generate_corpus(folder: Path, size_bytes: int) -> int:
    """Write ``N_FILES`` jsonl files holding ``size_bytes`` of UTF-8 text in all; return documents."""
    from moa.data.sources import stdlib_root

    paragraphs = []
    for path in sorted(stdlib_root().glob("*.py")):
        try:
            paragraphs.extend(p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip())
        except UnicodeDecodeError:
            continue
    rng = random.Random(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    files = [open(folder / f"part_{k:02d}.jsonl", "w", encoding="utf-8") for k in range(N_FILES)]
    written, n_docs = 0, 0
    while written < size_bytes:
        target = rng.randint(1000, 8000)
        parts, length = [], 0
        while length < target:
            p = paragraphs[rng.randrange(len(paragraphs))]
            parts.append(p)
            length += len(p) + 2
        text = "\n\n".join(parts)
        files[n_docs % N_FILES].write(json.dumps({"id": n_docs, "text": text}) + "\n")
        written += len(text.encode("utf-8"))
        n_docs += 1
    for f in files:
        f.close()
    return n_docs


def iter_docs(folder: Path):
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def train_tokenizer(folder: Path, path: Path) -> None:
    from moa.data.tokenizer import train_bpe

    def sample(budget=20_000_000):
        for doc in iter_docs(folder):
            yield doc[:budget]
            budget -= min(len(doc), budget)
            if budget == 0:
                return

    train_bpe(sample(), 8192).save(str(path))


def raw_encode(folder: Path, tokenizer_path: Path) -> dict:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from moa.data.tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(str(tokenizer_path), f"hf:{tokenizer_path}")
    seconds, tokens, batch, size = 0.0, 0, [], 0
    docs = 0

    def encode(batch):
        start = time.perf_counter()
        n = sum(len(ids) for ids in tok.encode_batch(batch))
        return time.perf_counter() - start, n

    for doc in iter_docs(folder):
        batch.append(doc)
        size += len(doc)
        docs += 1
        if size >= 1 << 20:
            dt, n = encode(batch)
            seconds, tokens, batch, size = seconds + dt, tokens + n, [], 0
    if batch:
        dt, n = encode(batch)
        seconds, tokens = seconds + dt, tokens + n
    tokens += docs  # the EOS prepare appends after every document
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def run_prepare(folder: Path, tokenizer_path: Path, out: Path, workers: int) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "moa", "prepare", f"jsonl:{folder}", "--tokenizer", f"hf:{tokenizer_path}",
           "--out", str(out), "--workers", str(workers), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    root = psutil.Process(proc.pid)
    peak_pss, peak_rss = 0, 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            pss = rss = 0
            for p in tree:
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                pss += info.pss
                rss = max(rss, info.rss)
            peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"moa prepare failed ({proc.returncode}): {stderr.strip().splitlines()[-1:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    return {"workers": workers, "seconds": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "documents": sum(s["documents"] for s in manifest["splits"].values()),
            "peak_pss_tree_mb": peak_pss / 2**20, "peak_rss_largest_process_mb": peak_rss / 2**20,
            "ru_maxrss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=300, help="main corpus size (MB of UTF-8 text)")
    parser.add_argument("--small-mb", type=float, default=60, help="second corpus size, for the memory point")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--json", default="benchmarks/results/prepare_throughput.json")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    load_before = os.getloadavg()
    results = {"command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]), "python": platform.python_version(),
               "cpus": os.cpu_count(), "load_average_before": load_before, "runs": []}
    with tempfile.TemporaryDirectory(prefix="moa-prepare-bench-") as tmp:
        tmp = Path(tmp)
        corpora = {"large": (tmp / "large", args.size_mb), "small": (tmp / "small", args.small_mb)}
        for name, (folder, mb) in corpora.items():
            docs = generate_corpus(folder, int(mb * 1e6))
            results[f"{name}_corpus"] = {"mb": mb, "documents": docs,
                                         "bytes_on_disk": sum(p.stat().st_size for p in folder.iterdir())}
            print(f"{name} corpus: {mb:g} MB of text, {docs:,} documents", flush=True)
        tokenizer = tmp / "tokenizer.json"
        train_tokenizer(corpora["large"][0], tokenizer)
        raw = raw_encode(corpora["large"][0], tokenizer)
        results["raw_encode_one_process"] = raw
        print(f"raw encode_batch, 1 thread: {raw['tokens_per_s']:,.0f} tokens/s ({raw['tokens']:,} tokens)", flush=True)
        for name, count in [("large", w) for w in workers] + [("small", max(workers))]:
            run = run_prepare(corpora[name][0], tokenizer, tmp / f"out-{name}-{count}", count)
            run.update(corpus=name, ratio_to_raw=run["tokens_per_s"] / raw["tokens_per_s"])
            results["runs"].append(run)
            print(f"prepare {name:5s} --workers {count}: {run['tokens_per_s']:>10,.0f} tokens/s "
                  f"({run['ratio_to_raw']:.2f}x raw), {run['seconds']:.1f} s, peak PSS (tree) "
                  f"{run['peak_pss_tree_mb']:.0f} MB, largest process RSS {run['peak_rss_largest_process_mb']:.0f} MB",
                  flush=True)
        same = [(tmp / f"out-large-{w}") for w in workers]
        digests = [{p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.glob("*.bin")} for d in same]
        results["identical_shards_across_workers"] = all(d == digests[0] for d in digests)
    results["load_average_after"] = os.getloadavg()
    print(f"identical shards across --workers: {results['identical_shards_across_workers']}; "
          f"load average before {load_before[0]:.2f}, after {results['load_average_after'][0]:.2f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
